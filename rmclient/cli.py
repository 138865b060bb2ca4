"""The ``rmclient`` command line: one entry point, subcommands.

``score``, ``eval``, ``best-of-n`` and ``parity`` work on JSONL files
(``rmclient.commands``); ``demo`` scores the POLAR README's examples;
``launch`` starts an engine (``rmclient.launchers.cli``); ``serve`` runs our own
reward server (``rmclient.serve``, registered when present).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .commands.exits import guarded
from .engines import SERVER_TYPES
from .logs import LEVELS, configure, level_of


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    path, tiny, ranked = demo.rank(args.model, server_type=args.server_type, server_address=args.server_address)
    if tiny:
        print(
            f"NOTE: {args.model} could not be loaded (no hub access and not in the local cache).\n"
            f"      Scoring with a TINY RANDOM stand-in built at {path}: its scores are MEANINGLESS\n"
            "      and only show that the pipeline runs. For real rewards, run on a machine with hub\n"
            "      access, or download the model and pass its folder: rmclient demo --model /path/to/POLAR-7B\n"
        )
    print(f"model: {path}  backend: {args.server_type}")
    published = None if tiny else demo.PUBLISHED.get(args.model)
    print(f"{'rank':>4}  {'reward':>12}  output (reference: Beijing.)")
    for i, (reward, sample) in enumerate(ranked, 1):
        print(f"{i:>4}  {reward:>12.6f}  {sample['output'][0]['content']}")
    if published:
        print(f"published rewards for {args.model}: {published}")
    return 0


DESCRIPTION = """\
Score language-model outputs with reward models, in-process (transformers) or
on sglang, vLLM or lmdeploy servers, with the exact tokens the model was
trained on."""

EPILOG = """\
commands on files (JSONL, one sample per line):
  rmclient score data.jsonl -o scored.jsonl --model internlm/POLAR-7B --trust-remote-code
  rmclient eval pairs.jsonl --model /models/rm --backend vllm@127.0.0.1:8000
  rmclient best-of-n groups.jsonl -o best.jsonl --model /models/rm
  rmclient parity samples.jsonl --model /models/rm --a transformers --b sglang@127.0.0.1:30000

servers:
  rmclient launch vllm /models/rm --port 8000 -- --enforce-eager
  rmclient serve /models/rm --port 8000        # our own server over transformers, no engine needed

Run `rmclient COMMAND --help` for the options and examples of a command.

exit codes (score, eval, best-of-n, parity):
  0    success
  1    runtime failure: a server unreachable or erroring, samples that failed,
       a parity check that did not pass
  2    usage error or bad input (wrong options, a missing file or model, a
       malformed line or field: its line number and field are printed)
  130  interrupted"""

DEMO_DESCRIPTION = """\
Score the two samples of the POLAR README ("Beijing." and "Shanghai." against the
reference "Beijing.") and two more, and print them ranked. Without hub access a tiny
random stand-in model is built and said to be meaningless."""

DEMO_EPILOG = """\
examples:
  rmclient demo                                      # in-process, internlm/POLAR-7B
  rmclient demo --model /models/POLAR-7B
  rmclient demo --server-type vllm --server-address 127.0.0.1:8000

exit codes: 0 success; 1 a server unreachable or erroring; 2 a bad option or model"""

#: ``demo --server-type``: every backend of the registry (``rmclient.engines``).
SERVER_CHOICES = SERVER_TYPES

#: The file subcommands: they take no arguments after ``--`` (launch passes them to the engine).
_FILE_COMMANDS = ("score", "eval", "best-of-n", "parity")


def _add_serve(sub: "argparse._SubParsersAction") -> None:
    """``rmclient serve``, when ``rmclient.serve`` is present."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("rmclient.serve") is None:
        return
    help_ = "serve a reward model over HTTP with dynamic batching (sglang, OpenRLHF and native routes)"
    try:
        serve = importlib.import_module("rmclient.serve")
        add_arguments, run = serve.add_serve_arguments, serve.run_serve
    except Exception as exc:  # a broken or half-installed serve must not take the other commands down
        reason = f"{type(exc).__name__}: {exc}"
        stub = sub.add_parser("serve", help=help_ + " (unavailable here)", add_help=False)
        stub.add_argument("rest", nargs=argparse.REMAINDER)

        def unavailable(args: argparse.Namespace) -> int:
            print(f"rmclient serve: unavailable: {reason}", file=sys.stderr)
            return 1

        stub.set_defaults(func=unavailable)
        return
    parser = sub.add_parser(
        "serve", help=help_, description=serve.DESCRIPTION, epilog=serve.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rmclient``."""
    from rmclient.commands import register_all

    parser = argparse.ArgumentParser(
        prog="rmclient", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from rmclient import __version__

    parser.add_argument("--version", action="version", version=f"rmclient {__version__}",
                        help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level (anywhere on the line, after the command too)")
    parser.add_argument("--log-level", choices=LEVELS, default=None, type=str.lower,
                        help="debug, info, warning (default), error, critical; anywhere on the line "
                             "(default: $RMCLIENT_LOG_LEVEL or warning)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    register_all(sub)

    demo = sub.add_parser(
        "demo", help="score the POLAR README's examples and print them ranked", description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--model", default="internlm/POLAR-7B", help="model folder or hub id (default: %(default)s)")
    demo.add_argument("--server-type", default="transformers", choices=SERVER_CHOICES,
                      help="where to score: in-process (default) or a server")
    demo.add_argument("--server-address", default=None, help="host:port of the server (with --server-type)")
    demo.set_defaults(func=guarded(_demo))

    from rmclient.launchers.cli import DESCRIPTION as LAUNCH_DESCRIPTION
    from rmclient.launchers.cli import EPILOG as LAUNCH_EPILOG
    from rmclient.launchers.cli import add_launch_arguments, run_launch

    launch = sub.add_parser(
        "launch", help="start an engine with the right reward-model flags and wait until ready",
        description=LAUNCH_DESCRIPTION, epilog=LAUNCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_launch_arguments(launch)
    launch.set_defaults(func=run_launch)

    _add_serve(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``rmclient`` command."""
    from rmclient.launchers.cli import split_engine_args

    argv = list(sys.argv[1:] if argv is None else argv)
    head, extra = split_engine_args(argv)  # `rmclient launch ... -- --engine-flag`
    head, verbose, level_name = _logging_options(head)
    parser = build_parser()
    args = parser.parse_args(head)
    if extra and args.command in _FILE_COMMANDS:
        parser.error(f"{args.command} takes no arguments after --: {' '.join(extra)}")
    if extra:
        args.extra_args = list(getattr(args, "extra_args", None) or []) + extra
    explicit = level_name or ("info" if verbose else None)  # an option beats $RMCLIENT_LOG_LEVEL
    try:
        level = level_of(explicit, "info" if args.command == "serve" else "warning")
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "serve":
        args.log_level = logging.getLevelName(level).lower()
    configure(level)
    return args.func(args)


def _logging_options(argv: List[str]) -> "tuple[List[str], bool, Optional[str]]":
    """``-v``/``--verbose`` and ``--log-level L`` taken out of ``argv`` wherever they stand (before or after
    the command; ``serve``'s own ``--log-level`` is the same option)."""
    out: List[str] = []
    verbose, level = False, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-v", "--verbose"):
            verbose = True
        elif a == "--log-level" and i + 1 < len(argv):
            level = argv[i + 1]
            i += 1
        elif a.startswith("--log-level="):
            level = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, verbose, level


if __name__ == "__main__":
    sys.exit(main())
