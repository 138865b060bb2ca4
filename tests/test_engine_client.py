"""The client against loopback fake engines: version selection, routes, retries, errors."""

from __future__ import annotations

import math
import time

import pytest

from rmclient import RewardModelClient, ScoringError
from tests.fake_engine import FakeEngine, reward_of

SAMPLES = [
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": out}
    for out in ("Beijing.", "Shanghai.", "北京", "", "A much longer answer " * 5)
]
FAST = dict(max_attempts=3, deadline=10.0)


def client_for(path, fake, **kw):
    return RewardModelClient(path, server_type=fake.engine, server_address=fake.url, **{**FAST, **kw})


@pytest.mark.parametrize(
    "engine, version, use_activation",
    [("vllm", "0.32.0+cpu", False), ("vllm", "0.12.0", False), ("vllm", "0.8.5", None),
     ("vllm", None, False), ("sglang", "0.5.23", None), ("sglang", None, None),
     ("lmdeploy", None, None)],
)
def test_rewards_in_input_order_as_ids(polar_path, engine, version, use_activation):
    with FakeEngine(engine, version) as fake:
        client = client_for(polar_path, fake)
        ids = client.encode_ids(SAMPLES)
        assert client(SAMPLES) == [reward_of(x) for x in ids]
        assert client(SAMPLES[1]) == reward_of(ids[1])
        body = fake.requests[0]["body"]
        sent = body.get("input_ids") or body.get("input")
        assert sent == ids  # exact ids, no re-tokenization on the server
        if engine == "vllm":
            assert body.get("use_activation") is use_activation
            assert "softmax" not in body and "activation" not in body
            assert body["model"] == "served-rm"  # read from /v1/models, not the local path
            assert body["add_special_tokens"] is False


@pytest.mark.parametrize("version", ["0.10.1.1", "0.11.0"])
def test_vllm_seq_cls_before_0_11_1_goes_to_classify_as_exact_text(polar_path, version):
    """0.10.1 - 0.11.0: seq-cls is raw only on /classify with ``activation: false``, which takes text only."""
    with FakeEngine("vllm", version) as fake:
        client = client_for(polar_path, fake)
        ids = client.encode_ids(SAMPLES)
        texts = client.encode(SAMPLES)
        assert client(SAMPLES) == [reward_of(t) for t in texts]
        body = fake.requests[0]["body"]
        assert fake.requests[0]["path"] == "/classify"
        assert body["activation"] is False and "use_activation" not in body and "softmax" not in body
        assert body["input"] == texts and body["add_special_tokens"] is True
        tok = client.tokenizer
        assert [tok(t)["input_ids"] for t in body["input"]] == ids  # the server's tokenization gives our ids
        assert client.score_ids(ids) == [reward_of(t) for t in texts]  # ids become the same text
        word = tok.encode("Beijing", add_special_tokens=False)
        letters = tok.convert_tokens_to_ids(list("Beijing"))
        assert len(word) < len(letters)  # spelt letter by letter: ids no tokenization gives
        odd = [[tok.bos_token_id] + letters]  # its text re-encodes to `word`: it cannot travel as text exactly
        with pytest.raises(ScoringError, match="takes text only"):
            client.score_ids(odd)


def test_vllm_reward_model_last_token(polar_path):
    with FakeEngine("vllm", "0.32.0", per_token=True) as fake:
        client = client_for(polar_path, fake)
        assert client(SAMPLES) == [reward_of(x) for x in client.encode_ids(SAMPLES)]


@pytest.mark.parametrize("engine", ["sglang", "vllm", "lmdeploy"])
def test_xtuner_compatible_request_methods_take_encode_output(polar_path, engine):
    with FakeEngine(engine, None) as fake:
        client = client_for(polar_path, fake)
        texts = client.encode(SAMPLES)
        method = getattr(client, f"{engine}_request_reward")
        assert method(texts) == [reward_of(t) for t in texts]
        assert method(texts[0]) == [reward_of(texts[0])]
        ids = client.encode_ids(SAMPLES)
        assert method(ids) == [reward_of(x) for x in ids]
        if engine == "vllm":
            assert fake.requests[0]["body"]["add_special_tokens"] is True  # text: the server adds BOS


def test_max_model_len_bounds_truncation(polar_path):
    with FakeEngine("vllm", "0.32.0", max_model_len=24) as fake:
        client = client_for(polar_path, fake, max_length=16384)
        client(SAMPLES)
        assert all(len(x) <= 24 for x in fake.requests[-1]["body"]["input"])
        assert max(len(x) for x in fake.requests[-1]["body"]["input"]) > 10


def test_retries_5xx_then_succeeds(polar_path):
    with FakeEngine("sglang", "0.5.23") as fake:
        client = client_for(polar_path, fake)
        fake.script = [500, 503]
        assert client(SAMPLES) == [reward_of(x) for x in client.encode_ids(SAMPLES)]
        assert len(fake.requests) == 3


def test_5xx_exhausts_attempts_and_reports_every_sample(polar_path):
    with FakeEngine("sglang", "0.5.23") as fake:
        client = client_for(polar_path, fake)
        fake.script = [500] * 1000
        with pytest.raises(ScoringError) as err:
            client(SAMPLES)
        assert sorted(err.value.failures) == list(range(len(SAMPLES)))
        assert all("/classify answered 500: scripted 500" in why for why in err.value.failures.values())
        assert err.value.rewards == [None] * len(SAMPLES)
        assert len(fake.requests) <= 40  # bounded: attempts per chunk, halving, retry budget


def test_4xx_is_not_retried_but_isolated_by_halving(polar_path):
    with FakeEngine("vllm", "0.32.0") as fake:
        client = client_for(polar_path, fake)
        fake.script = [400] * 1000
        with pytest.raises(ScoringError) as err:
            client(SAMPLES)
        assert sorted(err.value.failures) == list(range(5)) and "answered 400" in err.value.failures[3]
        assert len(fake.requests) == 2 * len(SAMPLES) - 1  # each sub-chunk tried once, never retried


def test_read_timeout_is_retried_and_bounded(polar_path):
    with FakeEngine("lmdeploy", stall=1.5) as fake:
        client = client_for(polar_path, fake, read_timeout=0.3, max_attempts=2)
        client(SAMPLES[:1])
        fake.script = ["stall"] * 10
        t0 = time.monotonic()
        with pytest.raises(ScoringError) as err:
            client(SAMPLES)
        assert all("timed out" in why for why in err.value.failures.values())
        assert time.monotonic() - t0 < 5


def test_one_stall_is_retried(polar_path):
    with FakeEngine("lmdeploy", stall=1.5) as fake:
        client = client_for(polar_path, fake, read_timeout=0.3)
        client(SAMPLES[:1])
        fake.script = ["stall"]
        assert client(SAMPLES) == [reward_of(x) for x in client.encode_ids(SAMPLES)]


def test_connection_refused(polar_path):
    with FakeEngine("vllm", "0.32.0") as fake:
        url = fake.url
    client = RewardModelClient(polar_path, server_type="vllm", server_address=url, max_attempts=2, deadline=5)
    with pytest.raises(ScoringError) as err:
        client(SAMPLES)
    assert all("ConnectError" in why for why in err.value.failures.values())


@pytest.mark.parametrize("action, message", [("garbage", "not JSON"), ("nan", "not finite"), ("short", "rewards, got")])
@pytest.mark.parametrize("engine", ["vllm", "sglang", "lmdeploy"])
def test_bad_bodies(polar_path, engine, action, message):
    with FakeEngine(engine, None) as fake:
        client = client_for(polar_path, fake)
        expected = [reward_of(x) for x in client.encode_ids(SAMPLES)]
        fake.script = [action]  # once: retried, and every reward is right
        assert client(SAMPLES) == expected
        fake.script = [action] * 1000  # always: reported, never a wrong or missing value returned
        with pytest.raises(ScoringError) as err:
            client(SAMPLES)
        assert err.value.failures and all(message in why for why in err.value.failures.values())
        for i, r in enumerate(err.value.rewards):
            assert r is None or r == expected[i]


def test_api_key_is_sent(polar_path):
    with FakeEngine("vllm", "0.32.0") as fake:
        client_for(polar_path, fake, api_key="s3cret")(SAMPLES[:1])
        assert fake.requests[0]["body"]["_auth"] == "Bearer s3cret"


def test_rewards_are_never_nan_or_none(polar_path):
    with FakeEngine("vllm", "0.32.0") as fake:
        rewards = client_for(polar_path, fake)(SAMPLES)
        assert all(isinstance(r, float) and math.isfinite(r) for r in rewards)


@pytest.mark.parametrize("shape", ["old", "new"])
def test_openrlhf_get_reward_both_response_shapes(polar_path, chat_path, shape):
    for path in (polar_path, chat_path):
        samples = SAMPLES if path == polar_path else [{"prompt": "q", "output": o} for o in ("a", "bb", "")]
        with FakeEngine("openrlhf", shape) as fake:
            client = client_for(path, fake)
            ids = client.encode_ids(samples)
            texts = [q for r in fake.requests for q in r["body"]["query"]]
            rewards = client(samples)
            texts = [q for r in fake.requests for q in r["body"]["query"]]
            # the whole text the model sees, BOS included: the server tokenizes it adding nothing
            assert [client.tokenizer.encode(t, add_special_tokens=False) for t in texts] == ids
            assert texts[0].startswith("<s>")
            assert rewards == [reward_of(t) for t in texts]
            fake.script = ["nan"] * 100
            with pytest.raises(ScoringError, match="not finite"):
                client(samples)


def test_clients_pickle_as_their_arguments(polar_path):
    """Ray and cloudpickle ship a client to workers: the copy rebuilds itself and scores the same."""
    import asyncio
    import pickle

    from rmclient import AsyncRewardModelClient

    with FakeEngine("vllm", "0.32.0") as fake:
        client = client_for(polar_path, fake, max_in_flight=3, on_error="nan")
        want = client(SAMPLES)  # its loop thread and pool exist now: they are not pickled
        copy = pickle.loads(pickle.dumps(client))
        assert copy is not client and copy.on_error == "nan" and copy._pool_options["max_in_flight"] == 3
        assert copy(SAMPLES) == want
        copy.close()
        client.close()
        aclient = pickle.loads(pickle.dumps(AsyncRewardModelClient(polar_path, server_type="vllm",
                                                                   server_address=fake.url)))
        assert asyncio.run(aclient(SAMPLES)) == want
    local = RewardModelClient(polar_path)
    rewards = local(SAMPLES)  # the model is loaded: the copy loads its own
    assert pickle.loads(pickle.dumps(local))(SAMPLES) == rewards
