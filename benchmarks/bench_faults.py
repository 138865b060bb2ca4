"""Reliability figures: load held by ``rmclient serve``, small requests beside huge ones, hedging, faults.

    .venv/bin/python benchmarks/bench_faults.py [--clients 64] [--seconds 20]

Everything runs on loopback with tiny models (``rmclient.testing``) and the test suite's fake
engines; every loop is bounded in count and time. Prints one table per part:

1. load: ``--clients`` concurrent clients for ``--seconds`` against ``rmclient serve`` (native
   ``/v1/rewards``, one sample each), every reward checked against the in-process one:
   requests, lost (no answer or an error), wrong, p50/p99 latency;
2. huge beside small: three ~10 MB ``/v1/rewards`` requests in flight and small requests
   meanwhile: the small ones' p50/p99 (goal: p99 < 1 s);
3. hedging: 3000 samples over three fake vLLM servers, healthy, then with one that takes
   requests and never answers them (first in the list, so it gets the first request): time to
   finish and the extra requests sent;
4. faults: time until each fault is survived (rewards right) or reported (the right error).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rmclient import RewardModelClient, ScoringError, ServerError  # noqa: E402
from rmclient.serve import RewardServer, ServerThread  # noqa: E402
from rmclient.testing import build_polar_model  # noqa: E402
from tests.fake_engine import BlackHole, FakeEngine, reward_of  # noqa: E402


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def samples(n: int, seed: int = 0) -> List[Dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"prompt": f"Question {i}: " + "word " * rng.randrange(1, 60), "reference": f"answer {i % 7}",
         "output": "reply " * rng.randrange(1, 40) + str(i)}
        for i in range(n)
    ]


# --- 1. load -------------------------------------------------------------------------------------


async def _load(url: str, pool: List[Dict[str, Any]], want: List[float], clients: int, seconds: float) -> Dict[str, Any]:
    latencies: List[float] = []
    lost = wrong = 0
    stop_at = time.monotonic() + seconds

    async def one(k: int) -> None:
        nonlocal lost, wrong
        rng = random.Random(k)
        async with httpx.AsyncClient(timeout=60) as http:
            while time.monotonic() < stop_at:
                i = rng.randrange(len(pool))
                t0 = time.monotonic()
                try:
                    r = await http.post(url + "/v1/rewards", json={"samples": [pool[i]]})
                    got = r.json()["rewards"][0] if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError):
                    got = None
                latencies.append(time.monotonic() - t0)
                if got is None:
                    lost += 1
                elif abs(got - want[i]) > 1e-4:
                    wrong += 1

    await asyncio.gather(*(one(k) for k in range(clients)))
    return {"requests": len(latencies), "lost": lost, "wrong": wrong,
            "p50_ms": 1000 * pct(latencies, 0.5), "p99_ms": 1000 * pct(latencies, 0.99)}


def bench_load(model: str, clients: int, seconds: float) -> Dict[str, Any]:
    pool = samples(200)
    want = RewardModelClient(model)(pool)
    with ServerThread(RewardServer(model)) as srv:
        return asyncio.run(_load(srv.url, pool, want, clients, seconds))


# --- 2. huge beside small ------------------------------------------------------------------------------


def bench_huge(model: str) -> Dict[str, Any]:
    huge = {"samples": [{"prompt": "p q r s t " * 1_000_000, "reference": "ref", "output": "out"}]}  # ~10 MB
    small = {"samples": samples(1)}
    with ServerThread(RewardServer(model)) as srv:
        big_done: List[float] = []

        def big() -> None:
            httpx.post(srv.url + "/v1/rewards", json=huge, timeout=600)
            big_done.append(time.monotonic())

        threads = [threading.Thread(target=big) for _ in range(3)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.5)
        lat: List[float] = []
        with httpx.Client(timeout=60) as http:
            while len(big_done) < 3 and time.monotonic() - t0 < 300:
                s = time.monotonic()
                assert http.post(srv.url + "/v1/rewards", json=small).status_code == 200
                lat.append(time.monotonic() - s)
                time.sleep(0.05)
        for t in threads:
            t.join()
    return {"small_requests": len(lat), "p50_ms": 1000 * pct(lat, 0.5), "p99_ms": 1000 * pct(lat, 0.99),
            "huge_done_s": round(max(big_done) - t0, 1)}


# --- 3. hedging ---------------------------------------------------------------------------------------------


def bench_hedging(model: str) -> List[Tuple[str, float, int, int]]:
    data = samples(3000, seed=3)
    rows = []
    # the black hole first in the list: it gets the first request (with idle servers, ties go in order)
    for name, delays in (("3 healthy", (0.0, 0.0, 0.0)), ("1 black hole + 2 healthy", (120.0, 0.0, 0.0))):
        engines = [FakeEngine("vllm", "0.32.0", delay=d).__enter__() for d in delays]
        try:
            client = RewardModelClient(model, server_type="vllm", server_address=[e.url for e in engines], deadline=60)
            want = [reward_of(x) for x in client.encode_ids(data)]
            t0 = time.monotonic()
            assert client(data) == want
            elapsed = time.monotonic() - t0
            stats = next(iter(next(iter(client._pools.values())).values())).stats
            client.close()
            rows.append((name, elapsed, stats["requests"], stats["hedged"]))
        finally:
            for e in engines:
                e.stop()
    return rows


# --- 4. faults -----------------------------------------------------------------------------------------------


def _timed(fn: Callable[[], str]) -> Tuple[str, float]:
    t0 = time.monotonic()
    outcome = fn()
    return outcome, time.monotonic() - t0


def bench_faults(model: str) -> List[Tuple[str, str, float]]:
    data = samples(400, seed=5)
    out: List[Tuple[str, str, float]] = []

    def survived(addresses: List[str], **kw: Any) -> str:
        client = RewardModelClient(model, server_type="vllm", server_address=addresses, **kw)
        try:
            ok = client(data) == [reward_of(x) for x in client.encode_ids(data)]
            return "rewards right" if ok else "WRONG"
        finally:
            client.close()

    def reported(addresses: List[str], expect: type, **kw: Any) -> str:
        client = RewardModelClient(model, server_type="vllm", server_address=addresses, **kw)
        try:
            client(data)
            return "NOT REPORTED"
        except expect as exc:
            return f"{type(exc).__name__}"
        finally:
            client.close()

    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b, BlackHole() as hole:
        out.append(("black hole at discovery (1 of 3)", *_timed(lambda: survived([hole.url, a.url, b.url]))))
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0", delay=120) as hung:
        out.append(("scoring requests never answered (1 of 2)", *_timed(lambda: survived([hung.url, a.url]))))
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b:
        b.script = [500] * 3 + [503, 429]
        out.append(("5xx/429 bursts", *_timed(lambda: survived([a.url, b.url]))))
    for action in ("deep", "huge", "truncated", "garbage"):
        with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b:
            b.script = [action] * 3
            out.append((f"hostile body ({action}) x3", *_timed(lambda: survived([a.url, b.url]))))
    with FakeEngine("vllm", "0.32.0") as a:
        b = FakeEngine("vllm", "0.32.0", delay=0.05).__enter__()
        threading.Timer(0.3, b.stop).start()  # killed mid-run
        out.append(("a server killed mid-run (1 of 2)", *_timed(lambda: survived([a.url, b.url]))))
    with BlackHole() as h1, BlackHole() as h2:
        out.append(("every endpoint a black hole, deadline 5 s",
                    *_timed(lambda: reported([h1.url, h2.url], ScoringError, deadline=5, engine_version="0.32.0"))))
    with FakeEngine("vllm", "0.32.0", always=401) as bad:
        out.append(("wrong API key (401 on every request)", *_timed(lambda: reported([bad.url], ServerError))))
    with FakeEngine("vllm", "0.32.0", always=404) as bad:
        out.append(("wrong route / engine type (404)", *_timed(lambda: reported([bad.url], ServerError))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    model = str(build_polar_model(Path(tempfile.mkdtemp()) / "tiny-polar"))

    load = bench_load(model, args.clients, args.seconds)
    print(f"1. load: {args.clients} clients x {args.seconds:g} s against rmclient serve")
    print(f"   {load['requests']} requests, lost {load['lost']}, wrong {load['wrong']}, "
          f"p50 {load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms")
    huge = bench_huge(model)
    print("2. three ~10 MB requests in flight: small requests meanwhile")
    print(f"   {huge['small_requests']} small requests: p50 {huge['p50_ms']:.0f} ms, p99 {huge['p99_ms']:.0f} ms "
          f"(goal p99 < 1000 ms: {'met' if huge['p99_ms'] < 1000 else 'NOT met'}); huge ones done after "
          f"{huge['huge_done_s']} s")
    print("3. hedging, 3000 samples over three fake vLLM servers")
    for name, elapsed, requests, hedged in bench_hedging(model):
        print(f"   {name:28} {elapsed:6.2f} s, {requests} requests, {hedged} hedged "
              f"({100 * hedged / max(requests, 1):.1f}% extra)")
    print("4. faults: outcome and time")
    for name, outcome, seconds in bench_faults(model):
        print(f"   {name:45} {outcome:15} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
