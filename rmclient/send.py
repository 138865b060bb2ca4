"""One request's life: sent to the least loaded endpoint, hedged when slow, retried, halved to isolate bad samples.

A request that fails with something that may pass (connection error, timeout,
5xx, 429, a malformed body) is retried with exponential backoff and jitter on
another endpoint, within the per-request attempts, the per-call retry budget
and the deadline. A request rejected outright (4xx, or a body that stays bad)
is split in halves to isolate the samples at fault. A reward is only ever
stored at the index of the sample it was computed for (:class:`Call`); a
sample that cannot be scored is reported by index with the reason.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from rmclient.adapters.base import EncodedInput

from .errors import ClientClosedError, ResponseError, RMClientError, ServerError
from .pool import CallFailed, Endpoint, EndpointPool

#: How often an attempt without latency data yet looks again whether it should be hedged.
HEDGE_POLL = 0.25
#: The longest ``Retry-After`` honoured (a longer one waits this long).
MAX_RETRY_AFTER = 60.0

logger = logging.getLogger(__name__)


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

    def deadline_at(self) -> float:
        """When a call starting now must end (``time.monotonic()``; ``inf`` without a deadline)."""
        return time.monotonic() + (self.deadline if self.deadline is not None else math.inf)

    def max_response_bytes(self, work: int) -> int:
        """The largest answer read for a request of ``work`` tokens (per-token scores included)."""
        return 8 * 2**20 + self.response_bytes_per_token * max(work, 1)


class Call:
    """One caller's samples: their rewards by index, failures, progress, and (streaming) events.

    Results come from requests that may also carry other calls' samples; a call
    that has stopped waiting (``finished``) takes no more.
    """

    def __init__(
        self, n: int, *, deadline_at: float = math.inf, retries: int = 0,
        on_scored: Optional[Callable[[int], None]] = None, stream: bool = False,
    ) -> None:
        self.n = n
        self.deadline_at = deadline_at
        self.retries_left = retries
        self.on_scored = on_scored
        self.results: List[Optional[float]] = [None] * n
        self.failures: Dict[int, str] = {}
        #: ``(num_tokens, truncated)`` of each sample, once encoded.
        self.meta: List[Optional[Tuple[int, bool]]] = [None] * n
        self.error: Optional[BaseException] = None
        self.finished = False
        self.left = n
        self.done = asyncio.Event()
        self.events: "Optional[asyncio.Queue[int]]" = asyncio.Queue() if stream else None
        if n == 0:
            self.done.set()

    def _settle(self, i: int) -> None:
        self.left -= 1
        if self.events is not None:
            self.events.put_nowait(i)
        if self.left <= 0:
            self.done.set()

    def settled(self, i: int) -> bool:
        """Whether sample ``i`` has its reward or its failure."""
        return self.results[i] is not None or i in self.failures

    def deliver(self, i: int, value: float) -> None:
        if not self.finished and not self.settled(i):
            self.results[i] = value
            self._settle(i)

    def fail(self, i: int, why: str) -> None:
        if not self.finished and not self.settled(i):
            self.failures[i] = why
            self._settle(i)

    def report(self, n: int) -> None:
        """``n`` more samples settled (progress)."""
        if self.on_scored is not None and n and not self.finished:
            self.on_scored(n)

    def abort(self, error: BaseException) -> None:
        """The call cannot go on: ``error`` is raised to its caller."""
        if self.error is None and not self.finished:
            self.error = error
            self.done.set()
            if self.events is not None:
                self.events.put_nowait(-1)


@dataclass
class Chunk:
    """Encoded samples bound for one request, with their positions in their calls' inputs.

    ``failures``: samples of the same block that cannot be sent at all (index -> why).
    ``owners``: the call of each sample (set by the scheduler; a request may serve several calls).
    """

    indices: List[int]
    inputs: List[EncodedInput]
    failures: Dict[int, str] = field(default_factory=dict)
    owners: List[Call] = field(default_factory=list)

    def part(self, lo: int, hi: int) -> "Chunk":
        return Chunk(self.indices[lo:hi], self.inputs[lo:hi], owners=self.owners[lo:hi])

    def part_of(self, call: Call) -> "Chunk":
        """The samples of ``call`` that it has no reward or failure for yet."""
        keep = [k for k, c in enumerate(self.owners) if c is call and not call.settled(self.indices[k])]
        return Chunk([self.indices[k] for k in keep], [self.inputs[k] for k in keep], owners=[call] * len(keep))

    def calls(self) -> List[Call]:
        """The distinct calls still waiting for these samples."""
        return [c for c in dict.fromkeys(self.owners) if not c.finished]

    def deliver(self, values: Sequence[float]) -> None:
        for i, v, call in zip(self.indices, values, self.owners):
            call.deliver(i, v)
        self._report()

    def fail(self, why: str) -> None:
        for i, call in zip(self.indices, self.owners):
            call.fail(i, why)
        self._report()

    def _report(self) -> None:
        for call, n in collections.Counter(self.owners).items():
            call.report(n)

    @property
    def work(self) -> int:
        """Tokens (characters for text): what the server has to do."""
        return sum(len(x) for x in self.inputs)


def split_by_tokens(chunk: Chunk, max_tokens: Optional[int]) -> List[Chunk]:
    """Split ``chunk`` so that each part's total length stays within ``max_tokens`` (one sample at least)."""
    if not max_tokens:
        return [chunk]
    parts: List[Chunk] = []
    lo = total = 0
    for k, x in enumerate(chunk.inputs):
        if k > lo and total + len(x) > max_tokens:
            parts.append(chunk.part(lo, k))
            lo, total = k, 0
        total += len(x)
    if lo < len(chunk.inputs):
        parts.append(chunk.part(lo, len(chunk.inputs)))
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
    return isinstance(exc, ResponseError) and getattr(exc, "retryable", True)


def _asked_wait(exc: Optional[BaseException]) -> float:
    """Seconds a server asked to wait (``Retry-After`` of a 429 or 503), at most ``MAX_RETRY_AFTER``."""
    asked = getattr(exc, "retry_after", None)
    if not asked or getattr(exc, "status", None) not in (429, 503):
        return 0.0
    return min(float(asked), MAX_RETRY_AFTER)


def _halvable(exc: BaseException) -> bool:
    """Whether the samples may be at fault: worth halving the chunk to find them."""
    if isinstance(exc, ServerError):
        return exc.status is not None and (exc.status in SAMPLE_STATUSES or exc.status >= 500)
    return True


async def _request(
    pool: EndpointPool, endpoint: Endpoint, chunk: Chunk, work: int, policy: RetryPolicy, deadline_at: float,
    output: str,
) -> List[Any]:
    """One request on ``endpoint`` (already acquired): capped by the time left, its body by its size."""
    error: Optional[BaseException] = None
    started = time.monotonic()
    try:
        left = deadline_at - started
        if left <= 0:
            raise ServerError(endpoint.url, None, "timed out (no time left before the call's deadline)")
        adapter = await pool.adapter_for(endpoint)
        request = adapter.build_request(chunk.inputs, output)
        where = endpoint.url + request.path
        body = await endpoint.transport.send(
            request, timeout=min(endpoint.read_timeout, left), max_bytes=policy.max_response_bytes(work)
        )
        try:
            values = adapter.read(body, chunk.inputs, where, output)
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
    pool: EndpointPool, chunk: Chunk, avoid: List[Endpoint], policy: RetryPolicy, deadline_at: float, output: str
) -> List[Any]:
    """Send ``chunk`` to the least loaded endpoint; when it is much slower than the pool's recent
    latency for its size, send a duplicate to another endpoint and take whichever answers first."""
    work = chunk.work
    first = await pool.acquire(avoid, work)
    tasks = {asyncio.ensure_future(_request(pool, first, chunk, work, policy, deadline_at, output)): first}
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
                    tasks[asyncio.ensure_future(_request(pool, second, chunk, work, policy, deadline_at, output))] = second
        raise errors[0]
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def send_chunk(
    pool: EndpointPool, chunk: Chunk, policy: RetryPolicy, deadline_at: float, output: str = "reward"
) -> None:
    """Score ``chunk`` on ``pool``: its rewards (or ``output``s, see ``adapters.base.OUTPUTS``), or
    each sample's failure, go to its calls.

    Retries draw on the budget of every call in the request. :class:`CallFailed` (no
    endpoint can serve the call, or the pool closed) and unexpected errors propagate.
    """
    avoid: List[Endpoint] = []

    def may_retry(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None or not _retryable(exc, pool):
            return False
        calls = chunk.calls()
        if not calls or any(c.retries_left <= 0 for c in calls):
            return False
        if state.attempt_number >= policy.attempts or time.monotonic() + _asked_wait(exc) >= deadline_at:
            return False  # the request is out of attempts or time: leave the budget to the others
        for c in calls:
            c.retries_left -= 1
        logger.warning("retrying %d samples (first index %d): %s", len(chunk.inputs), chunk.indices[0], exc)
        return True

    backoff = wait_exponential(multiplier=policy.initial, max=policy.max_wait) + wait_random(0, policy.initial)

    def wait(state: RetryCallState) -> float:
        """The backoff, or longer when the server said how long (``Retry-After``), within the deadline."""
        exc = state.outcome.exception() if state.outcome is not None else None
        return max(0.0, min(max(backoff(state), _asked_wait(exc)), deadline_at - time.monotonic()))

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(max(0.0, deadline_at - time.monotonic())),
        wait=wait,
        retry=may_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                values = await _attempt(pool, chunk, avoid, policy, deadline_at, output)
    except (ServerError, ResponseError) as exc:
        if isinstance(exc, ServerError) and exc.status in CONFIG_STATUSES and not pool.usable():
            raise CallFailed(exc) from None
        if len(chunk.inputs) > 1 and _halvable(exc):
            half = len(chunk.inputs) // 2  # isolate the samples at fault
            await asyncio.gather(
                send_chunk(pool, chunk.part(0, half), policy, deadline_at, output),
                send_chunk(pool, chunk.part(half, len(chunk.inputs)), policy, deadline_at, output),
            )
            return
        chunk.fail(str(exc))
        return
    chunk.deliver(values)
