"""``progress=`` of a scoring call: a tqdm bar on stderr, a callback ``(scored, total)``, or nothing."""

from __future__ import annotations

import threading
from typing import Callable, Union

#: ``progress=``: ``True`` for a bar on stderr (tqdm), or ``callback(scored, total)`` after each request.
Progress = Union[bool, Callable[[int, int], None], None]


class Tracker:
    """A call's progress: a tqdm bar, a callback, or nothing. ``update`` may come from a worker thread."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.total, self.done = total, 0
        self.callback = progress if callable(progress) else None
        self.bar = None
        self._lock = threading.Lock()
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="scoring", unit="samples", dynamic_ncols=True)

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            if self.callback is not None:
                self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
