"""``rmclient score IN -o OUT --ray ADDRESS``: the same scoring as a Ray Data job on a cluster.

Ray Data reads ``IN`` (JSONL with Arrow's reader, which needs each field to have one type in all
lines; or Parquet for ``*.parquet``: a file or a folder), scores it with
``--ray-actors`` actors of :class:`~rmclient.integrations.ray.RewardScorer` (one client each, built
from the same options as the local run) in batches of ``--chunk-size`` rows, and writes ``OUT``, a
folder of JSONL (or Parquet, for ``*.parquet``) files in input order.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .backend import client_arguments, selected_backend
from .exits import EXIT_FAILURE, EXIT_OK, InputError


def run_on_ray(args: argparse.Namespace) -> int:
    from rmclient.extras import require

    ray = require("ray", "ray", "rmclient score --ray")
    from rmclient.integrations.ray import BATCHES_AT_ONCE, RewardScorer

    if args.input == "-" or not os.path.exists(args.input):
        raise InputError(f"--ray reads a file or folder, not {args.input!r}")
    if args.resume:
        raise InputError("--resume is for the streaming run; a Ray job writes its output folder whole")
    if args.kind != "reward" or args.with_tokens:
        raise InputError("--ray writes one reward per line: --kind and --with-tokens are for the streaming run")
    if args.ray_actors < 1:
        raise InputError(f"--ray-actors must be at least 1, got {args.ray_actors}")
    kwargs = client_arguments(args, selected_backend(args), on_error="raise")
    kwargs.update(on_error=args.on_error, reward_column=args.reward_field)
    started = time.monotonic()
    ours = not ray.is_initialized()  # a cluster this process already joined stays up afterwards
    if ours:
        ray.init(address=None if args.ray == "local" else args.ray, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        parquet = args.input.endswith(".parquet")
        # Arrow's JSON reader keeps each value's JSON type ("0" stays a string; pandas' would make it 0)
        ds = ray.data.read_parquet(args.input) if parquet else ray.data.read_json(args.input)
        scored = ds.map_batches(RewardScorer, fn_constructor_kwargs=kwargs, concurrency=args.ray_actors,
                                batch_size=args.chunk_size, max_concurrency=BATCHES_AT_ONCE)
        if args.output.endswith(".parquet"):
            scored.write_parquet(args.output)
        else:
            scored.write_json(args.output, lines=True)
    except Exception as exc:  # a failed batch (on_error=raise) or a read error: Ray wraps it
        print(f"rmclient score --ray: {type(exc).__name__}: {str(exc)[:2000]}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if ours:
            ray.shutdown()
    print(f"scored in {time.monotonic() - started:.1f}s on Ray -> {args.output}/", file=sys.stderr)
    return EXIT_OK
