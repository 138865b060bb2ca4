"""Logging for the ``rmclient`` command and ``python -m rmclient.serve``: one timestamped format.

The library itself only logs (its ``rmclient`` logger has a ``NullHandler``); an application
configures logging as it wishes. ``RMCLIENT_LOG_LEVEL`` sets the level when no option does.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENV = "RMCLIENT_LOG_LEVEL"
LEVELS = ("debug", "info", "warning", "error", "critical")


def level_of(name: Optional[str], default: str = "warning") -> int:
    """The numeric level of ``name`` (or ``$RMCLIENT_LOG_LEVEL``, or ``default``); ``ValueError`` if unknown."""
    text = (name or os.environ.get(ENV) or default).strip().lower()
    if text not in LEVELS:
        raise ValueError(f"unknown log level {text!r}; use one of {', '.join(LEVELS)}")
    return getattr(logging, text.upper())


def configure(level: int) -> None:
    """The root handler at ``level`` with :data:`FORMAT`, and no transformers progress bars."""
    logging.basicConfig(level=level, format=FORMAT)
    logging.getLogger().setLevel(level)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
