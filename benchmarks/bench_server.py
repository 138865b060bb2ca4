"""rmclient serve: throughput of 32 concurrent single-sample clients vs one offline batch.

    .venv/bin/python benchmarks/bench_server.py            # about 1.5 minutes on 2 CPU cores

Both sides score the same raw POLAR samples with the same model:

  offline  ``RewardModelClient(path)(samples)`` in-process: encoding + batched forward
           passes over the whole list (sorted by length, ``batch_size`` 32).
  server   ``rmclient launch transformers`` (``python -m rmclient.serve`` under the
           supervisor, its own process); 32 concurrent clients (asyncio + httpx in this
           process), each sending ONE raw sample per request to ``POST /v1/rewards``
           and the next when it has its answer. The server encodes and merges concurrent
           requests into shared forward passes (dynamic batching).

The figure is samples/s(server) / samples/s(offline); goal >= 0.8. The model is a
randomly initialised Llama reward model (POLAR-like tokenizer, ``--hidden`` wide,
``--layers`` deep) built in a temporary folder, big enough that the forward pass
dominates. The server's rewards are checked against the offline ones.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import httpx

from rmclient.testing import build_polar_model


WORDS = ("the capital of China is Beijing and Shanghai is a city; the quick brown fox jumps over the lazy dog "
         "please reason step by step and put your final answer within boxed 1 2 3 4 5 6 7 8 9 10").split()


def make_samples(n: int, seed: int = 0) -> List[dict]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [
        {"prompt": text(20, 80), "reference": text(5, 40), "output": text(5, 60)}
        for _ in range(n)
    ]


async def run_clients(url: str, samples: List[dict], concurrency: int) -> List[float]:
    rewards: List[float] = [float("nan")] * len(samples)
    todo = iter(range(len(samples)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:

        async def client() -> None:
            for i in todo:  # a shared iterator: each client takes the next sample when it is free
                r = await http.post("/v1/rewards", json={"samples": [samples[i]]})
                r.raise_for_status()
                rewards[i] = r.json()["rewards"][0]

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return rewards


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the best is kept")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-padding", type=float, default=None,
                        help="the server's --max-padding (default: its own, 0.1 on CPU; 1.0 disables the length cut)")
    parser.add_argument("--model", default=None, help="use this model folder instead of building one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    from rmclient import RewardModelClient
    from rmclient.launchers import launch

    tmp = tempfile.TemporaryDirectory(prefix="rmclient-bench-server-")
    path = args.model or str(
        build_polar_model(Path(tmp.name) / "bench-polar", hidden_size=args.hidden, num_layers=args.layers)
    )
    samples = make_samples(args.samples)

    offline = RewardModelClient(path)
    lengths = [len(x) for x in offline.encode_ids(samples)]
    print(f"model: Llama seq-cls hidden {args.hidden}, {args.layers} layers ({path})")
    print(f"data: {len(samples)} POLAR samples, {min(lengths)}-{max(lengths)} tokens "
          f"(mean {statistics.mean(lengths):.0f}); {args.clients} clients; best of {args.repeats} runs each, "
          "offline and server runs alternating (the machine may be shared)")
    offline(samples[:32])  # load + warm up
    extra = ["--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    if args.max_padding is not None:
        extra += ["--max-padding", str(args.max_padding)]
    off_times, srv_times, got, expected = [], [], [], []
    with launch("transformers", path, ready_timeout=300, extra_args=extra) as server:
        asyncio.run(run_clients(server.url, samples[:64], args.clients))  # warm up
        before = httpx.get(server.url + "/stats").json()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            expected = offline(samples)
            off_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = asyncio.run(run_clients(server.url, samples, args.clients))
            srv_times.append(time.perf_counter() - t0)
            print(f"  run: offline {off_times[-1]:.2f} s, server {srv_times[-1]:.2f} s", flush=True)
        after = httpx.get(server.url + "/stats").json()
    off_rate = len(samples) / min(off_times)
    print(f"offline batch      : {off_rate:8.1f} samples/s  (in-process RewardModelClient, whole list)")
    srv_rate = len(samples) / min(srv_times)
    batches = after["batches"] - before["batches"]
    requests = after["requests"] - before["requests"]
    diff = max(abs(a - b) for a, b in zip(got, expected))
    passes = after["forward_passes"] - before["forward_passes"]
    print(f"server, {args.clients} clients: {srv_rate:8.1f} samples/s  ({requests / max(batches, 1):.1f} requests "
          f"per merged batch, cut into {passes / max(batches, 1):.1f} forward passes)")
    print(f"max |server - offline| reward: {diff:.2e}")
    ratio = srv_rate / off_rate
    print(f"ratio server/offline: {ratio:.3f}  (goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    # what batch invariance (one sequence per forward pass, rmclient score's CPU default) costs on this CPU
    invariant = RewardModelClient(path, batch_invariant=True)
    invariant(samples[:32])
    inv_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        same = invariant(samples)
        inv_times.append(time.perf_counter() - t0)
    inv_rate = len(samples) / min(inv_times)
    print(f"in-process, one sequence per forward pass (batch_invariant): {inv_rate:8.1f} samples/s = "
          f"{inv_rate / off_rate:.2f}x batched; max |difference| {max(abs(a - b) for a, b in zip(same, expected)):.1e}")
    tmp.cleanup()
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
