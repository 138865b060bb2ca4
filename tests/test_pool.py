"""Several servers, concurrency and fault injection: every sample gets its own reward or is reported."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time

import pytest

from rmclient import AsyncRewardModelClient, RewardModelClient, ScoringError
from tests.fake_engine import FakeEngine, reward_of

PROMPTS = [f"Question {i}: " + "how many r in strawberry? " * (i % 7) for i in range(64)]
SAMPLES = [{"prompt": p, "reference": "Three.", "output": f"Answer {i}."} for i, p in enumerate(PROMPTS)]
FAST = dict(max_attempts=4, deadline=20.0, batch_size=4)


def expected(client, samples=SAMPLES):
    return [reward_of(x) for x in client.encode_ids(samples)]


def check(rewards_or_error, want):
    """Every sample has its own reward, or is reported failed (never a wrong value)."""
    if isinstance(rewards_or_error, ScoringError):
        for i, r in enumerate(rewards_or_error.rewards):
            assert (r is None) == (i in rewards_or_error.failures)
            assert r is None or r == want[i]
    else:
        assert rewards_or_error == want


def test_least_outstanding_routing_spreads_the_load(polar_path):
    with FakeEngine("sglang", "0.5.23", delay=0.02) as a, FakeEngine("sglang", "0.5.23", delay=0.02) as b:
        client = RewardModelClient(polar_path, server_type="sglang", server_address=f"{a.url},{b.url}", **FAST)
        # Routing alone: a hedge (a second copy of a request slowed by the machine's load) is tested in test_faults.
        client.retry_policy = dataclasses.replace(client.retry_policy, hedge_after=None)
        assert client(SAMPLES) == expected(client)
        assert len(a.requests) >= 4 and len(b.requests) >= 4
        assert len(a.requests) + len(b.requests) == len(SAMPLES) // 4


def test_in_flight_limit_per_endpoint(polar_path):
    with FakeEngine("vllm", "0.32.0", delay=0.02) as fake:
        client = RewardModelClient(polar_path, server_type="vllm", server_address=fake.url, max_in_flight=3, **FAST)
        assert client(SAMPLES) == expected(client)
        assert fake.max_concurrent == 3


def test_lmdeploy_unknown_version_one_request_at_a_time(polar_path):
    with FakeEngine("lmdeploy", delay=0.02) as fake:  # no version route: 0.9.1-0.11 cannot be ruled out
        client = RewardModelClient(polar_path, server_type="lmdeploy", server_address=fake.url, **FAST)
        assert client(SAMPLES) == expected(client)
        assert fake.max_concurrent == 1


def test_server_killed_mid_run_fails_over(polar_path):
    with FakeEngine("vllm", "0.32.0", delay=0.05) as a, FakeEngine("vllm", "0.32.0", delay=0.05) as b:
        client = RewardModelClient(polar_path, server_type="vllm", server_address=[a.url, b.url],
                                   max_in_flight=1, **FAST)
        want = expected(client)
        threading.Timer(0.12, a.stop).start()
        assert client(SAMPLES) == want
        assert len(a.requests) >= 2 and len(b.requests) > len(SAMPLES) // 8  # b took over the rest


def test_all_servers_down_reports_every_sample(polar_path):
    with FakeEngine("vllm", "0.32.0") as a:
        url = a.url
    client = RewardModelClient(polar_path, server_type="vllm", server_address=[url, url], max_attempts=2,
                               deadline=10, batch_size=16)
    t0 = time.monotonic()
    with pytest.raises(ScoringError) as err:
        client(SAMPLES)
    assert sorted(err.value.failures) == list(range(len(SAMPLES)))
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("script", [[500, 500, 500], [429, 503], ["stall"], ["garbage"], ["nan"], ["inf"],
                                    ["short"], ["reorder"], ["duplicate"] * 3])
def test_faults_then_recovery(polar_path, script):
    with FakeEngine("vllm", "0.32.0", stall=1.0) as fake:
        client = RewardModelClient(polar_path, server_type="vllm", server_address=fake.url, read_timeout=0.3, **FAST)
        want = expected(client)
        fake.script = list(script)
        check(client(SAMPLES), want)


@pytest.mark.parametrize("action", ["nan", "inf", "duplicate", "short", "garbage", 500, 503, 429, 400])
def test_persistent_faults_are_reported_not_hidden(polar_path, action):
    with FakeEngine("vllm", "0.32.0") as fake:
        client = RewardModelClient(polar_path, server_type="vllm", server_address=fake.url,
                                   max_attempts=2, deadline=20, batch_size=8, retry_budget=12)
        want = expected(client)
        fake.script = [action] * 10_000
        t0 = time.monotonic()
        try:
            result = client(SAMPLES)
        except ScoringError as err:
            result = err
        check(result, want)
        # a duplicated index needs two results: once halving isolates samples, every one is scored
        assert isinstance(result, ScoringError) == (action != "duplicate")
        assert time.monotonic() - t0 < 20
        assert len(fake.requests) < 200  # bounded: the retry budget caps the retries


def test_retry_budget_is_spent_only_on_retries_that_happen():
    """A chunk's failed last attempt takes nothing from the call's budget: a later chunk still gets it."""
    from rmclient.dispatch import Chunk, RetryPolicy, score_chunks
    from rmclient.pool import EndpointPool

    async def run(fake):
        pool = EndpointPool("vllm", [fake.url], health_interval=60)
        await pool.start()

        async def chunks():
            yield Chunk([0], [[1, 2, 3]])
            while len(fake.requests) < 2:  # the first chunk has sent its last attempt
                await asyncio.sleep(0.01)
            yield Chunk([1], [[4, 5, 6]])

        try:
            return await score_chunks(pool, chunks(), 2, policy=RetryPolicy(attempts=2, budget=2, initial=0.01),
                                      on_error="nan")
        finally:
            await pool.aclose()

    with FakeEngine("vllm", "0.32.0") as fake:
        fake.script = [500] * 100
        assert all(math.isnan(r) for r in asyncio.run(run(fake)))
        assert len(fake.requests) == 4  # 2 attempts each: the budget of 2 paid one retry per chunk


@pytest.mark.parametrize("on_error", ["raise", "nan"])
def test_bad_samples_are_isolated_and_nan_only_when_asked(polar_path, on_error):
    bad = {5, 17, 40}
    ids = RewardModelClient(polar_path).encode_ids(SAMPLES)
    poisoned = {tuple(ids[i]) for i in bad}
    with FakeEngine("sglang", "0.5.23", poison=lambda x: tuple(x) in poisoned) as fake:
        client = RewardModelClient(polar_path, server_type="sglang", server_address=fake.url, on_error=on_error,
                                   batch_size=16)
        want = expected(client)
        if on_error == "nan":
            rewards = client(SAMPLES)
            assert {i for i, r in enumerate(rewards) if math.isnan(r)} == bad
            assert all(rewards[i] == want[i] for i in range(len(SAMPLES)) if i not in bad)
        else:
            with pytest.raises(ScoringError) as err:
                client(SAMPLES)
            assert set(err.value.failures) == bad and "poisoned input" in err.value.failures[17]
            check(err.value, want)
            assert "3 of 64 samples failed" in str(err.value)


def test_deadline_bounds_a_call(polar_path):
    with FakeEngine("sglang", "0.5.23", stall=5.0) as fake:
        client = RewardModelClient(polar_path, server_type="sglang", server_address=fake.url, deadline=1.0,
                                   read_timeout=30, batch_size=64)
        client(SAMPLES[:1])
        fake.script = ["stall"]
        t0 = time.monotonic()
        with pytest.raises(ScoringError, match="deadline"):
            client(SAMPLES)
        assert time.monotonic() - t0 < 3


def test_sync_client_is_thread_safe_in_process(polar_path):
    client = RewardModelClient(polar_path)
    want = client(SAMPLES)
    results = {}

    def work(k):
        part = SAMPLES[k::4]
        results[k] = client(part)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == pytest.approx(want[k::4], abs=1e-5)


def test_async_client_and_sync_client_inside_a_running_loop(polar_path):
    with FakeEngine("vllm", "0.32.0") as fake:
        sync = RewardModelClient(polar_path, server_type="vllm", server_address=fake.url)
        want = expected(sync)

        async def main():
            client = AsyncRewardModelClient(polar_path, server_type="vllm", server_address=fake.url, batch_size=4)
            got = await asyncio.gather(client(SAMPLES[:32]), client(SAMPLES[32:]), client(SAMPLES[5]))
            await client.aclose()
            # the sync client works even though a loop is running in this thread (Jupyter, Ray)
            return got, sync(SAMPLES[:3])

        (first, second, one), from_sync = asyncio.run(main())
        assert first + second == want and one == want[5] and from_sync == want[:3]


def test_encode_then_request_respects_the_server_limit(polar_path):
    long = [{"prompt": "p " * 200, "reference": "r " * 50, "output": "o " * 50}] * 3
    with FakeEngine("sglang", "0.5.23", max_model_len=64) as fake:
        client = RewardModelClient(polar_path, server_type="sglang", server_address=fake.url)
        encoded = client.encode_ids(long)  # contacts the server first
        # sglang refuses len >= max_req_input_len = min(ctx - 1, kv_pool - 1) - 5 = 58 (its /get_server_info)
        assert max(len(x) for x in encoded) <= 57
        assert client.sglang_request_reward(encoded) == [reward_of(x) for x in encoded]
        too_long = RewardModelClient(polar_path, server_type="transformers").encode_ids(long)
        with pytest.raises(ScoringError, match="exceed the server's limit of 57") as err:
            client.sglang_request_reward(too_long + encoded[:1])
        assert sorted(err.value.failures) == [0, 1, 2] and err.value.rewards[3] == reward_of(encoded[0])
        assert fake.longest <= 57  # nothing longer was ever sent


def test_sglang_limit_follows_a_small_kv_pool(polar_path):
    long = [{"prompt": "p " * 200, "reference": "r " * 50, "output": "o " * 50}] * 2
    with FakeEngine("sglang", "0.4.3.post4", max_model_len=4096, kv_pool_tokens=41) as fake:
        client = RewardModelClient(polar_path, server_type="sglang", server_address=fake.url)
        client.connect()
        assert client.effective_max_length() == 34  # min(4095, 40) - 5 = 35, and len < 35
        assert client(long) == [reward_of(x) for x in client.encode_ids(long)]
        assert 30 <= fake.longest <= 34


def test_a_bug_or_bad_configuration_surfaces_as_itself(polar_path, monkeypatch):
    from rmclient.adapters.sglang import SglangAdapter

    def broken(self, inputs, output="reward"):
        raise TypeError("adapter bug")

    with FakeEngine("sglang", "0.5.23") as fake:
        client = RewardModelClient(polar_path, server_type="sglang", server_address=fake.url)
        monkeypatch.setattr(SglangAdapter, "build_request", broken)
        with pytest.raises(TypeError, match="adapter bug"):  # not "not scored within the deadline"
            client(SAMPLES[:4])


def test_request_sizes_few_large_requests_and_a_quick_first_one(polar_path):
    """Engines batch and pay per request: two large requests per server, after a small first one each."""
    samples = [{"prompt": f"p{i}", "reference": "r", "output": f"o{i}"} for i in range(600)]
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b:
        client = RewardModelClient(polar_path, server_type="vllm", server_address=[a.url], deadline=20)
        assert client(samples) == expected(client, samples)
        sizes = sorted(len(r["body"]["input"]) for r in a.requests)  # arrival order may vary
        assert sizes == [24, 64, 256, 256]  # a first block of 64, then batch_size 256
        client = RewardModelClient(polar_path, server_type="vllm", server_address=[a.url, b.url], deadline=20)
        assert client(samples[:400]) == expected(client, samples[:400])
        sizes = sorted(len(r["body"]["input"]) for r in a.requests[4:] + b.requests)
        assert sizes == [16, 56, 64, 64, 100, 100]  # a first block of 64 per server, then 400 / (2 x 2) at most


@pytest.mark.parametrize("slowdown", [1, 8])
def test_a_first_block_travels_with_the_next_when_encoding_is_starved(polar_path, monkeypatch, slowdown):
    """Encoding several times slower while requests are in flight (the server shares the client's CPUs: a
    CPU engine on this host) makes later calls' first blocks travel with the next, so that the server has
    work in hand while the rest is encoded; at full speed the first request goes alone, early."""
    from rmclient.recipes import PolarRecipe

    words = " ".join(f"w{k}" for k in range(40))
    samples = [{"prompt": f"p{i} {words}", "reference": "r", "output": f"o{i}"} for i in range(600)]
    encoded = []
    encode_valid = PolarRecipe.encode_valid
    with FakeEngine("vllm", "0.32.0", delay=0.2) as a:

        def spy(self, polar):  # slowed while the server holds a request
            started = time.perf_counter()
            out = encode_valid(self, polar)
            busy = a.in_flight > 0
            encoded.append(len(polar))
            time.sleep((time.perf_counter() - started) * (slowdown - 1) if busy else 0)
            return out

        client = RewardModelClient(polar_path, server_type="vllm", server_address=[a.url], deadline=30)
        client(samples[:1])
        monkeypatch.setattr(PolarRecipe, "encode_valid", spy)
        first = client(samples)
        del encoded[:]
        second = client(samples)
        monkeypatch.undo()
        want = expected(client, samples)
        assert first == want and second == want
    assert encoded[0] == (64 + 256 if slowdown > 1 else 64) and sum(encoded) == len(samples)


def test_routing_weighs_requests_by_their_tokens():
    """A server busy with one long request gets less new work than one with several short ones."""
    from rmclient.pool import EndpointPool

    async def run():
        pool = EndpointPool("vllm", ["http://127.0.0.1:1", "http://127.0.0.1:2"])
        for e in pool.endpoints:
            e.probation_until = 0.0  # past the probation (see the next test)
        try:
            a = await pool.acquire(work=1000)
            picks = [await pool.acquire(work=10) for _ in range(5)]
            assert all(p is not a for p in picks)  # 50 tokens there still weigh less than 1000
            await pool.release(a, work=1000)
            assert a.outstanding == 0 and (await pool.acquire(work=10)) is a
        finally:
            await pool.aclose()

    asyncio.run(run())


def test_endpoints_take_one_request_each_until_the_probation_ends():
    """A misconfigured server costs one request before it is disabled, not one per slot; the
    endpoints open their other slots together, whichever answered first."""
    from rmclient import pool as pool_module
    from rmclient.pool import EndpointPool

    async def run():
        pool = EndpointPool("vllm", ["http://127.0.0.1:1", "http://127.0.0.1:2"], max_in_flight=4)
        try:
            t0 = time.monotonic()
            first = await pool.acquire()
            second = await pool.acquire()
            assert {first, second} == set(pool.endpoints)  # one each
            await pool.release(first)  # an answer does not end the probation early
            assert first.room == 1
            third = await pool.acquire()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pool.acquire(), 0.1)
            more = [await asyncio.wait_for(pool.acquire(), 2 * pool_module.PROBATION) for _ in range(6)]
            assert time.monotonic() - t0 >= pool_module.PROBATION - 0.05
            assert all(e.room == 4 for e in pool.endpoints) and sorted(e.in_flight for e in pool.endpoints) == [4, 4]
            del third, more
        finally:
            await pool.aclose()

    asyncio.run(run())
