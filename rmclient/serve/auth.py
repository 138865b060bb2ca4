"""Who may use the server: the bearer API key (compared in constant time) and what counts as loopback."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Optional

from .errors import RequestError

#: Routes that need no API key (liveness probes, the supervisor's readiness check).
OPEN_ROUTES = frozenset({"/health", "/metrics"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_key(authorization: Optional[str], api_key: str) -> None:
    """Accept ``Authorization: Bearer <api_key>``; anything else is a 401 :class:`RequestError`."""
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise RequestError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", kind="unauthorized")
