"""The one HTTP layer every engine adapter uses: httpx with tenacity retries.

Retried: connection errors, timeouts, 5xx and 429 (the server asking to try
later). Never retried: any other 4xx (the request itself is wrong). Giving up
raises :class:`~rmclient.errors.ServerError`; nothing is ever returned in place
of a response.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Optional

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from rmclient.adapters.base import Request

from .errors import ResponseError, ServerError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` in all, within ``deadline`` seconds, backoff from ``initial`` to ``max_wait``."""

    attempts: int = 5
    deadline: Optional[float] = 600.0
    initial: float = 0.2
    max_wait: float = 10.0


class _Retryable(Exception):
    def __init__(self, error: ServerError) -> None:
        self.error = error


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
    """A reusable connection to one server.

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
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.base_url = normalize_url(address)
        self.retry = retry
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )

    def request(self, request: Request, *, retry: Optional[RetryPolicy] = None) -> Any:
        """Send ``request`` and return its JSON body, retrying what can be retried."""
        policy = retry or self.retry
        stop = stop_after_attempt(policy.attempts)
        if policy.deadline is not None:
            stop = stop | stop_after_delay(policy.deadline)
        retrying = Retrying(
            stop=stop,
            wait=wait_exponential_jitter(multiplier=policy.initial, max=policy.max_wait, jitter=policy.initial),
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            before_sleep=lambda state: logger.warning(
                "retrying %s %s (attempt %d): %s",
                request.method,
                self.base_url + request.path,
                state.attempt_number,
                state.outcome.exception() if state.outcome else "",
            ),
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    return self._once(request)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            error = last.error if isinstance(last, _Retryable) else None
            if error is None:  # pragma: no cover - tenacity only retries _Retryable
                raise
            raise ServerError(error.endpoint, error.status, error.server_message, attempts=attempts) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, request: Request) -> Any:
        endpoint = f"{request.method} {self.base_url}{request.path}"
        try:
            response = self._client.request(request.method, request.path, json=request.json)
        except httpx.TimeoutException as exc:
            raise _Retryable(ServerError(endpoint, None, f"timed out ({type(exc).__name__})")) from exc
        except httpx.TransportError as exc:
            raise _Retryable(ServerError(endpoint, None, f"{type(exc).__name__}: {exc}")) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(ServerError(endpoint, response.status_code, _server_message(response)))
        if response.status_code >= 400:
            raise ServerError(endpoint, response.status_code, _server_message(response))
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            raise ResponseError(endpoint, "the body is not JSON", response.text[:300]) from None

    def get(self, path: str, *, retry: Optional[RetryPolicy] = None) -> Any:
        """GET ``path`` and return its JSON body."""
        return self.request(Request("GET", path), retry=retry)

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

