"""Dynamic batching: merge concurrent scoring requests into shared forward passes.

Each request hands in its token-id sequences and awaits its rewards. One
collector task takes the oldest waiting request, adds the ones queued behind
it while the merged batch stays within the token budget (``rows * longest <=
max_tokens``, the padded size, and ``rows <= max_batch_size``), and waits for
more at most ``max_wait`` seconds counted from the oldest request's arrival
(requests that queued while the model was busy are not made to wait again).
The batch runs in one worker thread (one forward at a time: the transformers
backend is not re-entrant), so the event loop never blocks on the model, and
each request gets back exactly the rewards of its own sequences.

If a merged batch fails, each of its requests is run again on its own, so a
bad request fails alone and everyone else still gets rewards. Should the
collector itself hit an unexpected error, that batch's requests fail with it
and collecting goes on: a later request never waits on a dead task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

logger = logging.getLogger(__name__)

#: ``score_fn(ids) -> rewards``: blocking, called in the worker thread.
ScoreFn = Callable[[List[List[int]]], List[float]]

__all__ = ["DynamicBatcher", "BatcherClosed"]


class BatcherClosed(RuntimeError):
    """The batcher was closed before the request was scored."""


@dataclass
class _Pending:
    ids: List[List[int]]
    future: "asyncio.Future[List[float]]"
    arrived: float
    longest: int = field(init=False)

    def __post_init__(self) -> None:
        self.longest = max((len(x) for x in self.ids), default=0)


@dataclass
class BatchStats:
    """Counters of a :class:`DynamicBatcher` (``as_dict()`` for JSON)."""

    batches: int = 0  # forward batches run (each is one call of ``score_fn``)
    requests: int = 0  # requests scored
    samples: int = 0  # sequences scored
    tokens: int = 0  # real (unpadded) tokens scored
    merged_batches: int = 0  # batches that held more than one request
    max_requests_per_batch: int = 0
    max_samples_per_batch: int = 0
    failed_requests: int = 0
    abandoned_requests: int = 0  # dropped unscored: their caller went away (a client disconnected)
    model_seconds: float = 0.0  # time spent in ``score_fn``

    def as_dict(self) -> Dict[str, Any]:
        out = dict(self.__dict__)
        out["model_seconds"] = round(self.model_seconds, 6)
        out["mean_requests_per_batch"] = round(self.requests / self.batches, 3) if self.batches else 0.0
        return out


class DynamicBatcher:
    """Merge concurrent :meth:`score` calls into batches run one at a time in a worker thread.

    Args:
        score_fn: blocking ``ids -> rewards`` (e.g. ``TransformersBackend.score``).
        max_tokens: padded-token budget of one merged batch (``rows * longest``).
        max_batch_size: most sequences in one merged batch.
        max_wait: seconds the oldest waiting request may wait for others to join it.
        executor: where ``score_fn`` runs (default: a private single-thread pool).
        on_batch: told the number of sequences of every batch run (metrics).

    A request larger than the budget runs alone (``score_fn`` splits it as it
    needs). Use from one event loop; :meth:`close` when done.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        *,
        max_tokens: int = 16384,
        max_batch_size: int = 32,
        max_wait: float = 0.005,
        executor: Optional[concurrent.futures.Executor] = None,
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> None:
        if max_tokens < 1 or max_batch_size < 1 or max_wait < 0:
            raise ValueError("max_tokens and max_batch_size must be >= 1 and max_wait >= 0")
        self.score_fn = score_fn
        self.on_batch = on_batch
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rmclient-model")
        self.stats = BatchStats()
        self._queue: "Optional[asyncio.Queue[_Pending]]" = None
        self._carry: Optional[_Pending] = None
        self._running: List[_Pending] = []
        self._task: "Optional[asyncio.Task[None]]" = None
        self._closed = False

    @property
    def queued(self) -> int:
        """Requests waiting for the model."""
        return (self._queue.qsize() if self._queue else 0) + (1 if self._carry else 0)

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():  # done: only if it died despite _collect's guard
            if self._queue is None:
                self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="rmclient-batcher")

    async def score(self, ids: Sequence[Sequence[int]]) -> List[float]:
        """The rewards of ``ids`` (in order), scored in a batch shared with concurrent callers."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        seqs = [list(x) for x in ids]
        if not seqs:
            return []
        self._ensure_started()
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        pending = _Pending(seqs, loop.create_future(), loop.time())
        self._queue.put_nowait(pending)
        return await pending.future

    # -- the collector ------------------------------------------------------------

    def _fits(self, rows: int, longest: int, item: _Pending) -> bool:
        rows += len(item.ids)
        return rows <= self.max_batch_size and rows * max(longest, item.longest) <= self.max_tokens

    async def _next(self) -> _Pending:
        assert self._queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        return await self._queue.get()

    async def _collect(self) -> None:
        while True:
            batch: List[_Pending] = []
            try:
                await self._collect_one(batch)
            except asyncio.CancelledError:
                self._running = batch  # taken off the queue: close() fails them
                raise
            except Exception as exc:  # noqa: BLE001 - never let the collector die: later requests would hang
                logger.exception("the batcher failed on a batch of %d requests; failing them and going on", len(batch))
                for p in batch:
                    if not p.future.done():
                        self._fail(p, exc)
            self._running = []

    async def _collect_one(self, batch: List[_Pending]) -> None:
        """Collect one batch into ``batch`` (so that the caller can fail it) and run it."""
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        first = await self._next()
        batch.append(first)
        rows, longest = len(first.ids), first.longest
        deadline = first.arrived + self.max_wait
        while True:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if item.future.done():  # its caller went away
                self.stats.abandoned_requests += 1
                continue
            if not self._fits(rows, longest, item):
                self._carry = item  # first in the next batch
                break
            batch.append(item)
            rows += len(item.ids)
            longest = max(longest, item.longest)
            if rows >= self.max_batch_size:
                break
        gone = [p for p in batch if p.future.done()]
        self.stats.abandoned_requests += len(gone)
        batch[:] = [p for p in batch if not p.future.done()]
        if batch:
            self._running = batch
            await self._run(batch)

    async def _run(self, batch: List[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        merged = [x for p in batch for x in p.ids]
        try:
            rewards = await self._call(loop, merged, len(batch))
        except Exception as exc:  # noqa: BLE001 - isolate the request at fault
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            logger.info("a merged batch of %d requests failed (%s); scoring them one by one", len(batch), exc)
            for p in batch:
                if p.future.done():
                    continue
                try:
                    own = await self._call(loop, p.ids, 1)
                except Exception as one_exc:  # noqa: BLE001
                    self._fail(p, one_exc)
                else:
                    self._deliver(p, own)
            return
        if len(rewards) != len(merged):
            err = RuntimeError(f"the model returned {len(rewards)} rewards for {len(merged)} sequences")
            for p in batch:
                self._fail(p, err)
            return
        pos = 0
        for p in batch:
            self._deliver(p, rewards[pos : pos + len(p.ids)])
            pos += len(p.ids)

    async def _call(self, loop: asyncio.AbstractEventLoop, seqs: List[List[int]], n_requests: int) -> List[float]:
        start = time.perf_counter()
        try:
            return await loop.run_in_executor(self._executor, self.score_fn, seqs)
        finally:
            s = self.stats
            s.model_seconds += time.perf_counter() - start
            s.batches += 1
            s.samples += len(seqs)
            s.tokens += sum(len(x) for x in seqs)
            if n_requests > 1:
                s.merged_batches += 1
            s.max_requests_per_batch = max(s.max_requests_per_batch, n_requests)
            s.max_samples_per_batch = max(s.max_samples_per_batch, len(seqs))
            if self.on_batch is not None:
                self.on_batch(len(seqs))

    def _deliver(self, p: _Pending, rewards: List[float]) -> None:
        self.stats.requests += 1
        if not p.future.done():
            p.future.set_result(list(rewards))

    def _fail(self, p: _Pending, exc: BaseException) -> None:
        self.stats.failed_requests += 1
        if not p.future.done():
            p.future.set_exception(exc)

    # -- shutdown -----------------------------------------------------------------

    async def close(self) -> None:
        """Stop collecting; requests still waiting fail with :class:`BatcherClosed`."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None
        waiting = list(self._running) + ([self._carry] if self._carry else [])
        self._carry, self._running = None, []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for p in waiting:
            if not p.future.done():
                p.future.set_exception(BatcherClosed("the server is shutting down"))
        if self._own_executor:
            self._executor.shutdown(wait=False)
