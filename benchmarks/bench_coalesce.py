"""Concurrent one-sample calls against one batched call, on every backend (the scheduler's goal).

    .venv/bin/python benchmarks/bench_coalesce.py [--n 2000] [--repeat 3]

RL frameworks score each rollout as it finishes (verl's reward loop awaits
``compute_score`` per sample; TRL awaits async reward functions). For each
backend this scores the same N samples twice with one client: once as one
batched call, once as N concurrent ``await client(sample)`` calls; then through
verl's async per-sample hook (``make_async_compute_score``) with a sync client,
as verl's reward loop uses it, and through TRL's async reward function called
per sample. It prints rewards per second, their ratio (goal: >= 0.8) and the
requests per hundred samples (goal: a handful). Every concurrent result is
checked against the batched one.

Servers: the sglang fake of ``benchmarks/fake_servers.py`` (aiohttp, its own
process, answers at once) and, for vLLM and lmdeploy, the loopback fake engine of
the tests in a process of its own. In-process: the tiny POLAR model of
``rmclient.testing`` (its forward passes are real).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import FakeServers, make_samples  # noqa: E402

FAKE_ENGINE = """
import sys, time
sys.path.insert(0, {tests!r})
from fake_engine import FakeEngine
fake = FakeEngine({engine!r}, {version!r}, max_model_len=1 << 20)
fake.__enter__()
print(fake.url, flush=True)
while True:
    time.sleep(3600)
"""


class EngineProcess:
    """``tests/fake_engine.py`` serving one engine's protocol in a process of its own."""

    def __init__(self, engine: str, version: str) -> None:
        code = FAKE_ENGINE.format(tests=str(HERE.parent / "tests"), engine=engine, version=version)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        self.url = self.proc.stdout.readline().decode().strip() if ready else ""  # type: ignore[union-attr]
        if not self.url:
            self.stop()
            raise RuntimeError(f"the fake {engine} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(10)


def same(got: List[float], want: List[float], what: str) -> None:
    """Equal rewards (in-process within 1e-4: a float32 forward pass depends on its batch's padding)."""
    worst = max(abs(a - b) for a, b in zip(got, want))
    assert len(got) == len(want) and worst <= 1e-4, f"{what}: rewards differ from the batched call's by {worst}"


async def timed(fn: Callable[[], Awaitable[Any]]) -> Tuple[float, Any]:
    gc.collect()  # each run starts with no garbage of the one before (a full collection costs ~0.15 s here)
    t0 = time.perf_counter()
    out = await fn()
    return time.perf_counter() - t0, out


def requests_made(client: Any) -> int:
    return sum(s.stats["requests"] for per_loop in client._schedulers.values() for s in per_loop.values())


async def measure(client: Any, samples: List[Dict[str, Any]], repeat: int) -> Dict[str, Any]:
    await client(samples[:64])  # connect, load, warm up
    best: Dict[str, Any] = {}
    for _ in range(repeat):
        before = requests_made(client)
        t_batch, want = await timed(lambda: client(samples))
        batch_requests = requests_made(client) - before
        before = requests_made(client)
        t_conc, got = await timed(lambda: asyncio.gather(*[client(s) for s in samples]))
        conc_requests = requests_made(client) - before
        same(got, want, "concurrent calls")
        if not best or t_conc / t_batch < best["t_conc"] / best["t_batch"]:
            best = dict(t_batch=t_batch, t_conc=t_conc, batch_requests=batch_requests, conc_requests=conc_requests,
                        want=want)
    return best


async def measure_hooks(sync_client: Any, samples: List[Dict[str, Any]], want: List[float]) -> Dict[str, float]:
    from rmclient.integrations.trl import make_async_reward_func
    from rmclient.integrations.verl import make_async_compute_score

    compute_score = make_async_compute_score(sync_client)
    t_verl, got = await timed(lambda: asyncio.gather(*[
        compute_score("bench", s["output"], s["reference"], {"prompt": s["prompt"]}) for s in samples
    ]))
    same(got, want, "verl's hook")
    reward_func = make_async_reward_func(sync_client)
    t_trl, got = await timed(lambda: asyncio.gather(*[
        reward_func(prompts=[s["prompt"]], completions=[s["output"]], reference=[s["reference"]]) for s in samples
    ]))
    same([r[0] for r in got], want, "TRL's hook")
    return {"verl": t_verl, "trl": t_trl}


def run_backend(name: str, path: str, samples: List[Dict[str, Any]], repeat: int, **kw: Any) -> Dict[str, Any]:
    from rmclient import AsyncRewardModelClient, RewardModelClient

    client = AsyncRewardModelClient(path, trust_remote_code=True, **kw)
    sync_client = RewardModelClient(path, trust_remote_code=True, **kw)

    async def main() -> Dict[str, Any]:
        try:
            res = await measure(client, samples, repeat)
            await sync_client.ascore(samples[:64])
            res["hooks"] = await measure_hooks(sync_client, samples, res.pop("want"))
            return res
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    finally:
        sync_client.close()


def main(argv: List[str] = sys.argv[1:]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="samples (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend; the best ratio is kept")
    parser.add_argument("--backends", default="transformers,sglang,vllm,lmdeploy")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from rmclient.testing import build_polar_model

    # trainers hand over outputs as strings (a one-message output becomes its text), no wrapper
    samples = [{"prompt": s["prompt"], **{k: s[k][0]["content"] if isinstance(s[k], list) else s[k]
                                          for k in ("reference", "output")}}
               for s in make_samples(args.n, profile="short")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_polar_model(os.path.join(tmp, "POLAR-tiny")) or os.path.join(tmp, "POLAR-tiny"))
        for backend in args.backends.split(","):
            stop: Callable[[], None] = lambda: None
            if backend == "transformers":
                kw: Dict[str, Any] = {}
            elif backend == "sglang":
                fake = FakeServers(1)
                stop, kw = fake.stop, dict(server_type="sglang", server_address=fake.addresses)
            else:
                version = {"vllm": "0.32.0", "lmdeploy": "0.12.0"}[backend]
                proc = EngineProcess(backend, version)
                stop, kw = proc.stop, dict(server_type=backend, server_address=proc.url)
            try:
                res = run_backend(backend, path, samples, args.repeat, **kw)
            finally:
                stop()
            n = args.n
            row = {
                "backend": backend, "n": n,
                "batched_per_s": round(n / res["t_batch"]), "concurrent_per_s": round(n / res["t_conc"]),
                "ratio": round(res["t_batch"] / res["t_conc"], 2),
                "requests_per_100_batched": round(100 * res["batch_requests"] / n, 2),
                "requests_per_100_concurrent": round(100 * res["conc_requests"] / n, 2),
                "verl_hook_ratio": round(res["t_batch"] / res["hooks"]["verl"], 2),
                "trl_hook_ratio": round(res["t_batch"] / res["hooks"]["trl"], 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = ("backend", "batched/s", "concurrent/s", "ratio", "req/100 batched", "req/100 concurrent",
            "verl hook", "TRL hook")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['backend']} | {r['batched_per_s']} | {r['concurrent_per_s']} | {r['ratio']}x | "
              f"{r['requests_per_100_batched']} | {r['requests_per_100_concurrent']} | {r['verl_hook_ratio']}x | "
              f"{r['trl_hook_ratio']}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["ratio"] >= 0.8 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
