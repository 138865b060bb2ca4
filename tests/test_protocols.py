"""Both halves of each wire protocol agree: what a client half sends, the server half reads back
as the same inputs; what the server half answers, the client half reads back as the same rewards.

Pure data for sglang ``/classify``, OpenRLHF ``/get_reward`` and our own server (no sockets),
then one real ``rmclient serve`` (in-process, loopback) scored through ``server_type="rmclient"``.
"""

from __future__ import annotations

import json

import pytest

from rmclient.adapters import ADAPTERS, OpenrlhfAdapter, RmclientAdapter, SglangAdapter
from rmclient.adapters.openrlhf import get_reward_response, parse_get_reward_request
from rmclient.adapters.rmclient import parse_rewards_request, rewards_request, rewards_response
from rmclient.adapters.sglang import classify_response, parse_classify_request
from rmclient.errors import InvalidSampleError, ProtocolError

IDS = [[1, 5, 9, 2], [1, 7], [1, 3, 3, 3, 3, 3, 92543]]
TEXTS = ["<s>Hello, world", "<s>中文 and emoji 🙂", ""]
REWARDS = [0.25, -3.5, 1e-7]


def wire(body):
    """What arrives on the other side: the body through JSON."""
    return json.loads(json.dumps(body))


@pytest.mark.parametrize("adapter", [SglangAdapter(), RmclientAdapter()], ids=["sglang", "rmclient"])
@pytest.mark.parametrize("inputs, kind", [(IDS, "ids"), (TEXTS, "text")], ids=["ids", "text"])
def test_classify_halves_agree(adapter, inputs, kind):
    request = adapter.build_request(inputs)
    assert (request.method, request.path) == ("POST", "/classify")
    got_kind, items, single = parse_classify_request(wire(request.json))
    assert (got_kind, items, single) == (kind, inputs, False)
    lengths = [len(x) for x in inputs]
    answer = wire(classify_response(REWARDS, lengths, single, latency=0.01))
    assert adapter.parse_response(answer, len(inputs)) == REWARDS
    assert [r["meta_info"]["prompt_tokens"] for r in answer] == lengths


def test_a_single_classify_input_answers_one_dict_the_client_half_reads():
    kind, items, single = parse_classify_request({"input_ids": IDS[0]})
    assert (kind, items, single) == ("ids", [IDS[0]], True)
    answer = wire(classify_response([REWARDS[0]], [len(IDS[0])], single))
    assert isinstance(answer, dict)
    assert SglangAdapter().parse_response(answer, 1) == [REWARDS[0]]
    assert parse_classify_request({"text": "one", "model": "ignored"}) == ("text", ["one"], True)


@pytest.mark.parametrize(
    "body, error, field, index",
    [
        ({}, ProtocolError, "text", None),
        ({"text": ["a"], "input_ids": [[1]]}, ProtocolError, "text", None),
        ({"text": 5}, ProtocolError, "text", None),
        ({"text": ["a", 7]}, InvalidSampleError, "text", 1),
        ({"input_ids": "1 2 3"}, ProtocolError, "input_ids", None),
        ({"input_ids": [[1, 2], [3, True]]}, InvalidSampleError, "input_ids", 1),
        ({"input_ids": [[1, 2], [3, 4.0]]}, InvalidSampleError, "input_ids", 1),
        ({"input_ids": [[1], 2]}, InvalidSampleError, "input_ids", 1),
    ],
)
def test_the_classify_server_half_names_what_is_wrong(body, error, field, index):
    with pytest.raises(error) as info:
        parse_classify_request(body)
    assert (info.value.field, info.value.index) == (field, index)


def test_get_reward_halves_agree():
    adapter = OpenrlhfAdapter()
    request = adapter.build_request(TEXTS)
    assert (request.method, request.path) == ("POST", "/get_reward")
    assert parse_get_reward_request(wire(request.json)) == TEXTS
    answer = wire(get_reward_response(REWARDS))
    assert answer["scores"] == answer["rewards"]
    assert adapter.parse_response(answer, len(TEXTS)) == REWARDS
    assert parse_get_reward_request({"query": "whole", "prompts": ["ignored"]}) == ["whole"]


@pytest.mark.parametrize(
    "body, error, field, index",
    [({}, ProtocolError, "query", None), ({"query": {"a": 1}}, ProtocolError, "query", None),
     ({"query": ["a", None]}, InvalidSampleError, "query", 1)],
)
def test_the_get_reward_server_half_names_what_is_wrong(body, error, field, index):
    with pytest.raises(error) as info:
        parse_get_reward_request(body)
    assert (info.value.field, info.value.index) == (field, index)


def test_rmclient_adapter_is_registered_sends_ids_and_reads_our_server_info():
    assert ADAPTERS["rmclient"] is RmclientAdapter
    adapter = RmclientAdapter()
    assert (adapter.engine, adapter.inputs, adapter.score_path, adapter.health_path) == (
        "rmclient", "ids", "/classify", "/health")
    assert adapter.build_request(IDS).json == {"input_ids": IDS}
    # our server reports max_req_input_len in sglang's form: the longest input + 1
    info = adapter.read_info({
        "/server_info": {"server": "rmclient", "rmclient_version": "1.2.3", "served_model_name": "rm",
                         "max_model_len": 4096, "max_req_input_len": 4097},
        "/v1/models": {"object": "list", "data": [{"id": "rm", "max_model_len": 4096}]},
    })
    assert (info.model, info.max_input_len, info.version) == ("rm", 4096, "1.2.3")
    # without /server_info, /v1/models' max_model_len is the longest input itself
    info = adapter.read_info({"/v1/models": {"object": "list", "data": [{"id": "rm", "max_model_len": 512}]}})
    assert (info.model, info.max_input_len) == ("rm", 512)


def test_native_rewards_halves_agree():
    samples = [{"prompt": "p", "reference": "r", "output": "o"}, {"prompt": "q", "output": "a"}]
    assert parse_rewards_request(wire(rewards_request(samples, return_encodings=True))) == (samples, True)
    assert parse_rewards_request({"samples": samples[0]}) == ([samples[0]], False)  # one dict is one sample
    answer = wire(rewards_response("rm", REWARDS[:2], [4, 2], [("t0", [1, 2, 3, 4]), ("t1", [1, 2])]))
    assert answer == {"model": "rm", "rewards": REWARDS[:2], "num_tokens": [4, 2],
                      "encodings": [{"text": "t0", "input_ids": [1, 2, 3, 4]}, {"text": "t1", "input_ids": [1, 2]}]}
    assert "encodings" not in rewards_response("rm", [1.0], [3])
    for body, field in (({}, "samples"), ({"samples": "x"}, "samples")):
        with pytest.raises(ProtocolError) as info:
            parse_rewards_request(body)
        assert info.value.field == field


# -- a real server ------------------------------------------------------------------------

POLAR = [
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."},
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Shanghai."},
    {"prompt": "Write a poem " * 12, "reference": "Roses are red.", "output": "Violets are blue " * 5},
]


def test_server_type_rmclient_scores_exact_ids_on_our_server_like_in_process(polar_path):
    pytest.importorskip("aiohttp")
    from rmclient import RewardModelClient
    from rmclient.serve import RewardServer, ServerThread

    local = RewardModelClient(polar_path)
    expected = local(POLAR)
    server = RewardServer(polar_path, served_model_name="tiny-polar", max_model_len=1024)
    with ServerThread(server) as s:
        with RewardModelClient(polar_path, server_type="rmclient", server_address=s.url) as remote:
            assert remote(POLAR) == pytest.approx(expected, abs=1e-5)
            assert remote.score_ids(local.encode_ids(POLAR)) == pytest.approx(expected, abs=1e-5)
            # learnt from /server_info (max_req_input_len = longest + 1), read right: exactly 1024
            assert remote.effective_max_length() == 1024
        stats = server.stats()
        scored = {route: server.metrics.registry.get_sample_value("rmclient_samples_total", {"route": route})
                  for route in ("/classify", "/get_reward", "/v1/rewards")}
    assert stats["http_errors"] == {}
    assert scored == {"/classify": 2 * len(POLAR), "/get_reward": None, "/v1/rewards": None}  # ids to /classify
