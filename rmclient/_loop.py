"""An event loop in a daemon thread: how sync code (the sync client, the trainer hooks, a server in a
notebook) runs async code, also where a loop is already running (Jupyter, Ray actors)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import Any, Awaitable, Callable, Optional, TypeVar

T = TypeVar("T")


def blocking(method: Callable[..., Awaitable[T]], owner: str) -> Callable[..., T]:
    """The sync twin of a coroutine method, run through ``self._run`` (the owner's loop thread); its name
    without the leading underscore, shown as ``owner.name``."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> T:
        return self._run(method(self, *args, **kwargs))

    run.__name__ = method.__name__.lstrip("_")
    run.__qualname__ = f"{owner}.{run.__name__}"
    return run


class LoopThread:
    """Starts on first use; :meth:`run` blocks for a coroutine's result, :meth:`stop` ends the loop.

    ``on_cancelled``: what :meth:`run` raises when the loop was stopped under a call
    (the sync client raises :class:`~rmclient.errors.ClientClosedError`).
    """

    def __init__(self, name: str = "rmclient-loop", on_cancelled: Optional[Callable[[], BaseException]] = None) -> None:
        self.name = name
        self.on_cancelled = on_cancelled
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def started(self) -> bool:
        """Whether the loop runs (it starts on first use)."""
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
                self._thread.start()
            return self._loop

    def submit(self, coro: Awaitable[T]) -> "concurrent.futures.Future[T]":
        """Schedule ``coro`` on the loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def run(self, coro: Awaitable[T]) -> T:
        """``coro``'s result; Ctrl-C (or any error here) cancels it on the loop too."""
        future = self.submit(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # the loop was stopped under the call
            if self.on_cancelled is None:
                raise
            raise self.on_cancelled() from None
        except BaseException:
            future.cancel()
            raise

    def stop(self, grace: float = 2.0) -> None:
        """Give running tasks ``grace`` seconds, cancel the rest, stop and close the loop."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:  # calls on closed pools end by themselves: give them a moment
                await asyncio.wait(tasks, timeout=grace)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        if thread is threading.current_thread():  # a finalizer run on the loop itself: it cannot wait for itself
            loop.call_soon(loop.stop)
            with self._lock:
                self._loop = self._thread = None
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop)
            if thread is not None:
                thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        with self._lock:
            self._loop = self._thread = None
