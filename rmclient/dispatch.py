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
from typing import AsyncIterator, Callable, Dict, Iterable, List, Optional, Sequence

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from rmclient.adapters.base import EncodedInput

from .errors import ClientClosedError, ResponseError, RMClientError, ScoringError, ServerError, ServersUnreachable
from .pool import CallFailed, Endpoint, EndpointPool

#: How often an attempt without latency data yet looks again whether it should be hedged.
HEDGE_POLL = 0.25

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "nan")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries.

    ``attempts`` per chunk; ``budget`` retries in all for the call (``None``:
    as many as there are chunks, at least ``attempts``); ``deadline`` seconds
    for the whole call, discovery included, every attempt capped by the time
    left; backoff from ``initial`` up to ``max_wait`` seconds.
    """

    attempts: int = 5
    deadline: Optional[float] = 600.0
    budget: Optional[int] = None
    initial: float = 0.2
    max_wait: float = 10.0
    #: Hedge a request outstanding ``hedge_after`` times longer than the pool's recent latency for
    #: its size (``None``: never), at least ``hedge_min_delay`` s, for at most ``hedge_fraction``
    #: of the requests (and 2).
    hedge_after: Optional[float] = 4.0
    hedge_min_delay: float = 0.25
    hedge_fraction: float = 0.05
    #: An answer may weigh 8 MiB plus this much per token (or character) sent; more is not read.
    response_bytes_per_token: int = 256

    def max_response_bytes(self, work: int) -> int:
        """The largest answer read for a request of ``work`` tokens (per-token scores included)."""
        return 8 * 2**20 + self.response_bytes_per_token * max(work, 1)


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
    #: Told how many samples were settled (scored or failed) as each request ends.
    on_scored: Optional[Callable[[int], None]] = None

    def settled(self, n: int) -> None:
        if self.on_scored is not None and n:
            self.on_scored(n)


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


#: 4xx a misconfigured client or endpoint gets whatever the samples: no halving, the call stops
#: when no endpoint is left (the hint says what to check).
CONFIG_STATUSES = {
    401: "check the API key (api_key= or RMCLIENT_API_KEY)",
    403: "check the API key (api_key= or RMCLIENT_API_KEY)",
    404: "check server_type and the address: this is not the route of a {engine} server",
    405: "check server_type and the address: this is not the route of a {engine} server",
}
#: Answers the samples themselves may cause: the chunk is halved until the samples at fault are
#: isolated (5xx too: lmdeploy answers 500 to a one-token or over-long input).
SAMPLE_STATUSES = {400, 413, 422}


def _retryable(exc: BaseException, pool: Optional[EndpointPool] = None) -> bool:
    """Whether another attempt may pass: a passing fault, or a misconfigured endpoint with others left."""
    if isinstance(exc, ServerError):
        if exc.status in CONFIG_STATUSES:
            return pool is not None and pool.usable()
        return exc.retryable
    return isinstance(exc, ResponseError)


def _halvable(exc: BaseException) -> bool:
    """Whether the samples may be at fault: worth halving the chunk to find them."""
    if isinstance(exc, ServerError):
        return exc.status is not None and (exc.status in SAMPLE_STATUSES or exc.status >= 500)
    return True


async def _request(
    pool: EndpointPool, endpoint: Endpoint, chunk: Chunk, work: int, policy: RetryPolicy, deadline_at: float
) -> List[float]:
    """One request on ``endpoint`` (already acquired): capped by the time left, its body by its size."""
    error: Optional[BaseException] = None
    started = time.monotonic()
    try:
        left = deadline_at - started
        if left <= 0:
            raise ServerError(endpoint.url, None, "timed out (no time left before the call's deadline)")
        adapter = await pool.adapter_for(endpoint)
        request = adapter.build_request(chunk.inputs)
        where = endpoint.url + request.path
        body = await endpoint.transport.send(
            request, timeout=min(endpoint.read_timeout, left), max_bytes=policy.max_response_bytes(work)
        )
        try:
            values = adapter.parse_response(body, len(chunk.inputs), where)
        except RMClientError:
            raise
        except Exception as exc:  # an answer shaped so oddly that parsing it broke: still only a bad answer
            raise ResponseError(where, f"unreadable answer ({type(exc).__name__}: {exc})", body) from None
        pool.record_latency(time.monotonic() - started, work)
        return values
    except BaseException as exc:  # noqa: BLE001 - cancellation too: the slot must come back
        error = exc
        if isinstance(exc, ServerError) and exc.status in CONFIG_STATUSES:
            hint = CONFIG_STATUSES[exc.status].format(engine=pool.server_type)
            error = ServerError(exc.endpoint, exc.status, f"{exc.server_message} ({hint})")
            pool.disable(endpoint, error)
            raise error from None
        if pool.closed and not isinstance(exc, asyncio.CancelledError):
            raise CallFailed(ClientClosedError({}, [])) from None
        raise
    finally:
        await pool.release(endpoint, error, work)


async def _attempt(
    pool: EndpointPool, chunk: Chunk, avoid: List[Endpoint], policy: RetryPolicy, deadline_at: float
) -> List[float]:
    """Send ``chunk`` to the least loaded endpoint; when it is much slower than the pool's recent
    latency for its size, send a duplicate to another endpoint and take whichever answers first."""
    work = sum(len(x) for x in chunk.inputs)  # tokens (characters for text): what the server has to do
    first = await pool.acquire(avoid, work)
    tasks = {asyncio.ensure_future(_request(pool, first, chunk, work, policy, deadline_at)): first}
    started, hedged = time.monotonic(), False
    errors: List[BaseException] = []
    try:
        while tasks:
            delay = None if hedged else pool.hedge_delay(work, policy)
            wait = None if hedged else (HEDGE_POLL if delay is None else max(0.0, started + delay - time.monotonic()))
            done, _ = await asyncio.wait(set(tasks), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                endpoint = tasks.pop(task)
                exc = task.exception()
                if exc is None:
                    for loser in tasks.values():
                        pool.note_slow(loser)
                    return task.result()
                avoid.append(endpoint)
                if not _retryable(exc, pool) or not tasks:
                    raise exc
                errors.append(exc)
            if not done and delay is not None and time.monotonic() >= started + delay:
                second = pool.try_hedge(first, avoid + list(tasks.values()), work, policy)
                if second is not None:
                    hedged = True
                    logger.warning(
                        "hedging %d samples: no answer from %s after %.2f s (expected within %.2f s); also sent to %s",
                        len(chunk.inputs), first.url, time.monotonic() - started, delay, second.url,
                    )
                    tasks[asyncio.ensure_future(_request(pool, second, chunk, work, policy, deadline_at))] = second
        raise errors[0]
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _send(pool: EndpointPool, chunk: Chunk, call: _Call, policy: RetryPolicy, deadline_at: float) -> None:
    avoid: List[Endpoint] = []

    def may_retry(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None or not _retryable(exc, pool) or call.retries_left <= 0:
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
                values = await _attempt(pool, chunk, avoid, policy, deadline_at)
    except (ServerError, ResponseError) as exc:
        if isinstance(exc, ServerError) and exc.status in CONFIG_STATUSES and not pool.usable():
            raise CallFailed(exc) from None
        if len(chunk.inputs) > 1 and _halvable(exc):
            half = len(chunk.inputs) // 2  # isolate the samples at fault
            await asyncio.gather(
                _send(pool, Chunk(chunk.indices[:half], chunk.inputs[:half]), call, policy, deadline_at),
                _send(pool, Chunk(chunk.indices[half:], chunk.inputs[half:]), call, policy, deadline_at),
            )
            return
        for i in chunk.indices:
            call.failures[i] = str(exc)
        call.settled(len(chunk.indices))
        return
    for i, v in zip(chunk.indices, values):
        call.results[i] = v
    call.settled(len(chunk.indices))


async def score_chunks(
    pool: EndpointPool,
    chunks: AsyncIterator[Chunk],
    n: int,
    *,
    policy: RetryPolicy = RetryPolicy(),
    on_error: str = "raise",
    deadline_at: Optional[float] = None,
    on_scored: Optional[Callable[[int], None]] = None,
) -> List[float]:
    """Score ``n`` samples arriving as ``chunks`` (encoded while earlier ones are in flight).

    Returns the rewards in input order. Samples that could not be scored raise
    :class:`ScoringError` (with every reward obtained on it), or become NaN when
    ``on_error="nan"``. ``on_scored(n)``: ``n`` more samples settled. ``deadline_at`` (``time.monotonic()``): when the call started
    earlier (discovery), its deadline; default ``policy.deadline`` from now. A call no
    endpoint can serve (all answer 401/403/404/405) stops at once with that
    :class:`ServerError` (``.rewards``: what was scored); a closed client gives
    :class:`ClientClosedError`.
    """
    if deadline_at is None:
        deadline_at = time.monotonic() + (policy.deadline if policy.deadline is not None else math.inf)
    call = _Call(results=[None] * n, retries_left=policy.budget or 0, on_scored=on_scored)
    tasks: List["asyncio.Task[None]"] = []
    try:
        async for chunk in chunks:
            call.failures.update(chunk.failures)
            call.settled(len(chunk.failures))
            _raise_first_error(tasks)
            if not chunk.inputs:
                continue
            if policy.budget is None:  # default budget: the chunk's own retries
                call.retries_left += max(1, policy.attempts - 1)
            tasks.append(asyncio.ensure_future(_send(pool, chunk, call, policy, deadline_at)))
        pending = set(tasks)
        while pending and time.monotonic() < deadline_at:
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, deadline_at - time.monotonic()), return_when=asyncio.FIRST_EXCEPTION
            )
            _raise_first_error(done)
    except CallFailed as failed:
        error = failed.error
        if isinstance(error, ClientClosedError):
            raise _closed(call) from None
        error.rewards = list(call.results)  # type: ignore[attr-defined]
        raise error from None
    except asyncio.CancelledError:
        if pool.closed:
            raise _closed(call) from None
        raise
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            except asyncio.CancelledError:
                if not pool.closed:  # closing: let the ClientClosedError on its way out through
                    raise
    for i, r in enumerate(call.results):
        if r is None and i not in call.failures:
            call.failures[i] = f"not scored within the deadline of {policy.deadline} s"
    if call.failures and on_error != "nan" and pool.unreachable() and all(r is None for r in call.results):
        raise ServersUnreachable([e.url for e in pool.endpoints], call.failures, list(call.results))
    return apply_policy(call.results, call.failures, on_error)


def _raise_first_error(tasks: Iterable["asyncio.Task[None]"]) -> None:
    """Re-raise what a finished chunk raised: not a server's fault (a bug, a bad configuration, a
    call that cannot succeed), so it surfaces as itself, not as a deadline."""
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _closed(call: _Call) -> ClientClosedError:
    failures = dict(call.failures)
    for i, r in enumerate(call.results):
        if r is None:
            failures.setdefault(i, "the client was closed before this sample was scored")
    return ClientClosedError(failures, list(call.results))


def apply_policy(results: Sequence[Optional[float]], failures: Dict[int, str], on_error: str) -> List[float]:
    """The rewards, or :class:`ScoringError`; NaN for failures only when ``on_error="nan"``."""
    if not failures:
        return [r for r in results if r is not None]
    if on_error == "nan":
        logger.warning("%d of %d samples failed; returning NaN for them as asked", len(failures), len(results))
        return [math.nan if r is None else r for r in results]
    raise ScoringError(failures, list(results))
