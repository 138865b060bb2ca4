"""Same sample, same ids, on every path: the effective max length is the smallest of the user's
``max_length``, the model's own context (its config) and the server's limit, on every backend.

A 12k-token POLAR sample on a model whose config allows 4096 positions goes in-process, through
``rmclient serve``'s native route, through the sglang client and the OpenRLHF client pointed at
``rmclient serve``, and through fake vLLM/sglang/lmdeploy engines: each path encodes it to the
same ids (the training rule at 4096) and scores it to the same reward.
"""

from __future__ import annotations

import logging

import pytest

from rmclient import RewardModelClient
from rmclient.errors import InvalidSampleError
from rmclient.modelinfo import context_length
from rmclient.serve import RewardServer, ServerThread
from tests.fake_engine import FakeEngine, reward_of

LONG = {"prompt": "p q r " * 2000, "reference": "ref " * 1500, "output": "out " * 1500}
SHORT = {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."}
SAMPLES = [LONG, SHORT]
ABS = 1e-5


@pytest.fixture(scope="module")
def local(polar_path):
    return RewardModelClient(polar_path)


@pytest.fixture(scope="module")
def server(polar_path):
    with ServerThread(RewardServer(polar_path)) as s:
        yield s


def test_in_process_encoding_stops_at_the_models_context(local, caplog):
    assert context_length(local.config) == 4096 and local.max_length == 16384
    with caplog.at_level(logging.INFO, logger="rmclient.client"):
        ids = local.encode_ids(SAMPLES)
    assert len(local.tokenizer(LONG["prompt"])["input_ids"]) > 12000  # far past the model's positions
    assert 4090 <= len(ids[0]) <= 4096 and ids[0][-1] == local.reward_token_id
    assert "lowered to the model's context: 4096" in caplog.text
    # the training rule at 4096 is what the 16384 default would give a model of 4096 positions
    assert ids == RewardModelClient(local.path, max_length=4096).encode_ids(SAMPLES)
    with pytest.raises(InvalidSampleError, match="sample 0, field 'input_ids': 4097 tokens exceed the model's context"):
        local.score_ids([(ids[0] * 2)[:4097]])


def test_every_path_through_rmclient_serve_gives_the_same_ids_and_rewards(local, server, polar_path):
    import httpx

    ids = local.encode_ids(SAMPLES)
    want = local(SAMPLES)
    native = httpx.post(server.url + "/v1/rewards", json={"samples": SAMPLES, "return_encodings": True}, timeout=120)
    assert native.status_code == 200, native.text
    assert [e["input_ids"] for e in native.json()["encodings"]] == ids
    assert native.json()["rewards"] == pytest.approx(want, abs=ABS)
    for server_type in ("sglang", "openrlhf"):
        with RewardModelClient(polar_path, server_type=server_type, server_address=server.url) as remote:
            assert remote.encode_ids(SAMPLES) == ids, server_type  # learnt 4096 from the server, not 4095
            assert remote.effective_max_length() == 4096
            assert remote(SAMPLES) == pytest.approx(want, abs=ABS), server_type


@pytest.mark.parametrize(
    "engine, version, max_model_len, limit",
    [
        ("vllm", "0.32.0", 8192, 4096),      # the model's context is smaller than the server's
        ("vllm", "0.32.0", 2048, 2048),      # the server's is smaller: vLLM takes max_model_len itself
        ("sglang", "0.5.23", 2048, 2041),    # sglang: len < max_req_input_len = (2048 - 1) - 5
        ("sglang", "0.4.3.post4", 2048, 2041),  # no max_model_len on /v1/models: /get_server_info has it
        ("lmdeploy", "0.18.0", None, 4096),  # no length route: the model's context
    ],
)
def test_engines_get_the_smallest_limit(polar_path, engine, version, max_model_len, limit):
    with FakeEngine(engine, version, max_model_len=max_model_len) as fake:
        client = RewardModelClient(polar_path, server_type=engine, server_address=fake.url, engine_version=version)
        ids = client.encode_ids(SAMPLES)
        assert client.effective_max_length() == limit
        assert ids == RewardModelClient(polar_path, max_length=limit).encode_ids(SAMPLES)
        assert client(SAMPLES) == [reward_of(x) for x in ids]
        assert fake.longest <= limit
