"""The one HTTP layer every engine adapter uses (httpx, async).

A :class:`Transport` sends one request and classifies what went wrong; the
decision to retry, and where, is the dispatcher's (``rmclient.dispatch``).
Nothing is ever returned in place of a response: failures raise
:class:`~rmclient.errors.ServerError` or :class:`~rmclient.errors.ResponseError`.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
from typing import Any, Optional

import httpx

from rmclient.adapters.base import Request

from . import jsonsafe
from .errors import ConfigurationError, ResponseError, ServerError

#: The environment variable that holds the servers' API key (bearer token) when none is given:
#: read by the client, the CLI, the trainer hooks and ``rmclient serve``.
API_KEY_ENV = "RMCLIENT_API_KEY"
#: The most an answer may weigh unless the caller says otherwise (an error answer: 64 KiB).
MAX_RESPONSE_BYTES = 64 * 2**20
_MAX_ERROR_BYTES = 64 * 2**10
#: Bodies larger than this are parsed in a worker thread, off the event loop.
_PARSE_OFF_LOOP = 2**20


def normalize_url(address: str) -> str:
    """``host:port`` or a URL -> ``http://host:port`` without a trailing slash."""
    address = address.strip().rstrip("/")
    return address if "://" in address else f"http://{address}"


def _server_message(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        body = jsonsafe.loads(raw)
    except ValueError:
        return text[:500]
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if key in body:
                value = body[key]
                return (value.get("message", str(value)) if isinstance(value, dict) else str(value))[:500]
    return text[:500]


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from now; ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


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

    async def send(
        self, request: Request, *, timeout: Optional[float] = None, max_bytes: int = MAX_RESPONSE_BYTES
    ) -> Any:
        """Send ``request`` once and return its JSON body.

        ``timeout`` bounds the whole exchange (connecting, sending, every byte of the answer).
        Raises :class:`ServerError` (``retryable`` for connection errors, timeouts, 5xx and 429)
        or :class:`ResponseError` for a 2xx body that is not JSON, is nested too deep to parse,
        or is larger than ``max_bytes`` (read no further).
        """
        endpoint = f"{request.method} {self.base_url}{request.path}"
        kwargs: Any = {}
        if request.json is not None:
            kwargs["content"] = jsonsafe.dumps(request.json)
            kwargs["headers"] = {"content-type": "application/json"}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            exchange = self._exchange(request, endpoint, max_bytes, kwargs)
            status, raw, retry_after = await (exchange if timeout is None else asyncio.wait_for(exchange, timeout))
        except httpx.UnsupportedProtocol as exc:
            raise ConfigurationError(f"{endpoint}: not an http(s) address ({exc})") from exc
        except (httpx.TimeoutException, asyncio.TimeoutError) as exc:
            raise ServerError(endpoint, None, f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ServerError(endpoint, None, f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise ServerError(endpoint, status, _server_message(raw), retry_after=retry_after)
        try:
            if len(raw) > _PARSE_OFF_LOOP:
                return await asyncio.to_thread(jsonsafe.loads, raw)
            return jsonsafe.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ResponseError(endpoint, f"the body is not JSON ({exc})", raw[:300].decode("utf-8", "replace")) from None

    async def _exchange(
        self, request: Request, endpoint: str, max_bytes: int, kwargs: Any
    ) -> "tuple[int, bytes, Optional[float]]":
        """``(status, body, Retry-After seconds)``, reading at most ``max_bytes`` (64 KiB of an error answer)."""
        async with self._client.stream(request.method, request.path, **kwargs) as response:
            limit = max_bytes if response.status_code < 400 else _MAX_ERROR_BYTES
            declared = response.headers.get("content-length")
            if response.status_code < 400 and declared and declared.isdigit() and int(declared) > limit:
                raise ResponseError(endpoint, f"the answer declares {declared} bytes, over the limit of {limit}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    if response.status_code >= 400:
                        break  # enough of an error message
                    raise ResponseError(endpoint, f"the answer is over the limit of {limit} bytes; not read further")
                chunks.append(chunk)
            status = response.status_code
            retry_after = retry_after_seconds(response.headers.get("retry-after")) if status >= 400 else None
            return status, b"".join(chunks), retry_after

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()
