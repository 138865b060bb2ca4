"""The one HTTP layer every engine adapter uses (httpx, async).

A :class:`Transport` sends one request and classifies what went wrong; the
decision to retry, and where, is the dispatcher's (``rmclient.dispatch``).
Nothing is ever returned in place of a response: failures raise
:class:`~rmclient.errors.ServerError` or :class:`~rmclient.errors.ResponseError`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import httpx

from rmclient.adapters.base import Request

from .errors import ConfigurationError, ResponseError, ServerError


def normalize_url(address: str) -> str:
    """``host:port`` or a URL -> ``http://host:port`` without a trailing slash."""
    address = address.strip().rstrip("/")
    return address if "://" in address else f"http://{address}"


def _server_message(response: httpx.Response) -> str:
    text = response.text
    try:
        body = response.json()
    except ValueError:
        return text[:500]
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if key in body:
                value = body[key]
                return (value.get("message", str(value)) if isinstance(value, dict) else str(value))[:500]
    return text[:500]


class Transport:
    """Pooled connections to one server.

    ``connect_timeout`` bounds opening a connection, ``read_timeout`` waiting
    for an answer; ``api_key`` is sent as a bearer token.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_connections: int = 64,
    ) -> None:
        self.base_url = normalize_url(address)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def send(self, request: Request, *, timeout: Optional[float] = None) -> Any:
        """Send ``request`` once and return its JSON body.

        Raises :class:`ServerError` (``retryable`` for connection errors,
        timeouts, 5xx and 429) or :class:`ResponseError` for a 2xx body that is
        not JSON.
        """
        endpoint = f"{request.method} {self.base_url}{request.path}"
        kwargs: Any = {"json": request.json} if request.json is not None else {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = await self._client.request(request.method, request.path, **kwargs)
        except httpx.UnsupportedProtocol as exc:
            raise ConfigurationError(f"{endpoint}: not an http(s) address ({exc})") from exc
        except httpx.TimeoutException as exc:
            raise ServerError(endpoint, None, f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ServerError(endpoint, None, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise ServerError(endpoint, response.status_code, _server_message(response))
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            raise ResponseError(endpoint, "the body is not JSON", response.text[:300]) from None

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()
