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
    doc = (getattr(serve, "__doc__", None) or "").strip()
    parser = sub.add_parser(
        "serve", help=help_, description=doc or help_ + ".", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rmclient``."""
    from rmclient.commands import register_all

    parser = argparse.ArgumentParser(
        prog="rmclient", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    register_all(sub)

    demo = sub.add_parser("demo", help="score the POLAR README's examples and print them ranked")
    demo.add_argument("--model", default="internlm/POLAR-7B", help="model folder or hub id (default: %(default)s)")
    demo.add_argument("--server-type", default="transformers", help="transformers | sglang | vllm | lmdeploy")
    demo.add_argument("--server-address", default=None, help="host:port of the engine server")
    demo.set_defaults(func=_demo)

    from rmclient.launchers.cli import add_launch_arguments, run_launch

    launch = sub.add_parser("launch", help="start an engine with the right reward-model flags and wait until ready")
    add_launch_arguments(launch)
    launch.set_defaults(func=run_launch)

    _add_serve(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``rmclient`` command."""
    from rmclient.launchers.cli import split_engine_args

    argv = list(sys.argv[1:] if argv is None else argv)
    head, extra = split_engine_args(argv)  # `rmclient launch ... -- --engine-flag`
    parser = build_parser()
    args = parser.parse_args(head)
    if extra and args.command in _FILE_COMMANDS:
        parser.error(f"{args.command} takes no arguments after --: {' '.join(extra)}")
    if extra:
        args.extra_args = list(getattr(args, "extra_args", None) or []) + extra
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
