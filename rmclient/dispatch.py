"""The one scoring core behind the sync and async clients: chunks, routing, retries, failure policy.

Chunks of encoded samples go to the endpoint pool concurrently. A chunk that
fails with something that may pass (connection error, timeout, 5xx, 429, a
malformed body) is retried with exponential backoff and jitter on another
endpoint, within the per-chunk attempts, the per-call retry budget and the
per-call deadline. A chunk rejected outright (4xx, or a body that stays bad) is
split in halves to isolate the samples at fault. A reward is only ever stored
at the index of the sample it was computed for; a sample that cannot be scored
is reported by index with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Dict, List, Optional, Sequence

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from rmclient.adapters.base import EncodedInput

from .errors import ResponseError, ScoringError, ServerError
from .pool import Endpoint, EndpointPool

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "nan")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries.

    ``attempts`` per chunk; ``budget`` retries in all for the call (``None``:
    as many as there are chunks, at least ``attempts``); ``deadline`` seconds
    for the whole call; backoff from ``initial`` up to ``max_wait`` seconds.
    """

    attempts: int = 5
    deadline: Optional[float] = 600.0
    budget: Optional[int] = None
    initial: float = 0.2
    max_wait: float = 10.0


@dataclass
class Chunk:
    """Encoded samples bound for one request, with their positions in the call's input.

    ``failures``: samples of the same block that cannot be sent at all (index -> why).
    """

    indices: List[int]
    inputs: List[EncodedInput]
    failures: Dict[int, str] = field(default_factory=dict)


@dataclass
class _Call:
    results: List[Optional[float]]
    failures: Dict[int, str] = field(default_factory=dict)
    retries_left: int = 0


def split_by_tokens(chunk: Chunk, max_tokens: Optional[int]) -> List[Chunk]:
    """Split ``chunk`` so that each part's total length stays within ``max_tokens`` (one sample at least)."""
    if not max_tokens:
        return [chunk]
    parts: List[Chunk] = []
    current = Chunk([], [])
    total = 0
    for i, x in zip(chunk.indices, chunk.inputs):
        if current.inputs and total + len(x) > max_tokens:
            parts.append(current)
            current, total = Chunk([], []), 0
        current.indices.append(i)
        current.inputs.append(x)
        total += len(x)
    if current.inputs:
        parts.append(current)
    return parts


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ServerError):
        return exc.retryable
    return isinstance(exc, ResponseError)


async def _attempt(pool: EndpointPool, chunk: Chunk, avoid: List[Endpoint]) -> List[float]:
    work = sum(len(x) for x in chunk.inputs)  # tokens (characters for text): what the server has to do
    endpoint = await pool.acquire(avoid, work)
    error: Optional[BaseException] = None
    try:
        adapter = await pool.adapter_for(endpoint)
        request = adapter.build_request(chunk.inputs)
        body = await endpoint.transport.send(request)
        return adapter.parse_response(body, len(chunk.inputs), endpoint.url + request.path)
    except BaseException as exc:  # noqa: BLE001 - cancellation too: the slot must come back
        error = exc
        avoid.append(endpoint)
        raise
    finally:
        await pool.release(endpoint, error, work)


async def _send(pool: EndpointPool, chunk: Chunk, call: _Call, policy: RetryPolicy, deadline_at: float) -> None:
    avoid: List[Endpoint] = []

    def may_retry(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None or not _retryable(exc) or call.retries_left <= 0:
            return False
        if state.attempt_number >= policy.attempts or time.monotonic() >= deadline_at:
            return False  # the chunk is out of attempts or time: leave the budget to the others
        call.retries_left -= 1
        logger.warning("retrying %d samples (first index %d): %s", len(chunk.inputs), chunk.indices[0], exc)
        return True

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(max(0.0, deadline_at - time.monotonic())),
        wait=wait_exponential(multiplier=policy.initial, max=policy.max_wait) + wait_random(0, policy.initial),
        retry=may_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                values = await _attempt(pool, chunk, avoid)
    except (ServerError, ResponseError) as exc:
        if len(chunk.inputs) > 1 and not (isinstance(exc, ServerError) and exc.status is None):
            half = len(chunk.inputs) // 2  # isolate the samples at fault
            await asyncio.gather(
                _send(pool, Chunk(chunk.indices[:half], chunk.inputs[:half]), call, policy, deadline_at),
                _send(pool, Chunk(chunk.indices[half:], chunk.inputs[half:]), call, policy, deadline_at),
            )
            return
        for i in chunk.indices:
            call.failures[i] = str(exc)
        return
    for i, v in zip(chunk.indices, values):
        call.results[i] = v


async def score_chunks(
    pool: EndpointPool,
    chunks: AsyncIterator[Chunk],
    n: int,
    *,
    policy: RetryPolicy = RetryPolicy(),
    on_error: str = "raise",
) -> List[float]:
    """Score ``n`` samples arriving as ``chunks`` (encoded while earlier ones are in flight).

    Returns the rewards in input order. Samples that could not be scored raise
    :class:`ScoringError` (with every reward obtained on it), or become NaN when
    ``on_error="nan"``.
    """
    deadline_at = time.monotonic() + (policy.deadline if policy.deadline is not None else math.inf)
    call = _Call(results=[None] * n, retries_left=policy.budget or 0)
    tasks: List["asyncio.Task[None]"] = []
    try:
        async for chunk in chunks:
            call.failures.update(chunk.failures)
            if not chunk.inputs:
                continue
            if policy.budget is None:  # default budget: the chunk's own retries
                call.retries_left += max(1, policy.attempts - 1)
            tasks.append(asyncio.ensure_future(_send(pool, chunk, call, policy, deadline_at)))
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline_at - time.monotonic()))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            for task in done:  # not a server's fault (a bad configuration, a bug): say so, not "deadline"
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    for i, r in enumerate(call.results):
        if r is None and i not in call.failures:
            call.failures[i] = f"not scored within the deadline of {policy.deadline} s"
    return apply_policy(call.results, call.failures, on_error)


def apply_policy(results: Sequence[Optional[float]], failures: Dict[int, str], on_error: str) -> List[float]:
    """The rewards, or :class:`ScoringError`; NaN for failures only when ``on_error="nan"``."""
    if not failures:
        return [r for r in results if r is not None]
    if on_error == "nan":
        logger.warning("%d of %d samples failed; returning NaN for them as asked", len(failures), len(results))
        return [math.nan if r is None else r for r in results]
    raise ScoringError(failures, list(results))
