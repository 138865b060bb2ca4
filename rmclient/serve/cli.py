"""``rmclient serve`` on the command line: its arguments, and serving until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import List, Optional

from ..errors import RMClientError
from ..logs import ENV as LOG_LEVEL_ENV
from ..logs import LEVELS, configure, level_of
from .app import (
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_BODY_MB, DEFAULT_MAX_SAMPLES, RewardServer,
)
from ..transport import API_KEY_ENV
from .auth import is_loopback
from .deps import require_serve

logger = logging.getLogger("rmclient.serve")  # not __name__: "__main__" under python -m

DEFAULT_PORT = 8000

DESCRIPTION = """\
Serve a reward model over HTTP with transformers, no inference engine needed. Concurrent
requests are merged into shared forward passes (dynamic batching). Routes:

  POST /classify     sglang's: {"text": [...]} or {"input_ids": [[...]]} -> [{"embedding": [r]}]
  POST /get_reward   OpenRLHF's: {"query": [whole texts]} -> {"rewards": [...]}
  POST /v1/rewards   native: {"samples": [POLAR or outcome-RM samples]} -> {"rewards": [...]}
  GET  /health, /v1/models, /server_info, /metrics (Prometheus), /stats (JSON)

It binds 127.0.0.1 by default; another address needs --api-key (or RMCLIENT_API_KEY)
unless forced with --insecure. Bad requests get a 4xx naming the sample and field."""

EPILOG = """\
examples:
  rmclient serve /models/POLAR-7B --trust-remote-code --port 8000
  rmclient serve /models/rm --host 0.0.0.0 --api-key "$KEY" --max-batch-size 64
  RMCLIENT_API_KEY=secret rmclient serve /models/rm --host 0.0.0.0

exit codes: 0 stopped cleanly; 1 it could not bind; 2 a bad option or model, or an unsafe bind"""

def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``rmclient serve``'s arguments to ``parser`` (then call :func:`run_serve`)."""
    parser.add_argument("model", help="model folder or hub id")
    net = parser.add_argument_group("network and safety")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s; 0: a free port)")
    net.add_argument(
        "--api-key", default=None,
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_ENV} if set)",
    )
    net.add_argument(
        "--insecure", action="store_true",
        help="allow binding a non-loopback address without an API key (anyone who can reach it can use it)",
    )
    net.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                     help="largest request body in MiB; larger ones get 413 (default: %(default)s)")
    net.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
                     help="most inputs per request; more get 413 (default: %(default)s)")
    net.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                     help="close a connection that sends no whole request head for this many seconds "
                          "(default: %(default)s)")
    net.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                     help="seconds for a request body to arrive, then 408 (default: %(default)s)")
    model = parser.add_argument_group("model")
    model.add_argument("--served-model-name", default=None, help="name in /v1/models (default: MODEL)")
    model.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code (POLAR)")
    model.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    model.add_argument("--dtype", default=None, help="torch dtype (default: bfloat16 on CUDA, float32 on CPU)")
    model.add_argument("--max-model-len", type=int, default=None,
                       help="longest input in tokens (default: the config's max_position_embeddings)")
    enc = parser.add_argument_group("encoding of raw samples (POST /v1/rewards)")
    enc.add_argument("--recipe", choices=("polar", "chat_template"), default=None,
                     help="default: the model's own (polar for a POLAR model, else chat_template), fixed at startup")
    enc.add_argument("--system-prompt", default=None, help="system turn for the chat-template recipe")
    enc.add_argument("--steps", choices=("qwen_prm", "math_shepherd"), default=None,
                     help="a process reward model's step format (default: from the architecture)")
    enc.add_argument("--max-length", type=int, default=None, help="default: min(16384, max_model_len)")
    enc.add_argument("--max-response-length", type=int, default=4096, help="POLAR's response budget")
    enc.add_argument("--response-cut-side", choices=("right", "left"), default="right",
                     help="POLAR: over --max-response-length, right keeps the head (training), left the tail")
    bat = parser.add_argument_group("dynamic batching")
    bat.add_argument("--max-batch-size", type=int, default=32, help="sequences per forward pass (default: %(default)s)")
    bat.add_argument("--max-batch-tokens", type=int, default=16384,
                     help="padded tokens (rows x longest) per forward pass (default: %(default)s)")
    bat.add_argument("--max-wait-ms", type=float, default=5.0,
                     help="how long a request waits for others to share its forward pass (default: %(default)s)")
    bat.add_argument("--max-padding", type=float, default=None,
                     help="cut a merged batch, sorted by length, into forward passes padded by at most this "
                     "fraction (default: 0.1 on CPU, no cut on GPU)")
    parser.add_argument("--log-level", default=None, choices=LEVELS, type=str.lower,
                        help=f"the server's log level (default: ${LOG_LEVEL_ENV} or info)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. Returns the exit code (2 for an unsafe or invalid configuration)."""
    from ..extras import MissingDependency

    try:
        require_serve()
    except MissingDependency as exc:
        print(f"rmclient serve: error: {exc}", file=sys.stderr)
        return 2

    level = level_of(args.log_level, "info")
    for name in ("rmclient", "aiohttp.access"):
        logging.getLogger(name).setLevel(level)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and not api_key and not args.insecure:
        logger.error(
            "refusing to bind %s without an API key: anyone who can reach it could use the model. "
            "Pass --api-key (or set %s), bind 127.0.0.1, or force it with --insecure.",
            args.host, API_KEY_ENV,
        )
        return 2
    if not is_loopback(args.host) and not api_key:
        logger.warning("serving on %s with NO API key (--insecure)", args.host)
    try:
        server = RewardServer(
            args.model,
            served_model_name=args.served_model_name,
            api_key=api_key,
            trust_remote_code=args.trust_remote_code,
            device=args.device,
            dtype=args.dtype,
            recipe=args.recipe,
            system_prompt=args.system_prompt,
            steps=args.steps,
            max_length=args.max_length,
            max_response_length=args.max_response_length,
            response_cut_side=args.response_cut_side,
            max_model_len=args.max_model_len,
            max_batch_size=args.max_batch_size,
            max_batch_tokens=args.max_batch_tokens,
            max_wait_ms=args.max_wait_ms,
            max_padding=args.max_padding,
            max_samples=args.max_samples,
            max_body_bytes=int(args.max_body_mb * 2**20),
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
        )
    except (RMClientError, OSError, ValueError) as exc:
        logger.error("cannot serve %s: %s", args.model, exc)
        return 2
    access = logging.getLogger("aiohttp.access") if args.access_log else None
    try:
        asyncio.run(_serve(server, args.host, args.port, access))
    except OSError as exc:
        logger.error("cannot serve on %s:%d: %s", args.host, args.port, exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(server: RewardServer, host: str, port: int, access_log: Optional[logging.Logger]) -> None:
    """Load the model, bind, serve until SIGINT/SIGTERM, then drain and clean up."""
    import signal

    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    runner = server.runner(access_log=access_log, handle_signals=False)
    await runner.setup()  # runs on_startup: the model loads before the port is bound
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = ", ".join(f"http://{a[0]}:{a[1]}" if len(a) == 2 else str(a) for a in runner.addresses)
        logger.info(
            "serving %s as %r on %s (max_model_len %d; forward passes of <= %d sequences / %d padded tokens; "
            "wait <= %g ms; API key %s)",
            server.model, server.served_model_name, bound, server.max_model_len, server.batcher.max_batch_size,
            server.batcher.max_tokens, server.batcher.max_wait * 1000.0, "required" if server.api_key else "off",
        )
        await stop.wait()
        logger.info("stopping")
    finally:
        await runner.cleanup()


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m rmclient.serve MODEL [...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m rmclient.serve", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    configure(level_of(args.log_level, "info"))
    return run_serve(args)
