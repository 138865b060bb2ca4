"""The exceptions of rmclient. Every error the library raises is an ``RMClientError``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class RMClientError(Exception):
    """Base class of every error raised by rmclient."""


class InvalidSampleError(RMClientError, ValueError):
    """A sample is malformed. ``index`` is its position in the input, ``field`` the key at fault."""

    def __init__(self, index: int, field: str, message: str) -> None:
        self.index = index
        self.field = field
        self.reason = message
        super().__init__(f"sample {index}, field {field!r}: {message}")


class ConfigurationError(RMClientError, ValueError):
    """The client was configured in a way that cannot work (unknown recipe, backend, ...)."""


class ServerError(RMClientError):
    """A reward server answered with an error status, or could not be reached.

    ``status`` is the HTTP status (``None`` when no response came back).
    """

    def __init__(
        self,
        endpoint: str,
        status: Optional[int],
        message: str,
        *,
        attempts: int = 1,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.server_message = message
        self.attempts = attempts
        where = f"{endpoint} answered {status}" if status is not None else f"{endpoint} failed"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{where}{tries}: {message}")

    @property
    def retryable(self) -> bool:
        """Connection errors, timeouts, 5xx and 429 may succeed later; other 4xx will not."""
        return self.status is None or self.status >= 500 or self.status == 429


class ResponseError(RMClientError):
    """A server answered 2xx but the body is not a valid reward response.

    Raised for a wrong number of results, a missing field, or a non-finite value.
    ``body`` keeps (a prefix of) what came back.
    """

    def __init__(self, endpoint: str, message: str, body: Any = None) -> None:
        self.endpoint = endpoint
        self.body = body
        shown = repr(body)
        if len(shown) > 300:
            shown = shown[:300] + "..."
        super().__init__(f"{endpoint}: {message}; body: {shown}")


class ScoringError(RMClientError):
    """Some samples could not be scored.

    ``failures`` maps each failed sample index to the reason; ``rewards`` keeps
    every reward that was obtained, in input order, with ``None`` at the failed
    indices (so nothing already scored is lost).
    """

    def __init__(self, failures: Dict[int, str], rewards: List[Optional[float]]) -> None:
        self.failures = dict(sorted(failures.items()))
        self.rewards = rewards
        shown = list(self.failures.items())[:5]
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        lines = "; ".join(f"sample {i}: {why}" for i, why in shown)
        super().__init__(f"{len(failures)} of {len(rewards)} samples failed{more}: {lines}")


class LaunchError(RMClientError):
    """An engine process could not be started or did not become ready."""
