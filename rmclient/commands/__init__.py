"""The file-oriented subcommands of ``rmclient``: score, eval, best-of-n, parity.

Each module exposes ``register(subparsers)``, which adds its subcommand and sets
``func`` on the parsed namespace. What they share is in small modules: ``exits``
(exit codes, ``guarded``), ``backend`` (``--backend``, the client), ``reading`` and
``writing`` (JSONL in and out, ``--resume``), ``progress``, ``scoring``, ``stream``
(a file through the model) and ``parsers`` (help layout); ``common`` re-exports them.
"""

from __future__ import annotations

import argparse

from . import best_of_n, evaluate, parity, score

__all__ = ["register_all"]


def register_all(sub: "argparse._SubParsersAction") -> None:
    """Add score, eval, best-of-n and parity to ``rmclient``'s subparsers."""
    for module in (score, evaluate, best_of_n, parity):
        module.register(sub)
