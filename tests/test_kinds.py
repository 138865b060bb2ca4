"""Rewards beyond one float: process rewards per step, dense per-token rewards, multi-objective heads,
pairwise and listwise preference; their spans, our server's kinds, the CLI and the trainer hooks.

Every value is checked against a direct forward pass of the tiny model on the same ids
(``rmclient.testing.kinds``), not against the client itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys

import httpx
import pytest
import torch

from rmclient import AsyncRewardModelClient, RewardModelClient
from rmclient.adapters.base import check_outputs
from rmclient.adapters.lmdeploy import LmdeployAdapter
from rmclient.adapters.openrlhf import OpenrlhfAdapter
from rmclient.adapters.rmclient import STEP_AGGREGATES, RmclientAdapter
from rmclient.adapters.sglang import SglangAdapter
from rmclient.errors import ConfigurationError, InvalidSampleError, ResponseError
from rmclient.preference import preference_metrics, sigmoid
from rmclient.serve import RewardServer, ServerThread
from rmclient.spans import spread
from rmclient.steps import AGGREGATES
from rmclient.testing import build_math_shepherd_prm, build_multilabel_rm, build_qwen2_prm
from rmclient.testing.kinds import reference_shepherd_rewards, reference_step_rewards
from rmclient.testing.tokenizer import build_tokenizer

ABS = 1e-5
STEPS = [
    {"prompt": "What is 2+2?", "steps": ["2+2 is 4.", "So the answer is 4."]},
    {"prompt": "Capital of China?", "output": "Think.\n\nBeijing is the capital.\n\nDone.", "step_separator": "\n\n"},
    {"prompt": [{"role": "user", "content": "Sum 1..3?"}], "steps": ["1+2=3", "3+3=6", "The answer is 6."]},
    {"prompt": "北京?", "output": "Step one ✓ | step two", "step_separator": " | "},
]
CHAT = [
    {"prompt": "What is the capital of China?", "output": "Beijing. The capital city."},
    {"prompt": "Hello", "output": "I am fine, thank you."},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]},
]


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory):
    return str(build_qwen2_prm(tmp_path_factory.mktemp("kinds") / "tiny-qwen2-prm"))


@pytest.fixture(scope="module")
def prm(prm_path):
    return RewardModelClient(prm_path, trust_remote_code=True)


@pytest.fixture(scope="module")
def multilabel_path(tmp_path_factory):
    return str(build_multilabel_rm(tmp_path_factory.mktemp("kinds") / "tiny-multilabel"))


@pytest.fixture(scope="module")
def multilabel(multilabel_path):
    return RewardModelClient(multilabel_path)


def close(a, b, tol=ABS):
    """Nested lists of numbers equal within ``tol``."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    return abs(a - b) <= tol


def _logits(path, ids):
    """The multi-label head's raw logits at the last token, from transformers itself."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(torch.tensor([x])).logits[0].tolist() for x in ids]


# -- process rewards -----------------------------------------------------------------------


def test_step_rewards_equal_the_forward_pass_at_the_separators(prm, prm_path):
    recipe = prm.encoder.step_recipe()
    encoded = recipe.encode(STEPS)
    reference = reference_step_rewards(prm_path, [e.ids for e in encoded], recipe.separator_id)
    got = prm.score_steps(STEPS)
    for sample, result, ref in zip(STEPS, got, reference):
        assert len(result.rewards) == len(ref) == (len(sample["steps"]) if "steps" in sample else len(result.spans))
        assert max(abs(a - b) for a, b in zip(result.rewards, ref)) < ABS
        assert result.aggregate == min(result.rewards) and result.cut == []
    assert [len(r.rewards) for r in got] == [2, 3, 3, 2]


def test_the_qwen_prm_format_is_its_training_format(prm):
    """System prompt, user turn, assistant turn "<extra_0>".join(steps) + "<extra_0>", chat template."""
    tok = prm.tokenizer
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "2+2 is 4.<extra_0>So the answer is 4.<extra_0>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert prm.encoder.step_recipe().encode(STEPS[:1])[0].ids == tok.encode(text)


@pytest.mark.parametrize("aggregate", sorted(AGGREGATES))
def test_aggregates(prm, aggregate):
    result = prm.score_steps(STEPS[2], aggregate=aggregate)
    r = result.rewards
    expected = {"min": min(r), "last": r[-1], "mean": sum(r) / len(r), "prod": math.prod(r)}[aggregate]
    assert result.aggregate == pytest.approx(expected, abs=1e-12)
    assert sorted(STEP_AGGREGATES) == sorted(AGGREGATES)  # the server's list is the same


def test_a_long_chain_keeps_its_prompt_and_says_which_steps_were_cut(prm_path, prm):
    chain = {"prompt": "Count.", "steps": [f"Step {k}: the number is {k}." for k in range(12)]}
    full = prm.score_steps(chain)
    short = RewardModelClient(prm_path, trust_remote_code=True, max_length=full.num_tokens - 20)
    cut = short.score_steps(chain)
    assert len(cut.rewards) == 12 and cut.cut and cut.cut == list(range(12 - len(cut.cut), 12))
    assert all(r is None for r in cut.rewards[12 - len(cut.cut):])
    kept = 12 - len(cut.cut)
    # a step's reward depends only on what precedes it (causal): the kept ones are unchanged
    assert max(abs(a - b) for a, b in zip(cut.rewards[:kept], full.rewards[:kept])) < ABS
    assert cut.aggregate == min(cut.rewards[:kept]) and cut.num_tokens <= full.num_tokens - 20
    tiny = RewardModelClient(prm_path, trust_remote_code=True, max_length=20)
    with pytest.raises(InvalidSampleError, match="no step can be scored") as info:
        tiny.score_steps([STEPS[0], chain])
    assert info.value.index == 0


@pytest.mark.parametrize("bad, field", [
    ({"prompt": "q"}, "output"),
    ({"prompt": "q", "steps": "one string"}, "steps"),
    ({"prompt": "q", "steps": ["ok", ""]}, "steps[1]"),
    ({"prompt": "q", "steps": ["a<extra_0>b"]}, "steps[0]"),
    ({"prompt": "q<extra_0>", "steps": ["a"]}, "prompt"),
    ({"prompt": "q", "output": "\n\n", "step_separator": "\n\n"}, "steps"),
    ({"prompt": "q", "steps": ["a"], "output": "a"}, "steps"),
])
def test_bad_step_samples_name_index_and_field(prm, bad, field):
    with pytest.raises(InvalidSampleError) as info:
        prm.score_steps([STEPS[0], bad])
    assert (info.value.index, info.value.field) == (1, field)


def test_a_prm_refuses_plain_scoring(prm):
    with pytest.raises(ConfigurationError, match="score_steps"):
        prm(CHAT[0])


def test_math_shepherd_steps_equal_the_lm_logits(tmp_path):
    path = str(build_math_shepherd_prm(tmp_path / "tiny-math-shepherd"))
    client = RewardModelClient(path)  # named so: the format is chosen from the name
    assert client.encoder.step_format.name == "math_shepherd"
    encoded = client.encoder.step_recipe().encode(STEPS)
    assert encoded[0].text == "What is 2+2? 2+2 is 4. ки\nSo the answer is 4. ки"
    reference = reference_shepherd_rewards(path, [e.ids for e in encoded])
    for result, ref in zip(client.score_steps(STEPS), reference):
        assert len(result.rewards) == len(ref)
        assert max(abs(a - b) for a, b in zip(result.rewards, ref)) < ABS


# -- spans ---------------------------------------------------------------------------------


def test_every_step_span_covers_exactly_its_step(prm):
    rng = random.Random(0)
    words = ["two", "plus", "2", "is", "4", "北京", "é", "x^2", "=", "ok.", "so", "🙂"]
    samples = []
    for _ in range(20):
        steps = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 5))]
        sep = rng.choice(["\n\n", "\n", " | "])
        samples.append({"prompt": "Solve.", "output": sep.join(steps), "step_separator": sep, "_steps": steps})
    for s, r in zip(samples, prm.score_steps(samples)):
        assert [s["output"][a:b] for a, b in r.spans] == s["_steps"]


def test_token_spans_tile_the_output_and_spread_onto_another_tokenizer(chat_path):
    client = RewardModelClient(chat_path)
    policy = build_tokenizer(vocab_size=400, add_bos=False)  # another vocabulary
    for sample, dense in zip(CHAT, client.score_tokens(CHAT)):
        output = sample["output"] if "output" in sample else sample["messages"][-1]["content"]
        assert "".join(output[a:b] for a, b in dense.spans) == output
        offsets = [tuple(o) for o in policy(output, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
        spread_values = spread(dense.values, dense.spans, policy, output)
        assert len(spread_values) == len(offsets)
        for (a, b), v in zip(offsets, spread_values):  # the value of the reward token its last char is in
            k = max(j for j, (s, _) in enumerate(dense.spans) if s <= max(a, b - 1))
            assert v == dense.values[k]


def test_spread_of_steps_gives_each_policy_token_its_step(prm):
    sample = STEPS[1]
    result = prm.score_steps(sample)
    policy = build_tokenizer(vocab_size=300, add_bos=True)
    values = spread(result.rewards, result.spans, policy, sample["output"])
    offsets = policy(sample["output"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for (a, b), v in zip(offsets, values):
        inside = [k for k, (s, e) in enumerate(result.spans) if s <= b - 1 < e]
        if inside:  # a token inside a step gets that step's reward; one in a separator the step before
            assert v == result.rewards[inside[0]]
        else:
            assert v == result.rewards[max(k for k, (s, _) in enumerate(result.spans) if s <= b - 1)]
    ends = spread(result.rewards, result.spans, policy, sample["output"], rule="end", fill=0.0)
    assert sorted(x for x in ends if x != 0.0) == sorted(result.rewards)
    with pytest.raises(ConfigurationError, match="fill"):
        spread(result.rewards, result.spans, policy, sample["output"], rule="end")


# -- dense per-token rewards ---------------------------------------------------------------


def test_dense_rewards_equal_the_head_at_every_output_token(chat_path):
    from transformers import AutoModelForSequenceClassification

    client = RewardModelClient(chat_path)
    model = AutoModelForSequenceClassification.from_pretrained(chat_path, dtype=torch.float32).eval()
    rewards = client(CHAT)
    tok = client.tokenizer
    for sample, ids, dense, reward in zip(CHAT, client.encode_ids(CHAT), client.score_tokens(CHAT), rewards):
        with torch.no_grad():
            per_token = model.score(model.model(torch.tensor([ids])).last_hidden_state)[0, :, 0].tolist()
        assert per_token[-1] == pytest.approx(reward, abs=ABS)  # the reward is the last token's value
        output = sample["output"] if "output" in sample else sample["messages"][-1]["content"]
        text = client.encode(sample)
        start = len(tok(text[: text.rfind(output)], add_special_tokens=False)["input_ids"]) + 1  # + BOS
        assert dense.values == pytest.approx(per_token[start : start + len(dense.values)], abs=ABS)
        assert tok.decode(ids[start : start + len(dense.values)]) == output
        assert len(dense.values) == len(dense.spans) and dense.num_tokens == len(ids)


def test_dense_rewards_refuse_polar_samples(polar_path):
    client = RewardModelClient(polar_path)
    with pytest.raises(ConfigurationError, match="chat-template"):
        client.score_tokens({"prompt": "q", "reference": "r", "output": "o"})


# -- multi-objective heads -----------------------------------------------------------------


def test_vectors_are_the_raw_logits_with_the_config_labels(multilabel, multilabel_path):
    vectors = multilabel.score_vector(CHAT)
    reference = _logits(multilabel_path, multilabel.encode_ids(CHAT))
    assert multilabel.labels == ["helpfulness", "correctness", "coherence"]
    for got, ref in zip(vectors, reference):
        assert len(got) == 3 and max(abs(a - b) for a, b in zip(got, ref)) < ABS
    assert multilabel(CHAT, reduce=None) == vectors
    assert multilabel(CHAT, weights=[0.5, 0.25, 0.25]) == pytest.approx(
        [0.5 * v[0] + 0.25 * v[1] + 0.25 * v[2] for v in vectors], abs=1e-12)
    assert multilabel(CHAT, reduce="max") == [max(v) for v in vectors]
    assert multilabel(CHAT[0], reduce=lambda v: v[1]) == vectors[0][1]
    with pytest.raises(ConfigurationError, match="3 labels"):
        multilabel(CHAT)
    with pytest.raises(ConfigurationError, match="2 weights for 3 labels"):
        multilabel(CHAT, weights=[1, 2])


def test_a_one_label_head_gives_one_element_vectors(chat_path):
    client = RewardModelClient(chat_path)
    rewards = client(CHAT)
    assert [v[0] for v in client.score_vector(CHAT)] == pytest.approx(rewards, abs=ABS)


# -- pairwise and listwise -----------------------------------------------------------------


def test_compare_is_bradley_terry_of_the_rewards(chat_path, polar_path):
    client = RewardModelClient(chat_path)
    ra, rb = client([{"prompt": "Capital?", "output": "Beijing."}, {"prompt": "Capital?", "output": "Shanghai."}])
    ab = client.compare("Capital?", "Beijing.", "Shanghai.")
    ba = client.compare("Capital?", "Shanghai.", "Beijing.")
    assert ab.p_a + ba.p_a == pytest.approx(1.0, abs=1e-12) and ab.p_a + ab.p_b == pytest.approx(1.0, abs=1e-12)
    assert ab.p_a == pytest.approx(sigmoid(ra - rb), abs=1e-6) and (ab.reward_a, ab.reward_b) == pytest.approx((ra, rb))
    polar = RewardModelClient(polar_path)
    pa = polar.compare("Capital of China?", "Beijing.", "Shanghai.", reference="Beijing.")
    ra, rb = polar([{"prompt": "Capital of China?", "reference": "Beijing.", "output": o} for o in ("Beijing.", "Shanghai.")])
    assert pa.p_a == pytest.approx(sigmoid(ra - rb), abs=1e-6)


def test_rank(chat_path):
    client = RewardModelClient(chat_path)
    outputs = ["Beijing.", "Shanghai.", "I do not know.", "Beijing, of course."]
    ranking = client.rank("Capital of China?", outputs)
    rewards = client([{"prompt": "Capital of China?", "output": o} for o in outputs])
    assert ranking.rewards == pytest.approx(rewards, abs=ABS)
    assert ranking.order == sorted(range(4), key=lambda i: -rewards[i])
    assert sum(ranking.p_best) == pytest.approx(1.0) and ranking.p(0, 1) + ranking.p(1, 0) == pytest.approx(1.0)


def test_preference_metrics():
    m = preference_metrics([2.0, -1.0, 0.5, 3.0])
    assert m["bt_log_likelihood"] == pytest.approx(sum(math.log(sigmoid(x)) for x in [2.0, -1.0, 0.5, 3.0]) / 4)
    assert m["brier"] == pytest.approx(sum((1 - sigmoid(x)) ** 2 for x in [2.0, -1.0, 0.5, 3.0]) / 4)
    perfect = preference_metrics([40.0] * 10)
    assert perfect["calibration_error"] == pytest.approx(0.0, abs=1e-9) and perfect["bt_log_likelihood"] > -1e-9
    overconfident = preference_metrics([40.0, -40.0])  # 100% sure, half wrong
    assert overconfident["calibration_error"] == pytest.approx(0.5, abs=1e-9)


# -- engines: what each one can serve ------------------------------------------------------


def test_engines_refuse_what_they_cannot_serve():
    assert LmdeployAdapter("0.12.0").refuses("tokens") and LmdeployAdapter("0.12.0").refuses("vector")
    assert "squeeze" in LmdeployAdapter(None).refuses("tokens")
    assert SglangAdapter("0.5.23").refuses("vector") is None and "LAST" in SglangAdapter("0.5.23").refuses("tokens")
    assert OpenrlhfAdapter().refuses("vector")
    with pytest.raises(ConfigurationError, match="cannot score 'tokens'"):
        SglangAdapter("0.5.23").build_request([[1, 2]], "tokens")
    for output in ("reward", "vector", "tokens"):
        assert RmclientAdapter().refuses(output) is None
    assert RmclientAdapter().build_request([[1, 2]], "tokens").json == {"input_ids": [[1, 2]], "output": "tokens"}


def test_sglang_returns_every_label_raw():
    body = [{"embedding": [0.5, -1.25, 3.0], "meta_info": {}}, {"embedding": [1.0, 2.0, 3.0], "meta_info": {}}]
    assert SglangAdapter("0.5.23").parse_response(body, 2, output="vector") == [[0.5, -1.25, 3.0], [1.0, 2.0, 3.0]]
    with pytest.raises(ResponseError, match="not a one-element list"):
        SglangAdapter("0.5.23").parse_response(body, 2)


def test_outputs_are_checked():
    with pytest.raises(ResponseError, match="not finite"):
        check_outputs([[1.0, float("nan")]], 1, "e", None, "vector")
    with pytest.raises(ResponseError, match="different numbers"):
        check_outputs([[[1.0, 2.0], [1.0]]], 1, "e", None, "tokens")
    with pytest.raises(ResponseError, match="expected 2 outputs"):
        check_outputs([[1.0]], 2, "e", None, "vector")


# -- our server, the client against it, the CLI, the hooks ---------------------------------


@pytest.fixture(scope="module")
def prm_server(prm_path):
    with ServerThread(RewardServer(prm_path, trust_remote_code=True)) as s:
        yield s


@pytest.fixture(scope="module")
def multilabel_server(multilabel_path):
    with ServerThread(RewardServer(multilabel_path)) as s:
        yield s


def test_server_kinds_equal_in_process(prm, prm_server, multilabel, multilabel_server):
    local = prm.score_steps(STEPS)
    body = httpx.post(prm_server.url + "/v1/rewards", json={"samples": STEPS, "aggregate": "mean"}).json()
    assert body["kind"] == "steps"  # a PRM's default kind
    for got, want in zip(body["steps"], local):
        assert got["rewards"] == pytest.approx(want.rewards, abs=ABS) and got["cut"] == []
        assert [tuple(x) for x in got["spans"]] == want.spans
    assert body["rewards"] == pytest.approx([sum(r.rewards) / len(r.rewards) for r in local], abs=ABS)
    remote = RewardModelClient(prm.path, server_type="rmclient", server_address=prm_server.url, trust_remote_code=True)
    for got, want in zip(remote.score_steps(STEPS), local):
        assert got.rewards == pytest.approx(want.rewards, abs=ABS)
    vectors = multilabel.score_vector(CHAT)
    body = httpx.post(multilabel_server.url + "/v1/rewards", json={"samples": CHAT, "kind": "vector"}).json()
    assert body["labels"] == multilabel.labels and close(body["vectors"], vectors)
    remote = RewardModelClient(multilabel.path, server_type="rmclient", server_address=multilabel_server.url)
    assert close(remote.score_vector(CHAT), vectors)
    for got, want in zip(remote.score_tokens(CHAT), multilabel.score_tokens(CHAT)):
        assert got.values == pytest.approx(want.values, abs=ABS) and got.spans == want.spans


@pytest.mark.parametrize("body, status", [
    ({"samples": STEPS, "kind": "nope"}, 400),
    ({"samples": STEPS, "aggregate": "median"}, 400),
    ({"samples": [{"prompt": "q", "steps": []}]}, 400),
    ({"samples": CHAT, "kind": "reward"}, 400),  # a PRM has no single reward
])
def test_server_rejects_bad_kind_requests_with_4xx(prm_server, body, status):
    answer = httpx.post(prm_server.url + "/v1/rewards", json=body)
    assert answer.status_code == status, answer.text


def test_cli_score_kind_steps(prm_path, prm, tmp_path):
    data = tmp_path / "steps.jsonl"
    data.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in STEPS))
    out = tmp_path / "out.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "rmclient", "score", str(data), "-o", str(out), "--model", prm_path,
         "--trust-remote-code", "--kind", "steps", "--aggregate", "last", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, want in zip(rows, prm.score_steps(STEPS)):
        assert row["step_rewards"] == pytest.approx(want.rewards, abs=ABS)
        assert row["reward"] == pytest.approx(want.rewards[-1], abs=ABS) and row["cut_steps"] == []
        assert [tuple(x) for x in row["step_spans"]] == want.spans


def test_trl_and_verl_hooks_take_kind_steps(prm):
    from rmclient.integrations.trl import make_reward_func
    from rmclient.integrations.verl import make_compute_score

    logged = {}
    func = make_reward_func(prm, kind="steps", aggregate="min", step_separator="\n\n")
    completions = ["2+2 is 4.\n\nSo the answer is 4.", "It is 5."]
    rewards = func(prompts=["What is 2+2?"] * 2, completions=completions,
                   log_extra=lambda column, values: logged.setdefault(column, values))
    want = prm.score_steps([{"prompt": "What is 2+2?", "output": c, "step_separator": "\n\n"} for c in completions])
    assert rewards == pytest.approx([w.aggregate for w in want], abs=1e-12)
    assert logged["step_rewards"] == [w.rewards for w in want]
    score = make_compute_score(prm, kind="steps", aggregate="prod")
    result = score(data_source="math", solution_str=completions[0], ground_truth=None, extra_info={"prompt": "What is 2+2?"})
    assert result["score"] == pytest.approx(math.prod(want[0].rewards), abs=1e-12)
    assert result["step_rewards"] == want[0].rewards and result["cut_steps"] == []


def test_async_client_kinds(prm_path, multilabel_path, multilabel):
    async def main():
        prm = AsyncRewardModelClient(prm_path, trust_remote_code=True)
        ml = AsyncRewardModelClient(multilabel_path)
        steps, vectors = await asyncio.gather(prm.score_steps(STEPS), ml.score_vector(CHAT))
        await prm.aclose()
        await ml.aclose()
        return steps, vectors

    steps, vectors = asyncio.run(main())
    sync = RewardModelClient(prm_path, trust_remote_code=True)
    assert close([g.rewards for g in steps], [w.rewards for w in sync.score_steps(STEPS)])
    assert close(vectors, multilabel.score_vector(CHAT))


def test_server_answers_vllm_pooling_for_a_prm(prm, prm_path, prm_server):
    from rmclient.testing.kinds import reference_token_logits

    recipe = prm.encoder.step_recipe()
    ids = [e.ids for e in recipe.encode(STEPS)]
    probs = httpx.post(prm_server.url + "/pooling", json={"input": ids}).json()
    assert [d["index"] for d in probs["data"]] == list(range(len(ids))) and probs["object"] == "list"
    want = reference_step_rewards(prm_path, ids, recipe.separator_id)
    assert close([[row[1] for row in d["data"]] for d in probs["data"]], want)  # STEP pooling, softmax
    raw = httpx.post(prm_server.url + "/pooling", json={"input": ids, "task": "token_classify",
                                                         "use_activation": False}).json()
    logits = reference_token_logits(prm_path, ids)
    at_steps = [[row for t, row in zip(x, rows) if t == recipe.separator_id] for x, rows in zip(ids, logits)]
    assert close([d["data"] for d in raw["data"]], at_steps)
    bad = httpx.post(prm_server.url + "/pooling", json={"input": ids, "task": "embed"})
    assert bad.status_code == 400 and "task" in bad.text


def test_eval_reports_bradley_terry_fit(chat_path, tmp_path):
    pairs = [{"prompt": "Capital of China?", "chosen": "Beijing.", "rejected": "Shanghai."},
             {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
             {"prompt": "Colour of the sky?", "chosen": "Blue.", "rejected": "Green, mostly."}]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = tmp_path / "scored.jsonl"
    run = subprocess.run([sys.executable, "-m", "rmclient", "eval", str(data), "--model", chat_path, "--json",
                          "-o", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    margins = [r["chosen_reward"] - r["rejected_reward"] for r in map(json.loads, out.read_text().splitlines())]
    want = preference_metrics(margins)
    for key in ("bt_log_likelihood", "calibration_error", "brier"):
        assert summary[key] == pytest.approx(want[key], abs=1e-9)
    assert summary["bt_log_likelihood"] == pytest.approx(sum(math.log(sigmoid(m)) for m in margins) / 3, abs=1e-9)


# -- vLLM: the version table's rows for the kinds (the real server is in test_vllm_real.py) -------

PRM_ARCH = "Qwen2ForProcessRewardModel"


@pytest.mark.parametrize("version, launch, fields", [
    ("0.10.0", ["--task", "reward", "--override-pooler-config", '{"pooling_type": "ALL", "softmax": false}'], {}),
    ("0.10.1.1", ["--runner", "pooling", "--override-pooler-config", '{"pooling_type": "ALL", "softmax": false}'], {}),
    ("0.12.0", ["--runner", "pooling", "--pooler-config", '{"pooling_type": "ALL", "use_activation": false}'],
     {"task": "token_classify", "use_activation": False}),
    ("0.32.0", ["--runner", "pooling", "--pooler-config", '{"pooling_type": "ALL", "use_activation": false}'],
     {"task": "token_classify", "use_activation": False}),
])
def test_vllm_serves_a_prm_per_token_on_every_version(prm_path, version, launch, fields):
    from rmclient.adapters.vllm import VllmAdapter
    from rmclient.launchers import vllm

    cmd = vllm.build_command(prm_path, engine_version=version)
    assert " ".join(launch) in " ".join(cmd)
    adapter = VllmAdapter(version, architecture=PRM_ARCH)
    body = adapter.build_request([[1, 2, 3]], "tokens").json
    assert body == {"input": [[1, 2, 3]], "encoding_format": "float", "add_special_tokens": False, **fields}
    rows = [[0.5, -2.0], [1.5, 3.0], [-0.25, 4.0]]
    assert adapter.parse_response({"data": [{"index": 0, "data": rows}]}, 1, output="tokens") == [rows]
    assert "score_steps" in adapter.refuses("reward")
    with pytest.raises(ConfigurationError, match="step_tag_id 151651"):  # STEP pooling at Qwen's id: `data: []`
        adapter.parse_response({"data": [{"index": 0, "data": []}]}, 1, output="tokens")


def test_vllm_refuses_a_softmax_it_cannot_turn_off_by_request(prm_path):
    from rmclient.adapters.vllm import VllmAdapter

    probs = [[0.25, 0.75], [0.5, 0.5], [0.125, 0.875]]
    with pytest.raises(ConfigurationError, match="applies its softmax"):
        VllmAdapter("0.10.1.1", architecture=PRM_ARCH).parse_response({"data": [{"index": 0, "data": probs}]}, 1,
                                                                      output="tokens")
    # from 0.11.1 the request turns it off: the same numbers are taken as the logits they then are
    assert VllmAdapter("0.12.0", architecture=PRM_ARCH).parse_response(
        {"data": [{"index": 0, "data": probs}]}, 1, output="tokens") == [probs]


def test_vllm_vector_and_token_outputs_per_kind():
    from rmclient.adapters.vllm import VllmAdapter

    seq_cls = VllmAdapter("0.32.0", architecture="LlamaForSequenceClassification")
    assert seq_cls.build_request([[1, 2]], "vector").json["task"] == "classify"
    per_seq = {"data": [{"index": 0, "data": [0.5, -1.0, 2.0]}]}
    per_token = {"data": [{"index": 0, "data": [[9.0, 9.0, 9.0], [0.5, -1.0, 2.0]]}]}  # 0.13 - 0.19: the last row
    assert seq_cls.parse_response(per_seq, 1, output="vector") == seq_cls.parse_response(per_token, 1, output="vector")
    assert "ONE pooling task" in seq_cls.refuses("tokens")
    classify = VllmAdapter("0.32.0", architecture="LlamaForSequenceClassification", endpoint="classify")
    assert classify.parse_response({"data": [{"index": 0, "probs": [0.5, -1.0, 2.0]}]}, 1, output="vector") == [
        [0.5, -1.0, 2.0]]
    rm = VllmAdapter("0.11.0", architecture="InternLM2ForRewardModel")
    assert rm.refuses("tokens") is None and rm.build_request([[1]], "tokens").path == "/pooling"
    assert VllmAdapter("0.10.0", architecture="Qwen2ForRewardModel").refuses("tokens") is None


def test_vllm_launches_a_math_shepherd_prm_from_0_19(tmp_path):
    from rmclient.launchers import vllm
    from rmclient.launchers._common import LaunchOptions

    path = str(build_math_shepherd_prm(tmp_path / "tiny-math-shepherd"))
    cmd = vllm.build_command(path, LaunchOptions(steps="math_shepherd"), engine_version="0.32.0")
    assert cmd[cmd.index("--convert") + 1] == "classify"
    assert json.loads(cmd[cmd.index("--hf-overrides") + 1]) == {"classifier_from_token": ["+", "-"],
                                                                "method": "no_post_processing"}
    assert json.loads(cmd[cmd.index("--pooler-config") + 1]) == {"task": "token_classify", "pooling_type": "ALL",
                                                                 "use_activation": False}
    with pytest.raises(ConfigurationError, match="vllm#16545"):
        vllm.build_command(path, LaunchOptions(steps="math_shepherd"), engine_version="0.16.0")
    from rmclient.launchers import sglang

    with pytest.raises(ConfigurationError, match="no process reward models"):
        sglang.build_command(path, LaunchOptions(steps="math_shepherd"), engine_version="0.5.23")


# -- edges found in review -------------------------------------------------------------------


def test_a_chain_never_exceeds_max_length_at_any_limit(prm_path, prm):
    chain = {"prompt": "Count.", "steps": [f"Step {k}: {k}." for k in range(6)]}
    full = prm.encoder.step_recipe().encode([chain])[0]
    full_rewards = prm.score_steps(chain).rewards
    for limit in range(full.positions[0] + 1, len(full.ids) + 2):
        client = RewardModelClient(prm_path, trust_remote_code=True, max_length=limit)
        e = client.encoder.step_recipe().encode([chain])[0]
        assert len(e.ids) <= limit and e.ids == full.ids[: len(e.ids)]
        assert e.truncated == (len(e.positions) < 6) and e.positions == full.positions[: len(e.positions)]
        got = client.score_steps(chain)
        kept = len(e.positions)
        assert got.cut == list(range(kept, 6)) and got.rewards[kept:] == [None] * (6 - kept)
        assert max(abs(a - b) for a, b in zip(got.rewards[:kept], full_rewards)) < ABS


def test_empty_prompts_and_kinds_a_prm_cannot_serve(prm, prm_server):
    with pytest.raises(InvalidSampleError) as info:
        prm.score_steps([STEPS[0], {"prompt": [], "steps": ["a"]}])
    assert (info.value.index, info.value.field) == (1, "prompt")
    for method in (prm.score_tokens, prm.score_vector):
        with pytest.raises(ConfigurationError, match="process reward model"):
            method(CHAT)
    for body in ({"samples": [{"prompt": [], "steps": ["a"]}]}, {"samples": CHAT, "kind": "tokens"},
                 {"samples": CHAT, "kind": "vector"}):
        answer = httpx.post(prm_server.url + "/v1/rewards", json=body)
        assert answer.status_code == 400, answer.text
    bad = httpx.post(prm_server.url + "/pooling", json={"input": [[1, 2]], "add_special_tokens": "no"})
    assert bad.status_code == 400


def test_dense_rewards_find_an_output_that_also_appears_in_the_template(chat_path):
    """An output such as "end" or "m" also matches inside "<|im_end|>": located by the template's own
    prefix (rendered with the generation prompt), independently of the code under test."""
    from transformers import AutoModelForSequenceClassification

    client = RewardModelClient(chat_path)
    model = AutoModelForSequenceClassification.from_pretrained(chat_path, dtype=torch.float32).eval()
    tok = client.tokenizer
    for output in ("end", "m", "im", "Beijing."):
        sample = {"prompt": "Say it.", "output": output}
        ids = client.encode_ids(sample)
        prefix = tok.apply_chat_template([{"role": "user", "content": "Say it."}], tokenize=False,
                                         add_generation_prompt=True)
        start = len(tok(prefix, add_special_tokens=False)["input_ids"])  # the template emits BOS itself
        n = len(tok(output, add_special_tokens=False)["input_ids"])
        assert tok.decode(ids[start:start + n]) == output
        with torch.no_grad():
            per_token = model.score(model.model(torch.tensor([ids])).last_hidden_state)[0, :, 0].tolist()
        dense = client.score_tokens(sample)
        assert dense.values == pytest.approx(per_token[start:start + n], abs=ABS)
        assert "".join(output[a:b] for a, b in dense.spans) == output


def test_dense_rewards_of_a_cut_output_fail_before_scoring(chat_path):
    client = RewardModelClient(chat_path, max_length=12)
    passes = client.local_backend.forward_passes
    with pytest.raises(InvalidSampleError) as info:
        client.score_tokens([CHAT[1], {"prompt": "Hi", "output": "word " * 40}])
    assert info.value.field == "output" and client.local_backend.forward_passes == passes


def test_results_before_a_failure_are_kept(prm, monkeypatch):
    from rmclient.errors import ScoringError
    from rmclient.steps import StepRewards

    recipe = prm.encoder.step_recipe()
    encoded = recipe.encode(STEPS[:2])
    rows = prm.local_backend.score([encoded[0].ids], output="tokens")

    async def failing(ids, output, progress=None):
        raise ScoringError({1: "server down"}, [rows[0], None])

    monkeypatch.setattr(prm, "_score_ids_output", failing)
    with pytest.raises(ScoringError) as info:
        prm.score_steps(STEPS[:2])
    first, second = info.value.rewards
    assert isinstance(first, StepRewards) and second is None
    assert close(first.rewards, reference_step_rewards(prm.path, [encoded[0].ids], recipe.separator_id)[0])


def test_failed_samples_stay_nan_through_reduce():
    from rmclient.client import _UNSET, _reduced

    labels = ["a", "b", "c"]
    got = _reduced([math.nan, [1.0, 2.0, 6.0]], labels, "mean", None)
    assert math.isnan(got[0]) and got[1] == 3.0
    got = _reduced([[1.0, 2.0, 6.0], math.nan], labels, _UNSET, [1.0, 0.0, 0.5])
    assert got[0] == 4.0 and math.isnan(got[1])


def test_cli_vector_lines_carry_real_token_counts(multilabel_path, multilabel, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in CHAT))
    out = tmp_path / "out.jsonl"
    run = subprocess.run([sys.executable, "-m", "rmclient", "score", str(data), "-o", str(out), "--model",
                          multilabel_path, "--kind", "vector", "--with-tokens", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["num_tokens"] for r in rows] == [len(x) for x in multilabel.encode_ids(CHAT)]
    assert close([list(r["reward"].values()) for r in rows], multilabel.score_vector(CHAT))
    assert list(rows[0]["reward"]) == multilabel.labels


def test_nan_in_rankings_and_preference_stats():
    from rmclient.preference import PreferenceStats, rank

    assert rank([1.0, math.nan, 2.0, 0.5]).order == [2, 0, 3, 1]
    stats = PreferenceStats()
    for m in (1.0, math.nan, -1.0):
        stats.add(m)
    assert stats.n == 2 and stats.skipped == 1
    ln3 = math.log(3.0)  # P = 0.75 for each pair, and 3 of 4 are right: perfectly calibrated
    assert preference_metrics([ln3, ln3, ln3, -ln3])["calibration_error"] == pytest.approx(0.0, abs=1e-12)
    assert preference_metrics([ln3] * 4)["calibration_error"] == pytest.approx(0.25, abs=1e-12)


def test_a_sync_clients_steps_coalesce_from_an_event_loop(prm):
    from rmclient.scorer import Target

    target = Target(prm)

    async def main():
        return await asyncio.gather(*(target.ascore_steps([s]) for s in STEPS))

    got = [r[0].rewards for r in asyncio.run(main())]
    assert close(got, [r.rewards for r in prm.score_steps(STEPS)])


def test_spread_by_hand():
    spans, values = [(0, 3), (5, 8)], [1.0, 2.0]
    tokens = [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert spread(values, spans, tokens) == [1.0, 1.0, 2.0, 2.0]  # (2, 4) ends in the gap: the step before
    assert spread(values, spans, [(0, 1)] + tokens[1:]) == [1.0, 1.0, 2.0, 2.0]
    assert spread(values, spans, tokens, rule="end", fill=0.0) == [0.0, 1.0, 0.0, 2.0]
    assert spread(values, spans, tokens, rule=lambda t, s, v: float(t[1])) == [2.0, 4.0, 6.0, 8.0]
    with pytest.raises(ConfigurationError, match="2 values for 1 spans"):
        spread(values, spans[:1], tokens)


def test_vllm_before_0_10_pools_a_prm_at_its_own_step_token(prm_path, prm):
    """0.7 - 0.9 always pass step_tag_id and refuse ALL pooling: STEP at the tokenizer's <extra_0>, one
    row of raw logits per step, which the client reads as the steps' rows."""
    from rmclient.adapters.vllm import VllmAdapter
    from rmclient.launchers import vllm
    from rmclient.testing.kinds import reference_token_logits

    recipe = prm.encoder.step_recipe()
    cmd = vllm.build_command(prm_path, engine_version="0.8.5")
    assert json.loads(cmd[cmd.index("--override-pooler-config") + 1]) == {
        "softmax": False, "step_tag_id": recipe.separator_id}
    encoded = recipe.encode(STEPS[:2])
    logits = reference_token_logits(prm_path, [e.ids for e in encoded])
    body = {"data": [{"index": i, "data": [rows[p] for p in e.positions]} for i, (e, rows) in
                     enumerate(zip(encoded, logits))]}
    rows = VllmAdapter("0.8.5", architecture=PRM_ARCH).parse_response(body, 2, output="tokens")
    from rmclient.steps import step_rewards

    got = [step_rewards(e, r, 1, "min").rewards for e, r in zip(encoded, rows)]
    assert close(got, reference_step_rewards(prm_path, [e.ids for e in encoded], recipe.separator_id))


def test_the_reward_kinds_example_runs_and_its_numbers_are_the_models(prm, chat_path, multilabel):
    """examples/reward_kinds.py builds the same tiny (seeded) models and prints every kind."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "reward_kinds.py"
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    solution = "2 + 2 = 4.\n\nSo the answer is 4."
    want = prm.score_steps({"prompt": "What is 2+2?", "output": solution, "step_separator": "\n\n"})
    assert close(out["steps"]["rewards"], want.rewards) and out["steps"]["aggregate"] == pytest.approx(want.aggregate)
    assert set(out["steps"]["per_policy_token"]) == set(out["steps"]["rewards"])
    assert "".join(out["tokens"]["pieces"]) == "Beijing is the capital."
    chat = RewardModelClient(chat_path)
    ra, rb = chat([{"prompt": "What is the capital of China?", "output": o} for o in ("Beijing.", "Shanghai.")])
    assert out["compare"]["p_a"] == pytest.approx(sigmoid(ra - rb), abs=1e-6)
    assert out["compare"]["p_a"] + out["compare"]["p_b"] == pytest.approx(1.0)
    samples = [{"prompt": "Hi", "output": "Hello! How can I help?"}, {"prompt": "Hi", "output": "What."}]
    assert close(out["vector"]["vectors"], multilabel.score_vector(samples))
    assert out["vector"]["weighted"] == pytest.approx(
        [0.5 * v[0] + 0.3 * v[1] + 0.2 * v[2] for v in multilabel.score_vector(samples)], abs=ABS)


def test_verl_module_functions_take_kind_steps_from_reward_kwargs(prm_path, prm):
    from rmclient.integrations import verl

    kwargs = {"model": prm_path, "trust_remote_code": True, "kind": "steps", "aggregate": "last"}
    solution, info = "2+2 is 4.\n\nSo the answer is 4.", {"prompt": "What is 2+2?"}
    want = prm.score_steps({"prompt": "What is 2+2?", "output": solution, "step_separator": "\n\n"})
    one = verl.compute_score(data_source="math", solution_str=solution, ground_truth=None, extra_info=info, **kwargs)
    assert one["score"] == pytest.approx(want.rewards[-1], abs=ABS) and close(one["step_rewards"], want.rewards)
    batch = verl.compute_score_batch(data_sources=["math"] * 2, solution_strs=[solution, "It is 4."],
                                     ground_truths=[None, None], extra_infos=[info, info], **kwargs)
    assert [b["score"] for b in batch][0] == pytest.approx(one["score"], abs=ABS) and len(batch) == 2
    with pytest.raises(ConfigurationError, match="unknown aggregate"):
        verl.compute_score(solution_str=solution, extra_info=info, **{**kwargs, "aggregate": "median"})
