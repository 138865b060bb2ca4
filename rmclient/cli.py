"""The ``rmclient`` command line."""

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rmclient``."""
    parser = argparse.ArgumentParser(prog="rmclient", description="Score LM outputs with reward models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="score the POLAR README's examples and print them ranked")
    demo.add_argument("--model", default="internlm/POLAR-7B", help="model folder or hub id (default: %(default)s)")
    demo.add_argument("--server-type", default="transformers", help="transformers | sglang | vllm | lmdeploy")
    demo.add_argument("--server-address", default=None, help="host:port of the engine server")
    demo.set_defaults(func=_demo)

    from rmclient.launchers.cli import add_launch_arguments, run_launch

    launch = sub.add_parser("launch", help="start an engine with the right reward-model flags and wait until ready")
    add_launch_arguments(launch)
    launch.set_defaults(func=run_launch)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``rmclient`` command."""
    from rmclient.launchers.cli import split_engine_args

    argv = list(sys.argv[1:] if argv is None else argv)
    head, extra = split_engine_args(argv)  # `rmclient launch ... -- --engine-flag`
    args = build_parser().parse_args(head)
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
