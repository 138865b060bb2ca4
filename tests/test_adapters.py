"""Engine adapters: exact request bodies per version range, response parsing, every error case.

Response bodies are shaped as ENGINES.md (sections 3-5) describes each engine's answer.
"""

from __future__ import annotations

import logging
import math
import sys

import pytest

from rmclient.adapters import (
    ADAPTERS,
    LmdeployAdapter,
    OpenrlhfAdapter,
    Request,
    SglangAdapter,
    VllmAdapter,
    get_adapter,
    version_tuple,
)
from rmclient.adapters import lmdeploy as lmdeploy_mod
from rmclient.adapters import sglang as sglang_mod
from rmclient.adapters import vllm as vllm_mod
from rmclient.errors import ConfigurationError, ResponseError

# POLAR-7B published expectations ("Beijing." vs "Shanghai." against "Beijing.").
R0, R1 = -0.5702977776527405, -11.030370712280273
IDS = [[1, 333, 92543, 92527], [1, 444, 92527]]
TEXTS = ["Beijing.<|reward|>Beijing.[UNUSED_TOKEN_130]", "Beijing.<|reward|>Shanghai.[UNUSED_TOKEN_130]"]


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.32.0+cpu", (0, 32)),
        ("0.10.1.1", (0, 10, 1, 1)),
        ("0.5.4.post1", (0, 5, 4)),
        ("0.11.1.dev12+gabcdef", (0, 11, 1)),
        ("0.12", (0, 12)),
        ("0.12.0", (0, 12)),
        ("1.0.0", (1,)),
        ("v0.9.1", (0, 9, 1)),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_version_tuple(text, expected, monkeypatch):
    assert version_tuple(text) == expected
    # Same answer from the tiny fallback parser when packaging is not installed.
    monkeypatch.setitem(sys.modules, "packaging.version", None)
    assert version_tuple(text) == expected


@pytest.mark.parametrize("module", [vllm_mod, sglang_mod, lmdeploy_mod])
def test_tables_are_contiguous_and_cite_their_range(module):
    table = module.TABLE
    for row, nxt in zip(table, table[1:]):
        assert row.max_version == nxt.min_version
        assert version_tuple(row.min_version) < version_tuple(row.max_version)
    assert table[-1].max_version is None
    assert all(row.note for row in table)
    assert module.UNKNOWN.note.startswith("unknown version")


@pytest.mark.parametrize(
    "version, row_min",
    [
        ("0.7.0", "0.7"), ("0.7.3", "0.7"), ("0.8.0", "0.8"), ("0.10.0", "0.8"),
        ("0.10.1", "0.10.1"), ("0.10.1.1", "0.10.1"), ("0.10.2", "0.10.1"), ("0.11.0", "0.10.1"),
        ("0.11.1", "0.11.1"), ("0.13.0", "0.11.1"), ("0.15.1", "0.11.1"),
        ("0.16.0", "0.16"), ("0.32.0+cpu", "0.16"), ("0.33.0", "0.16"), ("1.2.0", "0.16"),
    ],
)
def test_vllm_row_selection(version, row_min):
    assert VllmAdapter(version, model="rm").row.min_version == row_min


@pytest.mark.parametrize(
    "server_type, version",
    [("vllm", "0.6.6"), ("sglang", "0.4.2.post4"), ("lmdeploy", "0.9.0")],
)
def test_version_older_than_table_is_refused(server_type, version):
    with pytest.raises(ConfigurationError, match="oldest supported"):
        get_adapter(server_type, version, model="rm")


@pytest.mark.parametrize("version", [None, "not-a-version"])
@pytest.mark.parametrize("server_type", ["vllm", "sglang", "lmdeploy"])
def test_unknown_version_uses_unknown_row_and_logs(server_type, version, caplog):
    with caplog.at_level(logging.INFO):
        adapter = get_adapter(server_type, version)
    assert adapter.row is type(adapter).unknown_row
    logged = [r for r in caplog.records if r.name == f"rmclient.adapters.{server_type}"]
    assert logged and "unknown version" in logged[0].getMessage()


# --------------------------------------------------------------------------- get_adapter


def test_get_adapter_names_and_kwargs():
    assert ADAPTERS == {
        "sglang": SglangAdapter, "vllm": VllmAdapter, "lmdeploy": LmdeployAdapter, "openrlhf": OpenrlhfAdapter,
    }
    a = get_adapter("vLLM", "0.16.0", model="rm", endpoint="classify")
    assert isinstance(a, VllmAdapter)
    assert (a.version, a.model, a.endpoint, a.score_path) == ("0.16.0", "rm", "classify", "/classify")


def test_get_adapter_unknown_type_lists_valid_names():
    with pytest.raises(ConfigurationError, match="'tgi'; valid: lmdeploy, openrlhf, sglang, vllm"):
        get_adapter("tgi")


def test_routes():
    assert (VllmAdapter.health_path, VllmAdapter.version_path, VllmAdapter.models_path) == (
        "/health", "/version", "/v1/models")
    assert (SglangAdapter.health_path, SglangAdapter.version_path) == ("/health", "/get_server_info")
    assert (LmdeployAdapter.health_path, LmdeployAdapter.version_path) == ("/health", None)
    assert VllmAdapter.parse_version({"version": "0.32.0+cpu"}) == "0.32.0+cpu"
    assert SglangAdapter.parse_version({"version": "0.5.23", "model_path": "m"}) == "0.5.23"
    assert VllmAdapter.parse_version({"detail": "Not Found"}) is None
    assert VllmAdapter.parse_version("0.9.2") is None
    assert VllmAdapter.parse_version({"version": 9}) is None


@pytest.mark.parametrize("server_type", ["vllm", "sglang", "lmdeploy"])
def test_batch_must_be_all_ids_or_all_text_and_not_empty(server_type):
    adapter = get_adapter(server_type, model="rm")
    with pytest.raises(TypeError, match="all token ids or all text"):
        adapter.build_request([[1, 2], "text"])
    with pytest.raises(ValueError, match="empty batch"):
        adapter.build_request([])


# --------------------------------------------------------------------------- vLLM requests


def _pooling(input_, add_special_tokens, **extra):
    return Request("POST", "/pooling", {"model": "rm", "input": input_, "encoding_format": "float",
                                        "add_special_tokens": add_special_tokens, **extra})


@pytest.mark.parametrize("version", ["0.7.3", "0.8.5", "0.10.0", "0.10.1.1", "0.11.0"])
def test_vllm_pooling_request_before_use_activation(version):
    a = VllmAdapter(version, model="rm")
    assert a.build_request(IDS) == _pooling(IDS, False)
    assert a.build_request(TEXTS) == _pooling(TEXTS, True)


@pytest.mark.parametrize("version", ["0.11.1", "0.13.0", "0.15.1", "0.16.0", "0.32.0+cpu", None])
def test_vllm_pooling_request_with_use_activation(version):
    a = VllmAdapter(version, model="rm")
    assert a.build_request(IDS) == _pooling(IDS, False, use_activation=False)
    assert a.build_request(TEXTS) == _pooling(TEXTS, True, use_activation=False)


def test_vllm_model_optional_after_0_7_and_required_in_0_7():
    assert VllmAdapter("0.9.2").build_request([[5, 6]]).json == {
        "input": [[5, 6]], "encoding_format": "float", "add_special_tokens": False}
    with pytest.raises(ConfigurationError, match="requires model="):
        VllmAdapter("0.7.3")
    assert VllmAdapter("0.7.3", model="internlm/POLAR-7B").build_request([[5]]).json["model"] == "internlm/POLAR-7B"


def test_vllm_ids_are_plain_ints():
    class Tok(int):
        pass

    body = VllmAdapter("0.16", model="rm").build_request([(Tok(1), 2)]).json
    assert body["input"] == [[1, 2]] and type(body["input"][0][0]) is int


@pytest.mark.parametrize("endpoint", ["pooling", "classify"])
@pytest.mark.parametrize("version", [r.min_version for r in vllm_mod.TABLE] + ["0.12.0", "0.13.0", None])
def test_vllm_never_sends_softmax_or_activation(version, endpoint):
    a = VllmAdapter(version, model="rm", endpoint=endpoint)
    body = a.build_request(TEXTS).json
    assert "softmax" not in body and "activation" not in body
    assert body.get("use_activation", False) is False


def test_vllm_classify_requests():
    assert VllmAdapter("0.16.0", model="rm", endpoint="classify").build_request(IDS) == Request(
        "POST", "/classify",
        {"model": "rm", "input": IDS, "add_special_tokens": False, "use_activation": False})
    assert VllmAdapter("0.12.0", model="rm", endpoint="classify").build_request(TEXTS) == Request(
        "POST", "/classify",
        {"model": "rm", "input": TEXTS, "add_special_tokens": True, "use_activation": False})
    assert VllmAdapter("0.9.2", model="rm", endpoint="classify").build_request(TEXTS).json == {
        "model": "rm", "input": TEXTS, "add_special_tokens": True}
    with pytest.raises(ConfigurationError, match="does not accept token ids"):
        VllmAdapter("0.15.1", model="rm", endpoint="classify").build_request(IDS)
    with pytest.raises(ConfigurationError, match="'reward'"):
        VllmAdapter("0.16.0", endpoint="reward")


@pytest.mark.parametrize("version, warns", [("0.10.0", False), ("0.10.1", True), ("0.11.0", True), ("0.11.1", False)])
def test_vllm_warns_when_raw_needs_the_launch_flag(version, warns, caplog):
    with caplog.at_level(logging.WARNING, logger="rmclient.adapters.vllm"):
        VllmAdapter(version, model="rm")
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(msgs) is warns
    if warns:
        assert "--override-pooler-config" in msgs[0] and '"softmax": false' in msgs[0]


# --------------------------------------------------------------------------- vLLM responses


def _pooling_body(items):
    return {"id": "pool-1", "object": "list", "created": 1, "model": "rm", "data": items,
            "usage": {"prompt_tokens": 7, "total_tokens": 7}}


def test_vllm_reward_model_per_token_rewards_last_one_wins():
    # *ForRewardModel (InternLM2, Qwen2): one [r] per token; the reward is data[-1][0].
    body = _pooling_body([
        {"index": 0, "object": "pooling", "data": [[0.1], [2.5], [R0]]},
        {"index": 1, "object": "pooling", "data": [[-3.0], [R1]]},
    ])
    assert VllmAdapter("0.32.0", model="rm").parse_response(body, 2) == [R0, R1]


def test_vllm_seq_cls_and_single_token_reward_model():
    body = _pooling_body([{"index": 0, "object": "pooling", "data": [R0]},
                          {"index": 1, "object": "pooling", "data": [[R1]]}])
    assert VllmAdapter("0.9.2").parse_response(body, 2) == [R0, R1]


def test_vllm_results_reordered_by_index():
    body = _pooling_body([{"index": 2, "object": "pooling", "data": [3.0]},
                          {"index": 0, "object": "pooling", "data": [[9.0], [1]]},
                          {"index": 1, "object": "pooling", "data": [2.0]}])
    out = VllmAdapter(None).parse_response(body, 3)
    assert out == [1.0, 2.0, 3.0] and all(type(x) is float for x in out)


def test_vllm_classify_response():
    body = {"id": "classify-1", "object": "list", "created": 1, "model": "rm", "usage": {},
            "data": [{"index": 1, "label": "LABEL_0", "probs": [R1], "num_classes": 1},
                     {"index": 0, "label": "LABEL_0", "probs": [R0], "num_classes": 1}]}
    assert VllmAdapter("0.16.0", endpoint="classify").parse_response(body, 2) == [R0, R1]


def _data(*values):
    return _pooling_body([{"index": i, "object": "pooling", "data": v} for i, v in enumerate(values)])


@pytest.mark.parametrize(
    "body, n, message",
    [
        (_data([R0]), 2, "expected 2 rewards, got 1"),
        (_data([R0], [R1], [0.0]), 2, "expected 2 rewards, got 3"),
        (_data([float("nan")], [R1]), 2, "reward 0 is not finite: nan"),
        (_data([R0], [[1.0], [float("inf")]]), 2, "reward 1 is not finite: inf"),
        (_data(["0.5"], [R1]), 2, "reward 0 is not a number: '0.5'"),
        (_data([None], [R1]), 2, "reward 0 is not a number: None"),
        (_data([True]), 1, "reward 0 is not a number: True"),
        (_data([R0, R1]), 1, r"data\[0\] 'data' is not a one-element list"),
        (_data([[R0, R1]]), 1, r"data\[0\] 'data' \(last token\) is not a one-element list"),
        (_data([]), 1, r"data\[0\] 'data' is not a one-element list"),
        (_data(0.5), 1, r"data\[0\] 'data' is not a one-element list"),
        (_data([[]]), 1, "is not a one-element list"),
        ({"object": "error", "message": "boom"}, 1, "response has no 'data' field"),
        ({"data": {"index": 0}}, 1, "'data' is not a list: dict"),
        ({"data": [{"object": "pooling", "data": [1.0]}]}, 1, r"data\[0\] has no 'index' field"),
        ({"data": [{"index": 0, "object": "pooling"}]}, 1, r"data\[0\] has no 'data' field"),
        ({"data": ["x"]}, 1, r"data\[0\] has no 'index' field"),
        ({"data": [{"index": 0, "data": [1.0]}, {"index": 0, "data": [2.0]}]}, 2, "index 0 appears more than once"),
        ({"data": [{"index": 0, "data": [1.0]}, {"index": 2, "data": [2.0]}]}, 2, "invalid index 2"),
        ({"data": [{"index": "0", "data": [1.0]}]}, 1, "invalid index '0'"),
        ({"data": [{"index": -1, "data": [1.0]}]}, 1, "invalid index -1"),
        ([{"index": 0, "data": [1.0]}], 1, "response has no 'data' field"),
        ("Internal Server Error", 1, "response has no 'data' field"),
        (None, 1, "response has no 'data' field"),
    ],
)
def test_vllm_response_errors(body, n, message):
    with pytest.raises(ResponseError, match=message) as info:
        VllmAdapter("0.32.0", model="rm").parse_response(body, n, "http://h:8000/pooling")
    assert info.value.endpoint == "http://h:8000/pooling"
    assert info.value.body is body
    assert "body: " in str(info.value)


def test_vllm_classify_response_errors():
    a = VllmAdapter("0.16.0", endpoint="classify")
    with pytest.raises(ResponseError, match=r"vllm /classify: data\[0\] has no 'probs' field"):
        a.parse_response({"data": [{"index": 0, "data": [1.0]}]}, 1)
    with pytest.raises(ResponseError, match=r"data\[0\] 'probs' is not a one-element list"):
        a.parse_response({"data": [{"index": 0, "probs": [0.2, 0.8]}]}, 1)


# --------------------------------------------------------------------------- sglang


@pytest.mark.parametrize("version", ["0.4.3", "0.4.10.post2", "0.5.4.post1", "0.5.23", None])
def test_sglang_requests(version):
    a = SglangAdapter(version, model="ignored")
    assert a.build_request(IDS) == Request("POST", "/classify", {"input_ids": IDS})
    assert a.build_request(TEXTS) == Request("POST", "/classify", {"text": TEXTS})
    assert a.build_request([[7]]).json == {"input_ids": [[7]]}
    assert a.score_path != "/v1/classify"


def _sg(score, rid="a"):
    return {"embedding": [score], "meta_info": {"id": rid, "prompt_tokens": 4, "e2e_latency": 0.01}}


def test_sglang_list_response_in_input_order():
    assert SglangAdapter("0.5.23").parse_response([_sg(R0), _sg(R1, "b")], 2) == [R0, R1]


def test_sglang_single_dict_response():
    assert SglangAdapter("0.4.3").parse_response(_sg(R1), 1) == [R1]


@pytest.mark.parametrize(
    "body, n, message",
    [
        ([_sg(R0)], 2, "expected 2 rewards, got 1"),
        (_sg(R0), 2, "expected 2 rewards, got 1"),
        ([_sg(R0), _sg(float("nan"))], 2, "reward 1 is not finite: nan"),
        ([_sg(float("-inf"))], 1, "reward 0 is not finite: -inf"),
        ([_sg("1.0")], 1, "reward 0 is not a number: '1.0'"),
        ([{"meta_info": {}}], 1, "result 0 has no 'embedding' field"),
        (["x"], 1, "result 0 has no 'embedding' field"),
        ([{"embedding": [0.1, 0.9], "meta_info": {}}], 1, "result 0 'embedding' is not a one-element list"),
        ([{"embedding": 0.1, "meta_info": {}}], 1, "result 0 'embedding' is not a one-element list"),
        ({"error": {"message": "Either text or input_ids should be provided."}}, 1, "has no 'embedding' field"),
        ("oops", 1, "expected a list of results, got str"),
        (None, 1, "expected a list of results, got NoneType"),
    ],
)
def test_sglang_response_errors(body, n, message):
    with pytest.raises(ResponseError, match=message) as info:
        SglangAdapter("0.5.23").parse_response(body, n)
    assert info.value.endpoint == "sglang /classify"


# --------------------------------------------------------------------------- lmdeploy


@pytest.mark.parametrize(
    "version, max_in_flight",
    [("0.9.1", 1), ("0.9.2.post1", 1), ("0.11.1", 1), ("0.12.0", None), ("0.12.3", None), ("0.18.0", None), (None, 1)],
)
def test_lmdeploy_max_in_flight(version, max_in_flight):
    assert LmdeployAdapter(version).max_in_flight == max_in_flight


def test_lmdeploy_requests():
    assert LmdeployAdapter("0.12.0").build_request(IDS) == Request("POST", "/pooling", {"input": IDS})
    assert LmdeployAdapter(None, model="POLAR-7B").build_request(TEXTS) == Request(
        "POST", "/pooling", {"model": "POLAR-7B", "input": TEXTS})
    # A single sample is still a batch: [[ids]], never the ambiguous flat [ids].
    assert LmdeployAdapter("0.9.1").build_request([[1, 2, 3]]).json == {"input": [[1, 2, 3]]}


def _lm(*items):
    return {"id": "pool-x", "object": "list", "created": 1, "model": "POLAR-7B",
            "data": [{"index": i, "object": "pooling", "data": v} for i, v in items],
            "usage": {"prompt_tokens": 9, "total_tokens": 9, "completion_tokens": 0}}


def test_lmdeploy_response_reordered_by_index():
    assert LmdeployAdapter("0.18.0").parse_response(_lm((1, R1), (0, R0)), 2) == [R0, R1]
    assert LmdeployAdapter("0.18.0").parse_response(_lm((0, 3)), 1) == [3.0]


@pytest.mark.parametrize(
    "body, n, message",
    [
        (_lm((0, R0)), 2, "expected 2 rewards, got 1"),
        (_lm((0, R0), (1, float("nan"))), 2, "reward 1 is not finite: nan"),
        (_lm((0, "bad")), 1, "reward 0 is not a number: 'bad'"),
        (_lm((0, [R0])), 1, r"reward 0 is not a number: \[-0.57"),
        (_lm((0, R0), (0, R1)), 2, "index 0 appears more than once"),
        ({"data": [{"index": 0, "object": "pooling"}]}, 1, r"data\[0\] has no 'data' field"),
        ({"detail": "Not Found"}, 1, "response has no 'data' field"),
        (42, 1, "response has no 'data' field"),
    ],
)
def test_lmdeploy_response_errors(body, n, message):
    with pytest.raises(ResponseError, match=message):
        LmdeployAdapter("0.18.0").parse_response(body, n)


def test_error_message_shows_what_came_back():
    body = _lm((0, float("nan")))
    with pytest.raises(ResponseError) as info:
        LmdeployAdapter("0.18.0").parse_response(body, 1, "http://127.0.0.1:23333/pooling")
    text = str(info.value)
    assert text.startswith("http://127.0.0.1:23333/pooling: reward 0 is not finite: nan; body: {")
    assert "'object': 'pooling'" in text
    assert math.isnan(info.value.body["data"][0]["data"])


# -- OpenRLHF serve_rm -----------------------------------------------------------------


def test_openrlhf_request_is_text_only():
    a = OpenrlhfAdapter()
    req = a.build_request(["<s>q\nr<|reward|>q\no[UNUSED_TOKEN_130]", "<s>x"])
    assert (req.method, req.path, req.json) == (
        "POST", "/get_reward", {"query": ["<s>q\nr<|reward|>q\no[UNUSED_TOKEN_130]", "<s>x"]},
    )
    assert (a.version_path, a.models_path, a.accepts_ids) == (None, None, False)
    with pytest.raises(ConfigurationError, match="text only"):
        a.build_request([[1, 2, 3]])


@pytest.mark.parametrize("body", [
    {"rewards": [0.5, -2.0]},                                                         # before scores/extra_logs
    {"rewards": [0.5, -2.0], "scores": [0.5, -2.0], "extra_logs": {"dummy_scores": [0.5, -2.0]}},
])
def test_openrlhf_both_response_shapes(body):
    assert OpenrlhfAdapter().parse_response(body, 2) == [0.5, -2.0]


@pytest.mark.parametrize("body, message", [
    ({"scores": [1.0, 2.0]}, "no 'rewards'"),
    ({"rewards": 1.0}, "not a list"),
    ({"rewards": [1.0]}, "expected 2 rewards, got 1"),
    ({"rewards": [1.0, float("nan")]}, "not finite"),
    ([1.0, 2.0], "no 'rewards'"),
])
def test_openrlhf_bad_bodies(body, message):
    with pytest.raises(ResponseError, match=message):
        OpenrlhfAdapter().parse_response(body, 2)
