"""Faults and hostile input against the client and the pool (loopback only, each bounded in time).

Every case asserts the outcome: the right rewards, the right error naming the right sample,
bounded time, nothing already scored lost.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time

import pytest

from rmclient import AsyncRewardModelClient, InvalidSampleError, RewardModelClient, ScoringError, ServerError
from rmclient.errors import ClientClosedError
from tests.fake_engine import BlackHole, FakeEngine, reward_of

SAMPLES = [
    {"prompt": f"Question {i}: what is {i} + {i}?", "reference": str(2 * i), "output": f"It is {2 * i + i % 3}."}
    for i in range(300)
]
LONE = json.loads('"a\\ud800b"')  # valid JSON, not encodable text


def client_for(path, addresses, engine="vllm", **kw):
    return RewardModelClient(path, server_type=engine, server_address=addresses, **kw)


def expected(client, samples=SAMPLES):
    return [reward_of(x) for x in client.encode_ids(samples)]


# --- deadlines bound every phase, discovery included ---------------------------------------------------


def test_a_black_hole_at_discovery_does_not_hold_up_the_call(polar_path):
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b, BlackHole() as hole:
        client = client_for(polar_path, [hole.url, a.url, b.url], deadline=10)
        t0 = time.monotonic()
        assert client(SAMPLES) == expected(client)
        assert time.monotonic() - t0 < 5  # not the 300 s read timeout, not even the 10 s discovery limit
        assert a.requests and b.requests and hole.connections >= 1
        client.close()


def test_every_endpoint_a_black_hole_fails_within_the_deadline(polar_path):
    with BlackHole() as h1, BlackHole() as h2:
        client = client_for(polar_path, [h1.url, h2.url], deadline=2, engine_version="0.32.0")
        t0 = time.monotonic()
        with pytest.raises(ScoringError, match="deadline|timed out") as err:
            client(SAMPLES[:20])
        assert time.monotonic() - t0 < 4
        assert sorted(err.value.failures) == list(range(20))
        client.close()


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_an_attempt_is_capped_by_the_time_left(polar_path, engine):
    with FakeEngine(engine, None, delay=30) as hung:  # answers its info routes, never a scoring request
        client = client_for(polar_path, hung.url, engine=engine, deadline=2, read_timeout=300)
        t0 = time.monotonic()
        with pytest.raises(ScoringError):
            client(SAMPLES[:10])
        assert time.monotonic() - t0 < 4
        client.close()


# --- hedging ----------------------------------------------------------------------------------------------


def test_a_hung_endpoint_is_hedged_and_quarantined_while_healthy_ones_score(polar_path, caplog):
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b, \
            FakeEngine("vllm", "0.32.0", delay=60) as hung:
        client = client_for(polar_path, [a.url, b.url, hung.url], deadline=15)
        t0 = time.monotonic()
        assert client(SAMPLES) == expected(client)
        first = time.monotonic() - t0
        assert first < 8, first
        # a second call: the hung endpoint is quarantined after losing its hedges
        assert client(SAMPLES) == expected(client)
        stats = _pool_stats(client)
        assert 1 <= stats["hedged"] <= max(2, 0.05 * stats["requests"]) + 1
        assert stats["hedges_won"] >= 1
        assert "hedging" in caplog.text
        client.close()


def _pool_stats(client):
    stats = {"requests": 0, "hedged": 0, "hedges_won": 0}
    for pools in client._pools.values():
        for pool in pools.values():
            for k in stats:
                stats[k] += pool.stats[k]
    return stats


def test_a_slow_but_alive_endpoint_costs_little_and_loses_nothing(polar_path):
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b, \
            FakeEngine("vllm", "0.32.0", delay=1.5) as slow:
        client = client_for(polar_path, [a.url, b.url, slow.url], deadline=30)
        t0 = time.monotonic()
        assert client(SAMPLES) == expected(client)
        assert time.monotonic() - t0 < 6
        client.close()


def test_no_hedge_without_a_slow_request(polar_path):
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b:
        client = client_for(polar_path, [a.url, b.url])
        for _ in range(3):
            assert client(SAMPLES[:50]) == expected(client, SAMPLES[:50])
        assert _pool_stats(client)["hedged"] == 0
        client.close()


# --- 4xx that is not about a sample fails fast -------------------------------------------------------------


@pytest.mark.parametrize("status, hint", [(401, "API key"), (403, "API key"), (404, "server_type"), (405, "server_type")])
def test_a_misconfiguration_status_stops_the_call_at_once(polar_path, status, hint):
    with FakeEngine("vllm", "0.32.0", always=status) as fake:
        client = client_for(polar_path, fake.url, max_attempts=5)
        t0 = time.monotonic()
        with pytest.raises(ServerError, match=hint) as err:
            client(SAMPLES)
        assert time.monotonic() - t0 < 3
        assert err.value.status == status and fake.url in err.value.endpoint
        assert len(fake.requests) <= 8  # not one per sample after halving
        assert err.value.rewards == [None] * len(SAMPLES)
        client.close()


def test_a_misconfigured_endpoint_is_dropped_and_the_others_score_everything(polar_path):
    with FakeEngine("vllm", "0.32.0", always=401) as bad, FakeEngine("vllm", "0.32.0") as good:
        client = client_for(polar_path, [bad.url, good.url])
        assert client(SAMPLES) == expected(client)
        assert len(bad.requests) <= 2
        client.close()


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_sample_status_still_isolates_the_samples_at_fault(polar_path, status):
    with FakeEngine("vllm", "0.32.0", poison=lambda ids: sum(ids) % 5 == 0, poison_status=status) as fake:
        client = client_for(polar_path, fake.url)
        ids = client.encode_ids(SAMPLES[:40])
        bad = [i for i, x in enumerate(ids) if sum(x) % 5 == 0]
        assert bad
        with pytest.raises(ScoringError) as err:
            client(SAMPLES[:40])
        assert sorted(err.value.failures) == bad
        assert all(err.value.rewards[i] == reward_of(x) for i, x in enumerate(ids) if i not in bad)
        client.close()


# --- hostile bodies are response errors, never crashes -------------------------------------------------------


@pytest.mark.parametrize("action", ["deep", "huge", "truncated", "types", "garbage"])
def test_a_hostile_body_goes_through_the_failure_policy(polar_path, action):
    with FakeEngine("vllm", "0.32.0", always=action) as fake:
        client = client_for(polar_path, fake.url, max_attempts=2, on_error="nan")
        t0 = time.monotonic()
        got = client(SAMPLES[:4])
        assert all(math.isnan(r) for r in got)
        assert time.monotonic() - t0 < 20
        strict = client_for(polar_path, fake.url, max_attempts=2)
        with pytest.raises(ScoringError):
            strict(SAMPLES[:4])
        fake.always = None  # the server recovers: the same client scores again
        assert strict(SAMPLES[:4]) == expected(strict, SAMPLES[:4])
        client.close()
        strict.close()


# --- closing during a call ------------------------------------------------------------------------------------


def test_close_during_a_call_raises_client_closed_and_keeps_what_was_scored(polar_path):
    with FakeEngine("vllm", "0.32.0", delay=0.4) as fake:
        client = client_for(polar_path, fake.url, batch_size=8, max_in_flight=1)
        outcome = {}

        def call():
            try:
                outcome["rewards"] = client(SAMPLES[:64])
            except BaseException as exc:  # noqa: BLE001 - what came out is the point
                outcome["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(1.5)
        client.close()
        thread.join(timeout=10)
        assert not thread.is_alive()
        err = outcome.get("error")
        assert isinstance(err, ClientClosedError), outcome
        scored = [r for r in err.rewards if r is not None]
        assert scored  # what was scored before the close is still there
        want = expected(RewardModelClient(polar_path, server_type="vllm", server_address=fake.url), SAMPLES[:64])
        assert all(r is None or r == w for r, w in zip(err.rewards, want))


def test_async_aclose_during_a_call_raises_client_closed(polar_path):
    async def main(url):
        client = AsyncRewardModelClient(polar_path, server_type="vllm", server_address=url, batch_size=8,
                                        max_in_flight=1)
        task = asyncio.ensure_future(client(SAMPLES[:64]))
        await asyncio.sleep(1.0)
        await client.aclose()
        with pytest.raises(ClientClosedError):
            await asyncio.wait_for(task, 10)

    with FakeEngine("vllm", "0.32.0", delay=0.3) as fake:
        asyncio.run(main(fake.url))


def test_the_failure_message_counts_right():
    err = ScoringError({i: "boom" for i in range(1000)}, [None] * 1000)
    assert str(err) == "1000 of 1000 samples failed: samples 0-999: boom"
    err = ScoringError({0: "a", 1: "a", 5: "b", 9: "c", 10: "d", 11: "d"}, [None] * 12)
    assert str(err) == "6 of 12 samples failed: samples 0-1: a; sample 5: b; sample 9: c; and 2 more for 1 other reason(s)"


# --- input that cannot be encoded, in every field and entry point ----------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"prompt": LONE, "reference": "r", "output": "o"}, "prompt"),
        ({"prompt": "p", "reference": LONE, "output": "o"}, "reference"),
        ({"prompt": "p", "reference": "r", "output": LONE}, "output"),
        ({"prompt": [{"role": "user", "content": LONE}], "reference": "r", "output": "o"}, "prompt[0].content"),
    ],
)
def test_unencodable_text_names_the_sample_and_field_polar(polar_path, bad, field):
    client = RewardModelClient(polar_path)
    good = SAMPLES[0]
    for method in (client.encode, client.encode_ids, client):
        with pytest.raises(InvalidSampleError) as err:
            method([good, good, bad])
        assert (err.value.index, err.value.field) == (2, field)
        assert "lone surrogate" in str(err.value)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"prompt": LONE, "output": "o"}, "prompt"),
        ({"prompt": "p", "output": LONE}, "output"),
        ({"prompt": "p", "output": [{"role": "assistant", "content": LONE}]}, "output[0].content"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": LONE}]}, "messages[1].content"),
        ({"messages": [{"role": LONE, "content": "q"}, {"role": "assistant", "content": "a"}]}, "messages[0].role"),
    ],
)
def test_unencodable_text_names_the_sample_and_field_chat(chat_path, bad, field):
    client = RewardModelClient(chat_path)
    with pytest.raises(InvalidSampleError) as err:
        client([{"prompt": "p", "output": "o"}, bad])
    assert (err.value.index, err.value.field) == (1, field)


@pytest.mark.parametrize(
    "output, field",
    [([], "output"), ([{"role": "user", "content": "4"}], "output[0].role"),
     ([{"role": "assistant", "content": "4"}, {"role": "system", "content": "x"}], "output[1].role")],
)
def test_an_outcome_sample_must_end_with_an_assistant_turn(chat_path, output, field):
    client = RewardModelClient(chat_path)
    with pytest.raises(InvalidSampleError) as err:
        client([{"prompt": "2+2?", "output": "4"}, {"prompt": "2+2?", "output": output}])
    assert (err.value.index, err.value.field) == (1, field)
    assert isinstance(client({"prompt": "2+2?", "output": ""}), float)  # an empty string is a real answer


def test_the_error_names_the_sample_at_fault_in_mixed_data(chat_path):
    client = RewardModelClient(chat_path)
    orm = {"prompt": "2+2?", "output": "4"}
    polar = {"prompt": "2+2?", "reference": "4", "output": "4"}
    with pytest.raises(InvalidSampleError) as err:
        client([orm, orm, polar])
    assert (err.value.index, err.value.field) == (2, "reference")
