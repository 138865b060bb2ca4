"""The progress bar of the file subcommands (``--progress`` / ``--no-progress``)."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import IO, Optional

__all__ = ["add_progress_arguments", "Progress"]

def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                   help="show the progress bar on stderr even when it is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                   help="no progress bar (default: shown when stderr is a terminal)")


class Progress:
    """A progress bar on stderr (tqdm): count, percentage, rate and ETA.

    Shown when stderr is a terminal, redrawn in place at most 10 times a second; forced
    elsewhere with ``--progress`` (then redrawn every 5 s). Thread-safe: the client's
    per-request callback moves it from its own thread.
    """

    def __init__(self, total: Optional[int], *, desc: str, unit: str = "lines", enabled: Optional[bool] = None,
                 initial: int = 0, stream: Optional[IO[str]] = None) -> None:
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = tty if enabled is None else enabled
        counted = "{n_fmt}/{total_fmt} " + unit if total else "{n_fmt} " + unit
        head = "{desc}: {percentage:3.0f}% [{bar:24}] " if total else "{desc}: "
        self._bar = tqdm(
            total=total or None, initial=initial, desc=desc, unit=f" {unit}", file=self.stream,
            disable=not self.enabled, ascii=" #", mininterval=0.1 if tty else 5.0, dynamic_ncols=tty,
            bar_format=head + counted + "  {rate_fmt}  elapsed {elapsed}" + ("  ETA {remaining}" if total else ""),
        )
        self.n = initial
        self._lock = threading.Lock()

    def update(self, k: int) -> None:
        with self._lock:
            self._set(self.n + k)

    def set(self, n: int) -> None:
        """Move the count to ``n`` (never back)."""
        with self._lock:
            self._set(n)

    def _set(self, n: int) -> None:
        if n > self.n and not self._bar.disable:
            self._bar.update(n - self.n)
        self.n = max(self.n, n)

    def finish(self) -> None:
        """The input is exhausted: the count is the total (the pre-count also counted blank lines)."""
        with self._lock:
            self._bar.total = self.n
            self._bar.refresh()

    def close(self) -> None:
        with self._lock:
            self._bar.close()
