"""Engine adapters: exact request bodies per version range, response parsing, every error case.

Response bodies are shaped as each engine's source answers (the adapters' docstrings cite the files).
"""

from __future__ import annotations

import logging
import math

import pytest

from rmclient.adapters import (
    ADAPTERS,
    LmdeployAdapter,
    OpenaiAdapter,
    OpenrlhfAdapter,
    Request,
    RmclientAdapter,
    ServerInfo,
    SglangAdapter,
    VllmAdapter,
    get_adapter,
    engine_version,
)
from rmclient.adapters import lmdeploy as lmdeploy_mod
from rmclient.adapters import sglang as sglang_mod
from rmclient.adapters import vllm as vllm_mod
from rmclient.errors import ConfigurationError, ResponseError

# POLAR-7B published expectations ("Beijing." vs "Shanghai." against "Beijing.").
R0, R1 = -0.5702977776527405, -11.030370712280273
IDS = [[1, 333, 92543, 92527], [1, 444, 92527]]
TEXTS = ["Beijing.<|reward|>Beijing.[UNUSED_TOKEN_130]", "Beijing.<|reward|>Shanghai.[UNUSED_TOKEN_130]"]
LLAMA_SC, QWEN2_SC = "LlamaForSequenceClassification", "Qwen2ForSequenceClassification"
INTERNLM2_RM, QWEN2_RM, CAUSAL = "InternLM2ForRewardModel", "Qwen2ForRewardModel", "Qwen2ForCausalLM"


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.32.0+cpu", "0.32.0"),
        ("0.10.1.1", "0.10.1.1"),
        ("0.5.4.post1", "0.5.4.post1"),  # post releases count (sglang's Qwen2ForRewardModel: 0.4.3.post3)
        ("0.11.1.dev12+gabcdef", "0.11.1"),
        ("0.11.0rc2", "0.11.0"),
        ("0.12", "0.12"),
        ("v0.9.1", "0.9.1"),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_engine_version(text, expected):
    got = engine_version(text)
    assert (None if got is None else str(got)) == expected


def test_versions_order_post_releases_between_releases():
    order = ["0.4.3", "0.4.3.post2", "0.4.3.post3", "0.4.4", "0.4.4.post2", "0.10.1", "0.10.1.1", "0.10.2"]
    assert sorted(order, key=engine_version) == order
    assert engine_version("0.12") == engine_version("0.12.0")


@pytest.mark.parametrize("module", [vllm_mod, sglang_mod, lmdeploy_mod])
def test_tables_are_contiguous_and_cite_their_range(module):
    table = module.TABLE
    for row, nxt in zip(table, table[1:]):
        assert row.max_version == nxt.min_version
        assert engine_version(row.min_version) < engine_version(row.max_version)
    assert table[-1].max_version is None
    assert all(row.note and row.source for row in table)
    assert all(row.covers(engine_version(row.min_version)) for row in table)
    assert module.UNKNOWN.note.startswith("unknown version")


def test_vllm_rows_say_for_every_kind_how_or_why_not():
    for row in vllm_mod.TABLE:
        for arch in ("LlamaForSequenceClassification", "Qwen2ForSequenceClassification",
                     "InternLM2ForRewardModel", "Qwen2ForCausalLM", None):
            serving = row.serving(arch)
            assert bool(serving.refused) != bool(serving.routes), (row.min_version, arch)
            assert serving.refused or serving.launch, (row.min_version, arch)
            assert serving.raw_by in ("request", "launch", "default")
            if serving.raw_by == "launch":
                assert serving.raw_launch


@pytest.mark.parametrize(
    "version, row_min",
    [
        ("0.7.0", "0.7.0"), ("0.7.3", "0.7.0"), ("0.8.0", "0.8.0"), ("0.8.3", "0.8.0"), ("0.8.4", "0.8.4"),
        ("0.8.5", "0.8.4"), ("0.9.0.1", "0.9.0"), ("0.9.2", "0.9.0"), ("0.10.0", "0.10.0"), ("0.10.0.post2", "0.10.0"),
        ("0.10.1", "0.10.1"), ("0.10.1.1", "0.10.1"), ("0.10.2", "0.10.1"), ("0.11.0", "0.10.1"),
        ("0.11.1", "0.11.1"), ("0.13.0", "0.11.1"), ("0.14.1", "0.11.1"), ("0.15.0", "0.15.0"),
        ("0.16.0", "0.15.0"), ("0.18.0", "0.15.0"), ("0.19.0", "0.19.0"), ("0.32.0+cpu", "0.19.0"),
        ("0.33.0", "0.19.0"), ("1.2.0", "0.19.0"),
    ],
)
def test_vllm_row_selection(version, row_min):
    assert VllmAdapter(version, model="rm", architecture=QWEN2_RM).row.min_version == row_min


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
        "rmclient": RmclientAdapter, "openai": OpenaiAdapter,
    }
    a = get_adapter("vLLM", "0.16.0", model="rm", architecture=LLAMA_SC, endpoint="classify")
    assert isinstance(a, VllmAdapter)
    assert (a.version, a.model, a.architecture, a.score_path) == ("0.16.0", "rm", LLAMA_SC, "/classify")


def test_get_adapter_unknown_type_lists_valid_names():
    with pytest.raises(ConfigurationError, match="'tgi'; valid: lmdeploy, openai, openrlhf, rmclient, sglang, vllm"):
        get_adapter("tgi")


def test_routes_and_what_servers_say_about_themselves():
    assert VllmAdapter.info_routes == (("/version",), ("/v1/models",))
    assert SglangAdapter.info_routes == (("/server_info", "/get_server_info"), ("/v1/models",))
    assert LmdeployAdapter.info_routes == (("/v1/models",),) and LmdeployAdapter.min_input_len == 2
    models = {"object": "list", "data": [{"id": "rm", "object": "model", "max_model_len": 4096}]}
    # vLLM refuses len > max_model_len (renderers/params.py 0.16.0:336): max_model_len itself is accepted
    assert VllmAdapter.read_info({"/version": {"version": "0.32.0+cpu"}, "/v1/models": models}) == ServerInfo(
        "0.32.0+cpu", "rm", 4096)
    assert VllmAdapter.read_info({"/version": {"version": 9}}) == ServerInfo()
    assert VllmAdapter.read_info({"/version": "0.9.2", "/v1/models": {"detail": "Not Found"}}) == ServerInfo()
    # sglang: len < max_req_input_len (srt/managers/utils.py validate_input_length)
    info = {"version": "0.5.23", "max_req_input_len": 4089, "served_model_name": "rm-sg", "api_key": "secret"}
    assert SglangAdapter.read_info({"/server_info": info, "/v1/models": models}) == ServerInfo("0.5.23", "rm", 4088)
    assert SglangAdapter.read_info({"/get_server_info": info}) == ServerInfo("0.5.23", "rm-sg", 4088)
    # no server info: at most ctx - 7 (the scheduler's own rule with a KV pool larger than the context)
    assert SglangAdapter.read_info({"/v1/models": models}) == ServerInfo(None, "rm", 4089)
    assert LmdeployAdapter.read_info({"/v1/models": {"data": [{"id": "lm", "object": "model"}]}}) == ServerInfo(
        None, "lm", None)


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


def _classify(input_, **extra):
    return Request("POST", "/classify", {"model": "rm", "input": input_, "add_special_tokens": True, **extra})


RAW_TASK = {"task": "classify", "use_activation": False}


@pytest.mark.parametrize(
    "version, arch, ids_request, text_request",
    [
        # *ForRewardModel: raw by default before 0.10.1; by the launch flag in 0.10.1 - 0.11.0; then the request
        ("0.8.5", INTERNLM2_RM, _pooling(IDS, False), _pooling(TEXTS, True)),
        ("0.10.0", QWEN2_RM, _pooling(IDS, False), _pooling(TEXTS, True)),
        ("0.10.1.1", INTERNLM2_RM, _pooling(IDS, False), _pooling(TEXTS, True)),
        ("0.11.0", QWEN2_RM, _pooling(IDS, False), _pooling(TEXTS, True)),
        ("0.11.1", INTERNLM2_RM, _pooling(IDS, False, use_activation=False), _pooling(TEXTS, True, use_activation=False)),
        ("0.32.0+cpu", QWEN2_RM, _pooling(IDS, False, use_activation=False), _pooling(TEXTS, True, use_activation=False)),
        # seq-cls: 0.8.x /pooling (raw by the launch flag); 0.10.1 - 0.11.0 /classify, text, activation false;
        # from 0.11.1 /pooling with task classify (0.11.1 - 0.12 answer 400 without it) and use_activation false
        ("0.8.5", LLAMA_SC, _pooling(IDS, False), _pooling(TEXTS, True)),
        ("0.9.2", QWEN2_SC, _pooling(IDS, False), _pooling(TEXTS, True)),
        ("0.10.1.1", LLAMA_SC, None, _classify(TEXTS, activation=False)),
        ("0.11.0", QWEN2_SC, None, _classify(TEXTS, activation=False)),
        ("0.11.1", LLAMA_SC, _pooling(IDS, False, **RAW_TASK), _pooling(TEXTS, True, **RAW_TASK)),
        ("0.13.0", QWEN2_SC, _pooling(IDS, False, **RAW_TASK), _pooling(TEXTS, True, **RAW_TASK)),
        ("0.32.0", LLAMA_SC, _pooling(IDS, False, **RAW_TASK), _pooling(TEXTS, True, **RAW_TASK)),
        # a *ForCausalLM served with --convert classify: as seq-cls
        ("0.10.2", CAUSAL, None, _classify(TEXTS, activation=False)),
        ("0.16.0", CAUSAL, _pooling(IDS, False, **RAW_TASK), _pooling(TEXTS, True, **RAW_TASK)),
        # unknown architecture: the reward request, valid for both kinds from 0.13
        ("0.16.0", None, _pooling(IDS, False, use_activation=False), _pooling(TEXTS, True, use_activation=False)),
    ],
)
def test_vllm_request_per_version_and_kind(version, arch, ids_request, text_request):
    a = VllmAdapter(version, model="rm", architecture=arch)
    assert a.inputs == ("ids" if ids_request else "text")
    assert a.build_request(TEXTS) == text_request
    if ids_request is None:
        with pytest.raises(ConfigurationError, match="does not accept token ids"):
            a.build_request(IDS)
    else:
        assert a.build_request(IDS) == ids_request


@pytest.mark.parametrize(
    "version, arch, works",
    [
        ("0.7.3", LLAMA_SC, "0.8.0 to < 0.9.0, >= 0.10.1"),
        ("0.9.2", LLAMA_SC, "0.8.0 to < 0.9.0, >= 0.10.1"),
        ("0.9.0.1", "Gemma2ForSequenceClassification", "0.8.0 to < 0.9.0, >= 0.10.1"),
        ("0.10.0", LLAMA_SC, "0.8.0 to < 0.9.0, >= 0.10.1"),
        ("0.10.0.post2", QWEN2_SC, "0.7.0 to < 0.10.0, >= 0.10.1"),
        ("0.10.0", CAUSAL, ">= 0.10.1"),
    ],
)
def test_vllm_refuses_what_cannot_be_raw_and_names_the_versions_that_work(version, arch, works):
    with pytest.raises(ConfigurationError, match="cannot return the raw reward") as info:
        VllmAdapter(version, model="rm", architecture=arch)
    assert f"Versions that can: {works}" in str(info.value)


def test_vllm_model_optional_after_0_7_and_required_in_0_7():
    assert VllmAdapter("0.9.2", architecture=QWEN2_RM).build_request([[5, 6]]).json == {
        "input": [[5, 6]], "encoding_format": "float", "add_special_tokens": False}
    with pytest.raises(ConfigurationError, match="requires model="):
        VllmAdapter("0.7.3", architecture=QWEN2_RM)
    body = VllmAdapter("0.7.3", model="internlm/POLAR-7B", architecture=INTERNLM2_RM).build_request([[5]]).json
    assert body["model"] == "internlm/POLAR-7B"


def test_vllm_ids_are_plain_ints():
    class Tok(int):
        pass

    body = VllmAdapter("0.16", model="rm", architecture=QWEN2_RM).build_request([(Tok(1), 2)]).json
    assert body["input"] == [[1, 2]] and type(body["input"][0][0]) is int


@pytest.mark.parametrize("arch", [LLAMA_SC, QWEN2_RM, CAUSAL, None])
@pytest.mark.parametrize("version", [r.min_version for r in vllm_mod.TABLE if r.since >= engine_version("0.11.1")]
                         + ["0.12.0", "0.13.0", "0.14.1", None])
def test_vllm_never_sends_softmax_or_activation_from_0_11_1(version, arch):
    a = VllmAdapter(version, model="rm", architecture=arch)
    for route in a.serving.routes:
        body = VllmAdapter(version, model="rm", architecture=arch, endpoint=route.path[1:]).build_request(TEXTS).json
        assert "softmax" not in body and "activation" not in body
        assert body["use_activation"] is False


def test_vllm_classify_route_on_request():
    assert VllmAdapter("0.16.0", model="rm", architecture=LLAMA_SC, endpoint="classify").build_request(IDS) == Request(
        "POST", "/classify", {"model": "rm", "input": IDS, "add_special_tokens": False, "use_activation": False})
    assert VllmAdapter("0.15.0", model="rm", architecture=LLAMA_SC, endpoint="classify").inputs == "ids"
    a = VllmAdapter("0.14.1", model="rm", architecture=LLAMA_SC, endpoint="classify")
    assert a.build_request(TEXTS) == _classify(TEXTS, use_activation=False) and a.inputs == "text"
    with pytest.raises(ConfigurationError, match="does not accept token ids"):
        a.build_request(IDS)
    with pytest.raises(ConfigurationError, match="on /classify"):  # a reward model has no /classify
        VllmAdapter("0.16.0", architecture=QWEN2_RM, endpoint="classify")
    with pytest.raises(ConfigurationError, match="on /pooling"):  # 0.10.1 - 0.11.0: /pooling refuses seq-cls
        VllmAdapter("0.10.1", architecture=LLAMA_SC, endpoint="pooling")
    with pytest.raises(ConfigurationError, match="'reward'"):
        VllmAdapter("0.16.0", architecture=LLAMA_SC, endpoint="reward")


@pytest.mark.parametrize(
    "version, arch, flag",
    [("0.8.5", LLAMA_SC, '{"softmax": false}'), ("0.9.2", QWEN2_SC, '{"softmax": false}'),
     ("0.10.1", INTERNLM2_RM, '"softmax": false'), ("0.11.0", QWEN2_RM, '"softmax": false'),
     ("0.10.0", QWEN2_RM, None), ("0.10.1", LLAMA_SC, None), ("0.11.1", QWEN2_RM, None)],
)
def test_vllm_warns_when_only_the_launch_flag_makes_it_raw(version, arch, flag, caplog):
    with caplog.at_level(logging.WARNING, logger="rmclient.adapters.vllm"):
        VllmAdapter(version, model="rm", architecture=arch)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(msgs) is bool(flag)
    if flag:
        assert "--override-pooler-config" in msgs[0] and flag in msgs[0]


def _tokens(*seqs):
    return _pooling_body([{"index": i, "object": "pooling", "data": [[v] for v in seq]} for i, seq in enumerate(seqs)])


def test_vllm_refuses_answers_that_carry_the_activation_where_only_the_launch_flag_removes_it():
    rm = VllmAdapter("0.10.1.1", model="rm", architecture=INTERNLM2_RM)
    raw = _tokens([0.3, 2.1, -4.0, R0], [1.5, R1])
    assert rm.parse_response(raw, 2) == [R0, R1]
    sigmoid = _tokens([0.57, 0.89, 0.01, 0.36], [0.82, 0.00002, 0.5, 0.6])
    with pytest.raises(ConfigurationError, match=r"lies in \[0, 1\].*--override-pooler-config"):
        rm.parse_response(sigmoid, 2)
    seq_cls = VllmAdapter("0.8.5", model="rm", architecture=LLAMA_SC)
    with pytest.raises(ConfigurationError, match="all exactly 1.0: a softmax over one label"):
        seq_cls.parse_response(_data([1.0], [1.0]), 2)
    assert seq_cls.parse_response(_data([0.2], [0.7]), 2) == [0.2, 0.7]  # too few values to tell
    # where the request makes it raw, values in [0, 1] are simply rewards
    assert VllmAdapter("0.32.0", architecture=QWEN2_RM).parse_response(sigmoid, 2) == [0.36, 0.6]


def test_vllm_hidden_states_say_how_to_launch():
    hidden = _data([[0.1] * 64, [0.2] * 64])
    with pytest.raises(ResponseError, match="64 values per position.*--task reward"):
        VllmAdapter("0.9.2", architecture=QWEN2_RM).parse_response(hidden, 1)


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
    assert VllmAdapter("0.32.0", model="rm", architecture=INTERNLM2_RM).parse_response(body, 2) == [R0, R1]


def test_vllm_seq_cls_and_single_token_reward_model():
    body = _pooling_body([{"index": 0, "object": "pooling", "data": [R0]},
                          {"index": 1, "object": "pooling", "data": [[R1]]}])
    assert VllmAdapter("0.9.2", architecture=QWEN2_RM).parse_response(body, 2) == [R0, R1]


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
    assert VllmAdapter("0.16.0", architecture=LLAMA_SC, endpoint="classify").parse_response(body, 2) == [R0, R1]


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
    a = VllmAdapter("0.16.0", architecture=LLAMA_SC, endpoint="classify")
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
    assert (a.info_routes, a.inputs) == ((("/v1/models",),), "full_text")
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
