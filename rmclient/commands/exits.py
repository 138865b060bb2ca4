"""Exit codes of the file subcommands, the exceptions behind them, and ``guarded``, which maps one to the other."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Callable

from rmclient.errors import ConfigurationError, RMClientError

__all__ = [
    "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_CODES_HELP",
    "InputError", "Failure", "Interrupted", "guarded",
]

#: Exit codes, the same for every subcommand.
EXIT_OK = 0
EXIT_FAILURE = 1  # runtime failure: a server unreachable, samples that failed, parity over tolerance
EXIT_USAGE = 2  # usage error or bad input: wrong options, a missing file, a malformed line or field
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    runtime failure: a server unreachable or erroring, samples that failed
       (their line numbers are printed), a check that did not pass
  2    usage error or bad input: wrong options, a missing file or model,
       a line that is not a JSON object, a missing or malformed field
       (the line number and field are printed)
  130  interrupted (Ctrl-C)"""


class InputError(Exception):
    """Bad input or usage: exit code 2."""


class Failure(Exception):
    """A runtime failure: exit code 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a resumable run: the message says how to continue (exit code 130)."""


def guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a subcommand, turning the errors a user can meet into a message on stderr and an exit code."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        prog = f"rmclient {args.command}"
        try:
            return func(args)
        except InputError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ConfigurationError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Failure as exc:
            print(f"{prog}: failed: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except RMClientError as exc:  # servers unreachable or erroring, bad responses
            print(f"{prog}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt as exc:
            print(f"{prog}: interrupted" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `rmclient score ... -o - | head`
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:  # pragma: no cover
                pass
            return EXIT_FAILURE
        except OSError as exc:  # writing the output failed (disk full, permissions, ...)
            print(f"{prog}: failed: {exc}", file=sys.stderr)
            return EXIT_FAILURE

    return run
