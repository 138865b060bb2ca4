"""The scheduler: how samples become requests, across every call of a client.

Each call hands its validated samples (or pre-encoded inputs) to the
:class:`Scheduler` of its backend and awaits its own results. The scheduler
encodes them in blocks, shared between calls that use the same recipe, while
earlier requests are in flight (the first block per server small, so that
every server has work soon, unless encoding while requests are in flight runs
at under half its idle speed: then the servers share the client's CPUs, and a
first block travels with the next, so that a server has work in hand while the
rest is encoded slowly); cuts each call's samples into requests by the
same size and token rules as a lone call; and sends them as the backend has
room. Requests waiting for room merge with each other up to the request size
limit, so that 2,000 concurrent one-sample calls make a handful of requests,
not 2,000, while a lone call's requests keep their sizes.

The backend is a :class:`Sink`: :class:`RemoteSink` (an endpoint pool, with
retries, hedging and halving, :mod:`rmclient.send`) or :class:`LocalSink` (the
in-process model, one batch at a time). Each call ends with its rewards in
input order, or the failure policy: :class:`~rmclient.errors.ScoringError`
listing the failed samples with every reward obtained, or NaN for them when
``on_error="nan"``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import heapq
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from rmclient.adapters import ADAPTERS
from rmclient.adapters.base import EncodedInput

from .errors import ClientClosedError, InvalidSampleError, ScoringError, ServersUnreachable
from .pool import CallFailed, EndpointPool
from .send import Call, Chunk, RetryPolicy, send_chunk, split_by_tokens

logger = logging.getLogger(__name__)

__all__ = [
    "ON_ERROR", "Scheduler", "RemoteSink", "LocalSink", "Sink", "Call", "Chunk", "RetryPolicy",
    "score_chunks", "split_by_tokens", "apply_policy",
]

ON_ERROR = ("raise", "nan")
#: Samples encoded per step while earlier requests are in flight.
ENCODE_BLOCK = 256
#: Samples in each of the first blocks (one per server): every server gets its first request early.
FIRST_BLOCK = 64
#: Encoding this many times slower with requests in flight than without means the servers share our CPUs;
#: under the second figure, that they no longer do (apart, so that one noisy block does not flip it).
STARVED = (2.0, 1.25)
#: Requests per server a call is cut into when it has fewer samples than ``batch_size`` allows.
REQUESTS_PER_ENDPOINT = 2
#: Requests encoded ahead of those sent, per request the backend can take at once.
READY_AHEAD = 4


class Sink:
    """Where requests go: what a request may hold, how many run at once, and how one is scored."""

    #: How many first blocks are small (one per server).
    servers: int = 1

    def capacity(self) -> int:
        """Requests that may run at once."""
        raise NotImplementedError

    def request_size(self, n: int) -> int:
        """Samples per request for a call of ``n`` samples."""
        raise NotImplementedError

    def merge_limits(self) -> Tuple[int, Optional[int]]:
        """``(samples, tokens)`` a request merged from waiting ones may hold."""
        raise NotImplementedError

    def prepare(self, chunk: Chunk, size: int) -> List[Chunk]:
        """``chunk`` (one block of a call) as requests of at most ``size``; samples that cannot be sent
        travel as ``failures``."""
        raise NotImplementedError

    async def send(self, chunk: Chunk, policy: RetryPolicy, deadline_at: float) -> None:
        """Score ``chunk``, delivering to its calls."""
        raise NotImplementedError

    def closed_error(self, call: Call) -> Optional[BaseException]:
        """What a call that failed everywhere raises instead of :class:`ScoringError` (``None``: that)."""
        return None


class RemoteSink(Sink):
    """An endpoint pool: requests in the form its servers take (ids, or text giving back the ids)."""

    def __init__(
        self, pool: EndpointPool, *, batch_size: Optional[int] = None, max_tokens_per_request: Optional[int] = None,
        as_text: Optional[Callable[[Sequence[Sequence[int]], bool], Tuple[List[str], List[bool]]]] = None,
        output: str = "reward",
    ) -> None:
        self.pool = pool
        self.output = output
        self.batch_size = batch_size
        self.max_tokens_per_request = max_tokens_per_request
        self.as_text = as_text
        self.servers = len(pool.endpoints)

    def capacity(self) -> int:
        return max(1, sum(e.limit for e in self.pool.endpoints if e.disabled is None))

    def request_size(self, n: int) -> int:
        """Up to ``batch_size`` (default 256), fewer when that keeps every server busy: engines batch
        concurrent requests themselves and pay per request, so the aim is ``REQUESTS_PER_ENDPOINT``
        requests per server (one computing, one queued), not one per slot."""
        slots = sum(min(e.limit, REQUESTS_PER_ENDPOINT) for e in self.pool.endpoints)
        return min(self.batch_size or 256, max(8, -(-n // slots)))

    def merge_limits(self) -> Tuple[int, Optional[int]]:
        return self.batch_size or 256, self.max_tokens_per_request

    def prepare(self, chunk: Chunk, size: int) -> List[Chunk]:
        pool = self.pool
        failures: Dict[int, str] = {}
        keep: List[int] = []
        limit, shortest = pool.max_model_len, ADAPTERS[pool.server_type].min_input_len
        for k, x in enumerate(chunk.inputs):
            if not isinstance(x, str) and limit and len(x) > limit:
                failures[k] = f"{len(x)} token ids exceed the server's limit of {limit}; encode after connecting"
            elif not isinstance(x, str) and len(x) < shortest:
                failures[k] = f"{len(x)} token id(s): {pool.server_type} needs at least {shortest}"
            else:
                keep.append(k)
        inputs: List[EncodedInput] = [chunk.inputs[k] for k in keep]
        if pool.inputs != "ids" and self.as_text is not None:
            todo = [j for j, x in enumerate(inputs) if not isinstance(x, str)]
            texts, exact = self.as_text([inputs[j] for j in todo], pool.inputs == "full_text")  # type: ignore[misc]
            for j, text, ok in zip(todo, texts, exact):
                inputs[j] = text
                if not ok:
                    failures[keep[j]] = (
                        f"{pool.server_type} at this version takes text only, and this sample's token ids "
                        "do not come back from their text (a cut inside the text, or ids not from this tokenizer)"
                    )
        sendable = [(k, x) for k, x in zip(keep, inputs) if k not in failures]
        out: List[Chunk] = []
        if failures:
            out.append(Chunk([], [], {chunk.indices[k]: why for k, why in failures.items()}))
        for lo in range(0, len(sendable), size):
            part = sendable[lo : lo + size]
            request = Chunk([chunk.indices[k] for k, _ in part], [x for _, x in part],
                            owners=[chunk.owners[k] for k, _ in part])
            out.extend(split_by_tokens(request, self.max_tokens_per_request))
        return out

    async def send(self, chunk: Chunk, policy: RetryPolicy, deadline_at: float) -> None:
        await send_chunk(self.pool, chunk, policy, deadline_at, self.output)

    def closed_error(self, call: Call) -> Optional[BaseException]:
        if self.pool.unreachable() and all(r is None for r in call.results):
            return ServersUnreachable([e.url for e in self.pool.endpoints], dict(call.failures), list(call.results))
        return None


class LocalSink(Sink):
    """The in-process model: one request at a time on the model's thread; calls waiting meanwhile
    share the next, and each gets its rewards as the forward pass that computed them ends.

    ``score(ids, on_batch, names)`` is the backend's blocking scorer (``on_batch(positions, values)``
    after each forward pass; ``names``: the samples' indices, for its error messages), run on
    ``executor`` (the backend's one model thread; ``None``: the loop's default executor).
    ``max_rows``: what a request merged from waiting ones may hold (the backend plans its passes over
    the whole request: equal lengths share a pass, so more rows make fewer passes).
    """

    def __init__(self, score: Callable[..., List[float]], *, max_rows: int = 1024,
                 executor: Optional[concurrent.futures.Executor] = None) -> None:
        self.score = score
        self.max_rows = max_rows
        self.executor = executor

    def capacity(self) -> int:
        return 1

    def request_size(self, n: int) -> int:
        return max(n, 1)

    def merge_limits(self) -> Tuple[int, Optional[int]]:
        return self.max_rows, None

    def prepare(self, chunk: Chunk, size: int) -> List[Chunk]:
        return [chunk]

    async def send(self, chunk: Chunk, policy: RetryPolicy, deadline_at: float) -> None:
        calls = chunk.calls()
        if not calls:
            return
        loop = asyncio.get_running_loop()

        def scored(positions: List[int], values: List[float]) -> None:  # on the model thread, after each pass
            part = Chunk([chunk.indices[k] for k in positions], [], owners=[chunk.owners[k] for k in positions])
            loop.call_soon_threadsafe(part.deliver, values)

        names = chunk.indices if len(calls) == 1 else None
        try:
            await loop.run_in_executor(self.executor, self.score, chunk.inputs, scored, names)
        except Exception as exc:  # noqa: BLE001 - handled per call below
            if len(calls) > 1:  # one call's bad input must not fail the others: the rest of each call alone
                for call in calls:
                    await self.send(chunk.part_of(call), policy, deadline_at)
            elif isinstance(exc, InvalidSampleError):  # its index is the position in this request
                index = chunk.indices[exc.index] if 0 <= exc.index < len(chunk.indices) else exc.index
                calls[0].abort(InvalidSampleError(index, exc.field, exc.reason))
            else:  # the caller gets it as it is
                calls[0].abort(exc)


@dataclass
class _Block:
    """Samples of one call to encode (``recipe`` set) or already encoded, from position ``lo``."""

    call: Call
    lo: int
    items: Sequence[Any]
    size: int
    recipe: Any = None


class EncodeSpeed:
    """Seconds per token of the encoding, smoothed, with no request in flight and with some; and whether the
    second is ``STARVED`` times the first: the servers (a CPU engine on this host, the in-process model) share
    our CPUs, and encoding while they compute is slow and slows them."""

    def __init__(self) -> None:
        self.idle: Optional[float] = None
        self.busy: Optional[float] = None
        self.starved = False

    def record(self, tokens: int, seconds: float, busy: bool) -> None:
        if tokens < 1000:
            return  # too little to time
        rate = seconds / tokens
        old = self.busy if busy else self.idle
        rate = rate if old is None else 0.5 * (old + rate)
        if busy:
            self.busy = rate
        else:
            self.idle = rate
        if self.idle is not None and self.busy is not None:
            self.starved = self.busy > STARVED[1 if self.starved else 0] * self.idle


class Scheduler:
    """One backend's queue: every call's samples go through it; see the module docstring.

    Use from one event loop; :meth:`aclose` when done.
    """

    def __init__(self, sink: Sink, *, policy: RetryPolicy = RetryPolicy(), on_error: str = "raise") -> None:
        self.sink = sink
        self.policy = policy
        self.on_error = on_error
        self.stats = {"calls": 0, "samples": 0, "requests": 0, "merged_requests": 0}
        self._intake: Deque[_Block] = collections.deque()
        self._ready: Deque[Chunk] = collections.deque()
        self._in_flight = 0
        self._changed = asyncio.Event()
        self._tasks: Set["asyncio.Task[None]"] = set()
        self._loops: List[Optional["asyncio.Task[None]"]] = [None, None]  # encode, send
        self._closed = False
        self._deadlines: List[Tuple[float, int, Call]] = []
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = math.inf
        self.speed = EncodeSpeed()

    # -- calls -------------------------------------------------------------------------

    async def score(
        self, items: Sequence[Any], *, recipe: Any = None, deadline_at: Optional[float] = None,
        on_scored: Optional[Callable[[int], None]] = None,
    ) -> Tuple[List[float], List[Optional[Tuple[int, bool]]]]:
        """The rewards of ``items`` in order (validated samples encoded with ``recipe``, or encoded
        inputs when ``recipe`` is ``None``) and each one's ``(num_tokens, truncated)``."""
        call = self._submit(items, recipe, deadline_at, on_scored, stream=False)
        try:
            await self._wait(call)
        finally:
            call.finished = True
        return self._outcome(call), call.meta

    async def stream(
        self, items: Sequence[Any], *, recipe: Any = None, deadline_at: Optional[float] = None,
    ) -> AsyncIterator[Tuple[int, float]]:
        """``(index, reward)`` as each request completes (NaN for failures with ``on_error="nan"``);
        then the failure policy for the samples that failed."""
        call = self._submit(items, recipe, deadline_at, None, stream=True)
        assert call.events is not None
        try:
            for _ in range(call.n):
                left = call.deadline_at - time.monotonic()
                try:
                    i = await (call.events.get() if math.isinf(left) else asyncio.wait_for(call.events.get(), left))
                except asyncio.TimeoutError:
                    break
                if i < 0:  # aborted
                    break
                if call.results[i] is not None:
                    yield i, call.results[i]  # type: ignore[misc]
                elif self.on_error == "nan":
                    yield i, math.nan
        finally:
            call.finished = True
        self._outcome(call)  # raises for failures and errors

    async def score_chunks(
        self, chunks: AsyncIterator[Chunk], n: int, *, deadline_at: Optional[float] = None,
        on_scored: Optional[Callable[[int], None]] = None,
    ) -> List[float]:
        """Score ``n`` samples arriving as ready-made ``chunks`` (one request each unless merged)."""
        call = self._new_call(n, deadline_at, on_scored, False)
        try:
            async for chunk in chunks:
                chunk.owners = [call] * len(chunk.indices)
                self._add_ready(chunk, call)
                if call.error is not None:
                    break
            await self._wait(call)
        finally:
            call.finished = True
        return self._outcome(call)

    def _new_call(self, n: int, deadline_at: Optional[float], on_scored: Any, stream: bool) -> Call:
        if self._closed:
            raise ClientClosedError({}, [])
        if deadline_at is None:
            deadline = self.policy.deadline
            deadline_at = time.monotonic() + (deadline if deadline is not None else math.inf)
        self._start()
        self.stats["calls"] += 1
        self.stats["samples"] += n
        return Call(n, deadline_at=deadline_at, retries=self.policy.budget or 0, on_scored=on_scored, stream=stream)

    def _submit(self, items: Sequence[Any], recipe: Any, deadline_at: Optional[float], on_scored: Any,
                stream: bool) -> Call:
        """Queue a call's blocks: the first ``servers`` small, the rest large."""
        call = self._new_call(len(items), deadline_at, on_scored, stream)
        size = self.sink.request_size(len(items))
        lo = blocks = 0
        while lo < len(items):
            step = min(FIRST_BLOCK, size) if blocks < self.sink.servers else max(ENCODE_BLOCK, size)
            self._intake.append(_Block(call, lo, items[lo : lo + step], size, recipe))
            lo += step
            blocks += 1
        self._changed.set()
        return call

    async def _wait(self, call: Call) -> None:
        """Until ``call`` is settled, aborted, or past its deadline (one timer for all the calls)."""
        if not math.isinf(call.deadline_at):
            heapq.heappush(self._deadlines, (call.deadline_at, id(call), call))
            if self._timer is None or call.deadline_at < self._timer_at:
                self._arm()
        await call.done.wait()

    def _arm(self) -> None:
        while self._deadlines and self._deadlines[0][2].done.is_set():
            heapq.heappop(self._deadlines)  # settled before its deadline
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadlines:
            self._timer_at = self._deadlines[0][0]
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0.0, self._timer_at - time.monotonic()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            heapq.heappop(self._deadlines)[2].done.set()  # what is left unscored fails with the deadline
        self._arm()

    def _outcome(self, call: Call) -> List[float]:
        error = call.error
        if isinstance(error, CallFailed):
            error = error.error
        if isinstance(error, ClientClosedError):
            raise _closed(call) from None
        if error is not None:
            if isinstance(call.error, CallFailed):
                error.rewards = list(call.results)  # type: ignore[attr-defined]
            raise error
        for i, r in enumerate(call.results):
            if r is None and i not in call.failures:
                call.failures[i] = f"not scored within the deadline of {self.policy.deadline} s"
        if call.failures and self.on_error != "nan":
            unreachable = self.sink.closed_error(call)
            if unreachable is not None:
                raise unreachable
        return apply_policy(call.results, call.failures, self.on_error)

    # -- the two loops: encode, send ---------------------------------------------------------

    def _start(self) -> None:
        """(Re)start the loops that are not running: each ends when it has nothing left to do, so that
        an idle scheduler holds no task (a loop closed under it warns of none)."""
        self._loops = [
            task if task is not None and not task.done() else asyncio.ensure_future(run())
            for task, run in zip(self._loops, (self._encode_loop, self._send_loop))
        ]

    def _add_ready(self, chunk: Chunk, call: Call) -> None:
        for i, why in chunk.failures.items():
            call.fail(i, why)
        if chunk.failures:
            call.report(len(chunk.failures))
        if chunk.inputs:
            if self.policy.budget is None:  # default budget: the request's own retries
                call.retries_left += max(1, self.policy.attempts - 1)
            self._ready.append(chunk)
            self._start()
        self._changed.set()

    async def _changed_wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def _encode_loop(self) -> None:
        while self._intake:
            while len(self._ready) >= READY_AHEAD * self.sink.capacity():
                await self._changed_wait()
            if not self._intake:
                break
            batch = [self._intake.popleft()]
            total = len(batch[0].items)
            # starved, a first block travels with the next: the server computes on it while the rest is encoded
            limit = max(ENCODE_BLOCK, total) + (FIRST_BLOCK if self.speed.starved else 0)
            while (self._intake and batch[0].recipe is not None and self._intake[0].recipe is batch[0].recipe
                   and total + len(self._intake[0].items) <= limit):
                batch.append(self._intake.popleft())
                total += len(batch[-1].items)
            batch = [b for b in batch if not b.call.finished and b.call.error is None]
            if not batch:
                continue
            try:
                await self._encode(batch, total)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the calls get it; the loop goes on for the others
                for b in batch:
                    b.call.abort(exc)

    async def _encode(self, batch: List[_Block], total: int) -> None:
        recipe = batch[0].recipe
        if recipe is None:
            inputs = [list(b.items) for b in batch]
        else:
            merged = [s for b in batch for s in b.items]
            # a call that fits in one request is encoded on the loop; more goes to a thread, off the loop
            whole = len(batch) == 1 and batch[0].call.n <= batch[0].size
            busy, sent, started = self._in_flight > 0, self.stats["requests"], time.perf_counter()
            encoded = (recipe.encode_valid(merged) if whole or total <= FIRST_BLOCK
                       else await asyncio.to_thread(recipe.encode_valid, merged))
            busy = busy or self.stats["requests"] != sent  # requests were in flight during some of it
            self.speed.record(sum(len(e.ids) for e in encoded), time.perf_counter() - started, busy)
            inputs, pos = [], 0
            for b in batch:
                part = encoded[pos : pos + len(b.items)]
                pos += len(b.items)
                b.call.meta[b.lo : b.lo + len(part)] = [(len(e.ids), e.truncated) for e in part]
                inputs.append([e.ids for e in part])
        for b, ids in zip(batch, inputs):
            block = Chunk(list(range(b.lo, b.lo + len(ids))), ids, owners=[b.call] * len(ids))
            for chunk in self.sink.prepare(block, b.size):
                self._add_ready(chunk, b.call)

    async def _send_loop(self) -> None:
        while self._ready:
            while self._in_flight >= self.sink.capacity():
                await self._changed_wait()
            if not self._ready:
                break
            chunk = self._ready.popleft()
            if not chunk.calls():
                continue  # every caller has stopped waiting
            free = self.sink.capacity() - self._in_flight
            if len(self._ready) >= free:  # more requests than room: the waiting ones travel together
                chunk = self._merge(chunk)
            self._changed.set()  # room ahead: the encoder may go on
            self._in_flight += 1
            self.stats["requests"] += 1
            task = asyncio.ensure_future(self._run(chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _merge(self, chunk: Chunk) -> Chunk:
        rows, tokens = self.sink.merge_limits()
        text = bool(chunk.inputs) and isinstance(chunk.inputs[0], str)
        work, merged = chunk.work, False
        while self._ready:
            other = self._ready[0]
            if not other.calls():
                self._ready.popleft()
                continue
            if (len(chunk.inputs) + len(other.inputs) > rows or (isinstance(other.inputs[0], str) != text)
                    or (tokens and work + other.work > tokens)):
                break
            self._ready.popleft()
            chunk = Chunk(chunk.indices + other.indices, chunk.inputs + other.inputs,
                          owners=chunk.owners + other.owners)
            work += other.work
            merged = True
        if merged:
            self.stats["merged_requests"] += 1
        return chunk

    async def _run(self, chunk: Chunk) -> None:
        deadline_at = max((c.deadline_at for c in chunk.calls()), default=time.monotonic())
        try:
            await self.sink.send(chunk, self.policy, deadline_at)
        except CallFailed as failed:
            for call in chunk.calls():
                call.abort(failed)
        except asyncio.CancelledError:
            for call in chunk.calls():
                call.abort(ClientClosedError({}, []))
            raise
        except Exception as exc:  # noqa: BLE001 - not a server's fault (a bug, a bad configuration): surfaces as itself
            for call in chunk.calls():
                call.abort(exc)
        finally:
            self._in_flight -= 1
            self._changed.set()

    async def aclose(self) -> None:
        """Stop the loops and fail what waits with :class:`ClientClosedError`."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for block in self._intake:
            block.call.abort(ClientClosedError({}, []))
        for chunk in self._ready:
            for call in chunk.calls():
                call.abort(ClientClosedError({}, []))
        self._intake.clear()
        self._ready.clear()
        tasks = [t for t in self._loops if t is not None] + list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


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
    """Score ``n`` samples arriving as ``chunks`` on ``pool`` through a scheduler of their own.

    Rewards in input order, or the failure policy (see :class:`Scheduler`). A call no
    endpoint can serve (all answer 401/403/404/405) stops at once with that
    :class:`~rmclient.errors.ServerError` (``.rewards``: what was scored); a closed pool
    gives :class:`ClientClosedError`.
    """
    scheduler = Scheduler(RemoteSink(pool), policy=policy, on_error=on_error)
    try:
        return await scheduler.score_chunks(chunks, n, deadline_at=deadline_at, on_scored=on_scored)
    finally:
        await scheduler.aclose()


def _closed(call: Call) -> ClientClosedError:
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

