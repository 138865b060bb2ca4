"""The exceptions of rmclient. Every error the library raises is an ``RMClientError``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .jsonsafe import shown


class RMClientError(Exception):
    """Base class of every error raised by rmclient."""


class InvalidSampleError(RMClientError, ValueError):
    """A sample is malformed. ``index`` is its position in the input, ``field`` the key at fault."""

    def __init__(self, index: int, field: str, message: str) -> None:
        self.index = index
        self.field = field
        self.reason = message
        super().__init__(f"sample {index}, field {field!r}: {message}")


class ProtocolError(RMClientError, ValueError):
    """A request body does not have its wire protocol's shape (a server half refuses it).

    ``field`` names the key at fault, ``index`` the input (``None``: the whole body).
    """

    def __init__(self, message: str, *, field: Optional[str] = None, index: Optional[int] = None) -> None:
        self.field = field
        self.index = index
        super().__init__(message)


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
        retry_after: Optional[float] = None,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.server_message = message
        self.attempts = attempts
        #: Seconds the server asked to wait before the next attempt (a 429's or 503's ``Retry-After``).
        self.retry_after = retry_after
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
        super().__init__(f"{endpoint}: {message}; body: {shown(body)}")


class ScoringError(RMClientError):
    """Some samples could not be scored.

    ``failures`` maps each failed sample index to the reason; ``rewards`` keeps
    every reward that was obtained, in input order, with ``None`` at the failed
    indices (so nothing already scored is lost).
    """

    def __init__(self, failures: Dict[int, str], rewards: List[Optional[float]]) -> None:
        self.failures = dict(sorted(failures.items()))
        self.rewards = rewards
        by_reason: Dict[str, List[int]] = {}
        for i, why in self.failures.items():
            by_reason.setdefault(why, []).append(i)
        parts = [f"{_samples(indices)}: {why}" for why, indices in list(by_reason.items())[:3]]
        left = sum(len(indices) for _, indices in list(by_reason.items())[3:])
        if left:
            parts.append(f"and {left} more for {len(by_reason) - 3} other reason(s)")
        RMClientError.__init__(self, f"{len(self.failures)} of {len(rewards)} samples failed: " + "; ".join(parts))


def _samples(indices: List[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"samples 0-2, 5"``; at most a few ranges, then a count."""
    ranges: List[List[int]] = []
    for i in indices:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges[:4])
    if len(ranges) > 4:
        text += f" and {sum(b - a + 1 for a, b in ranges[4:])} more"
    return ("sample " if len(indices) == 1 else "samples ") + text


class ServersUnreachable(ScoringError, ServerError):
    """No server of the call answered at all (connections refused or timed out): a
    :class:`ScoringError` (``failures``, ``rewards``) that is also a :class:`ServerError`
    naming every address."""

    def __init__(self, addresses: List[str], failures: Dict[int, str], rewards: List[Optional[float]]) -> None:
        ScoringError.__init__(self, failures, rewards)
        last = next(reversed(self.failures.values()), "no answer")
        self.endpoint = ", ".join(addresses)
        self.status = None
        self.server_message = last
        self.attempts = 1
        self.args = (
            f"no server could be reached ({self.endpoint}): {len(self.failures)} of {len(rewards)} samples "
            f"not scored; the last error: {last}",
        )


class ClientClosedError(ScoringError):
    """The client was closed while a call was scoring; ``rewards`` keeps what was scored before."""


class LaunchError(RMClientError):
    """An engine process could not be started or did not become ready."""
