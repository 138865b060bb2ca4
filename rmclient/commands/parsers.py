"""The help layout every file subcommand uses."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["formatter", "add_subcommand"]

def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=min(100, _columns()))


def _columns() -> int:
    try:
        return max(60, os.get_terminal_size(sys.stderr.fileno()).columns - 2)
    except (OSError, ValueError, AttributeError):
        return 100


def add_subcommand(sub: "argparse._SubParsersAction", name: str, *, summary: str, description: str,
                   epilog: str) -> argparse.ArgumentParser:
    """A subcommand's parser with the layout every file subcommand uses."""
    return sub.add_parser(name, help=summary, description=description, epilog=epilog, formatter_class=formatter)
