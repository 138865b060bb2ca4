"""The file-oriented subcommands of ``rmclient``: score, eval, best-of-n, parity.

Each module exposes ``register(subparsers)``, which adds its subcommand and sets
``func`` on the parsed namespace. ``rmclient.commands.common`` holds what they
share: backend options, JSONL streaming, the progress bar and exit codes.
"""

from __future__ import annotations

import argparse

from . import best_of_n, evaluate, parity, score

__all__ = ["register_all"]


def register_all(sub: "argparse._SubParsersAction") -> None:
    """Add score, eval, best-of-n and parity to ``rmclient``'s subparsers."""
    for module in (score, evaluate, best_of_n, parity):
        module.register(sub)
