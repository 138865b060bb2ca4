"""A real vLLM (the CPU build in .venv-vllm, see .ci/vllm-env.sh), started by our launcher.

Three tiny models, one server each, started once and one at a time
(~20 s each on 2 cores):
  - a POLAR-like ``LlamaForSequenceClassification`` (rewards compared to transformers
    and, through ``RewardModelClient``, to the in-process client);
  - ``InternLM2ForRewardModel`` (remote configuration, ``--trust-remote-code``);
  - ``Qwen2ForRewardModel``;
the last two compared to ``rmclient.testing.remote_code.reference_rewards``.
Skipped when .venv-vllm is absent, unless CI=true (then it fails).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import httpx
import pytest

from rmclient.errors import ConfigurationError
from rmclient.launchers import start
from rmclient.launchers._common import installed_version

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}
FLAGS = dict(dtype="float32", max_model_len=512, extra_args=["--enforce-eager"])
TOL = 1e-4
API_KEY = "vllm-test-key"  # the qwen2 server is launched with it

POLAR_SAMPLES = [
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."},
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Shanghai."},
    {"prompt": "The quick brown fox", "reference": "jumps over the lazy dog.", "output": "1 2 3 4 5"},
    {"prompt": "北京是中国的首都。", "reference": "", "output": "Ünïcödé text, émojis 🙂"},
    {"prompt": "def score(sample):", "reference": "return reward", "output": "x^2 + y^2 = z^2"},
]
TOKEN_TEXTS = [
    "What is the capital of China? Beijing.",
    "Shanghai.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "user assistant system: Hello, how are you? I am fine, thank you.",
]


def _vllm_available() -> bool:
    if not VLLM_PYTHON.exists():
        return False
    try:
        return installed_version(("vllm", "vllm-cpu"), python=str(VLLM_PYTHON)) is not None
    except Exception:
        return False


if not _vllm_available():
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"CI=true but the vLLM environment {VLLM_PYTHON.parent.parent} is missing or broken: "
            "run .ci/vllm-env.sh",
            pytrace=False,
        )
    pytest.skip(
        f"no vLLM environment at {VLLM_PYTHON.parent.parent} (build it with .ci/vllm-env.sh)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from rmclient.testing import build_math_shepherd_prm, build_multilabel_rm, build_polar_model, build_qwen2_prm
    from rmclient.testing.remote_code import build_internlm2_reward_model, build_qwen2_reward_model

    root = tmp_path_factory.mktemp("vllm-models")
    return {
        "polar": str(build_polar_model(root / "tiny-polar")),
        "internlm2": str(build_internlm2_reward_model(root / "tiny-internlm2-reward")),
        "qwen2": str(build_qwen2_reward_model(root / "tiny-qwen2-rm")),
        "prm": str(build_qwen2_prm(root / "tiny-qwen2-prm")),
        "multilabel": str(build_multilabel_rm(root / "tiny-multilabel-rm")),
        "shepherd": str(build_math_shepherd_prm(root / "tiny-math-shepherd")),
    }


class _Servers:
    """One vLLM server at a time, started on first use through the launcher.

    Measured on 2 cores: three servers started together are ready after ~68 s,
    one after another after ~20 s each, so they run one after another (and the
    previous one is stopped first, which also keeps memory low). Each stop is
    checked to leave no process of the engine's group behind.
    """

    def __init__(self, models, log_dir):
        self.models = models
        self.log_dir = log_dir
        self.name = None
        self.server = None
        self.timings = {}

    def __getitem__(self, name):
        if name != self.name:
            self.close()
            t0 = time.monotonic()
            self.server = start(
                "vllm",
                self.models[name],
                python=str(VLLM_PYTHON),
                env=ENV,
                trust_remote_code=name in ("internlm2", "prm"),
                served_model_name=name,
                steps="math_shepherd" if name == "shepherd" else None,
                api_key=API_KEY if name == "qwen2" else None,
                ready_timeout=300,
                stop_grace=20,
                log_path=self.log_dir / f"vllm-{name}.log",
                **FLAGS,
            )
            self.name = name
            self.timings[name] = time.monotonic() - t0
        return self.server

    def close(self):
        if self.server is not None:
            server, self.server, self.name = self.server, None, None
            server.stop()
            assert server.group_members() == [], f"processes left behind by {server.engine}"


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory):
    pool = _Servers(models, tmp_path_factory.mktemp("vllm-logs"))
    try:
        yield pool
    finally:
        pool.close()
        print("\nvLLM ready after (s):", {k: round(v, 1) for k, v in pool.timings.items()})  # shown with -s


def _auth(server):
    return {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}


def _pool(server, ids, **extra):
    r = httpx.post(
        server.url + "/pooling",
        json={"model": _served(server), "input": ids, "encoding_format": "float", **extra},
        headers=_auth(server),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(ids)))
    return [d["data"] for d in data]


def _served(server) -> str:
    return server.command[server.command.index("--served-model-name") + 1]


def _ids(path, add_special_tokens=True):
    from transformers import PreTrainedTokenizerFast  # not Auto*: it would ask about the remote code

    tok = PreTrainedTokenizerFast.from_pretrained(path)
    return [tok(t, add_special_tokens=add_special_tokens)["input_ids"] for t in TOKEN_TEXTS]


def _transformers_logits(path, ids):
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(input_ids=torch.tensor([x])).logits[0, 0].item() for x in ids]


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# --- the server as launched -----------------------------------------------------------------------


# --- vLLM's own argument parser accepts every flag the launcher emits (no server) ------------------

_PARSER_PROBE = """
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # older layout
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
args = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])
validate_parsed_serve_args(args)
print(json.dumps(vars(args), default=str))
"""


def test_vllm_parser_accepts_the_launch_command(tmp_path):
    import json
    import subprocess

    from rmclient.launchers import LaunchOptions, vllm

    model = tmp_path / "causal"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    opts = LaunchOptions(
        host="0.0.0.0", port=9001, tensor_parallel_size=2, data_parallel_size=3, api_key="secret",
        trust_remote_code=True, served_model_name="rm", max_model_len=512, dtype="float32",
        extra_args=["--enforce-eager"],
    )  # fmt: skip
    cmd = vllm.build_command(str(model), opts, python=str(VLLM_PYTHON))  # the installed version's flags
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    out = subprocess.run(
        [str(VLLM_PYTHON), "-c", _PARSER_PROBE, *cmd[3:]], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["model"] == str(model)
    assert (parsed["runner"], parsed["convert"]) == ("pooling", "classify")
    assert "use_activation" in str(parsed["pooler_config"]) and "False" in str(parsed["pooler_config"])
    assert (parsed["tensor_parallel_size"], parsed["data_parallel_size"]) == (2, 3)
    assert (parsed["host"], parsed["port"]) == ("0.0.0.0", 9001)
    assert "secret" not in cmd and not parsed["api_key"]  # the key travels in VLLM_API_KEY
    assert parsed["served_model_name"] in (["rm"], "rm")
    assert (parsed["trust_remote_code"], parsed["max_model_len"], parsed["dtype"]) == (True, 512, "float32")
    assert parsed["enforce_eager"] is True


# Tests are grouped by model so that each server starts once.


def _check_launch(server, name):
    """The launcher's command for the installed vLLM, and what the server says about itself."""
    assert server.engine_version.startswith("0.32"), server.engine_version
    cmd = server.command
    assert cmd[:3] == [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--runner") + 1] == "pooling"
    assert cmd[cmd.index("--pooler-config") + 1] == '{"use_activation": false}'  # raw by default too
    assert ("--trust-remote-code" in cmd) == (name == "internlm2")
    models_answer = httpx.get(server.url + "/v1/models", headers=_auth(server), timeout=10).json()
    assert models_answer["data"][0]["id"] == name
    assert models_answer["data"][0]["max_model_len"] == 512
    assert httpx.get(server.url + "/version", timeout=10).json()["version"].startswith("0.32")


# --- seq-cls (POLAR-like Llama) --------------------------------------------------------------------


def test_seq_cls_pooling_raw_equals_transformers(servers, models):
    _check_launch(servers["polar"], "polar")
    ids = _ids(models["polar"])
    expected = _transformers_logits(models["polar"], ids)
    raw = [d[0] for d in _pool(servers["polar"], ids, use_activation=False)]
    assert max(abs(a - b) for a, b in zip(raw, expected)) < TOL, (raw, expected)
    assert any(not 0.0 <= r <= 1.0 for r in raw), raw  # really raw: not squashed into [0, 1]
    # without the field: raw too, since the launcher's --pooler-config turns vLLM's default activation off
    # (xtuner's client sends no field); asked for, the activation is vLLM's sigmoid
    default = [d[0] for d in _pool(servers["polar"], ids)]
    assert max(abs(a - b) for a, b in zip(default, expected)) < TOL
    activated = [d[0] for d in _pool(servers["polar"], ids, use_activation=True)]
    assert max(abs(a - _sigmoid(b)) for a, b in zip(activated, expected)) < TOL


def test_seq_cls_classify_route_raw(servers, models):
    ids = _ids(models["polar"])
    expected = _transformers_logits(models["polar"], ids)
    r = httpx.post(
        servers["polar"].url + "/classify",
        json={"model": "polar", "input": ids, "use_activation": False},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    got = [d["probs"][0] for d in r.json()["data"]]
    assert max(abs(a - b) for a, b in zip(got, expected)) < TOL


def test_client_vllm_equals_in_process(servers, models):
    from rmclient import RewardModelClient

    path = models["polar"]
    local = RewardModelClient(path)(POLAR_SAMPLES)
    try:
        remote_client = RewardModelClient(path, server_type="vllm", server_address=servers["polar"].url)
        remote = remote_client(POLAR_SAMPLES)
    except ConfigurationError as exc:
        if "not wired" in str(exc):
            pytest.skip(f"RewardModelClient's vLLM backend is not there yet: {exc}")
        raise
    assert len(remote) == len(local) == len(POLAR_SAMPLES)
    assert max(abs(a - b) for a, b in zip(remote, local)) < TOL, (remote, local)
    assert any(not 0.0 <= r <= 1.0 for r in remote), remote  # raw, not sigmoid
    assert len(set(round(r, 3) for r in local)) == len(local)  # distinct, so order is checked
    again = remote_client(POLAR_SAMPLES[::-1])
    assert max(abs(a - b) for a, b in zip(again, remote[::-1])) < TOL
    assert abs(remote_client(POLAR_SAMPLES[1]) - local[1]) < TOL  # one dict -> one float


def test_ray_data_against_vllm_equals_the_single_process_client(servers, models):
    """Ray Data actors (a local cluster) scoring through the real server give one client's rewards, in order."""
    ray = __import__("ray") if os.environ.get("CI") == "true" else pytest.importorskip("ray")  # CI installs it
    from rmclient import RewardModelClient
    from rmclient.integrations.ray import RewardScorer

    path, url = models["polar"], servers["polar"].url
    samples = POLAR_SAMPLES * 4
    with RewardModelClient(path, server_type="vllm", server_address=url) as client:
        expected = client(samples)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        rows = ray.data.from_items([dict(s, id=i) for i, s in enumerate(samples)]).map_batches(
            RewardScorer, fn_constructor_kwargs=dict(model=path, server_type="vllm", server_address=url),
            concurrency=2, batch_size=3).take_all()
    finally:
        ray.shutdown()
    assert [r["id"] for r in rows] == list(range(len(samples)))
    assert [r["reward"] for r in rows] == pytest.approx(expected, abs=TOL)
    assert len(set(round(r, 3) for r in expected[:5])) == 5  # distinct, so order is checked


# --- token-reward models (remote code) ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["internlm2", "qwen2"])
def test_token_reward_models_match_reference(servers, models, name):
    from rmclient.testing.remote_code import reference_token_rewards

    _check_launch(servers[name], name)
    ids = _ids(models[name])
    if name == "qwen2":
        assert all(x[0] != 0 for x in ids)  # the Qwen-like tokenizer adds no BOS
    expected = reference_token_rewards(models[name], ids)
    got = _pool(servers[name], ids, use_activation=False)
    for seq_got, seq_exp in zip(got, expected):
        assert len(seq_got) == len(seq_exp)  # one [r] per token
        assert max(abs(g[0] - e) for g, e in zip(seq_got, seq_exp)) < TOL
    last = [seq[-1][0] for seq in got]
    assert any(not 0.0 <= r <= 1.0 for r in last), last


def test_api_key_reaches_vllm_in_its_environment(servers, models):
    """The key is not in argv (``ps``), vLLM enforces it, and our client sends it."""
    from rmclient import RewardModelClient

    server = servers["qwen2"]
    assert API_KEY not in " ".join(server.command)
    assert httpx.get(server.url + "/v1/models", timeout=10).status_code == 401
    assert httpx.get(server.url + "/v1/models", headers=_auth(server), timeout=10).status_code == 200
    # vLLM guards only /v1-style routes: the reward route answers without the key (the launcher warns)
    ids = _ids(models["qwen2"])[:1]
    assert httpx.post(server.url + "/pooling", json={"model": "qwen2", "input": ids}, timeout=60).status_code == 200
    from rmclient.testing.remote_code import reference_rewards

    samples = [{"prompt": "What is 2 + 2?", "output": o} for o in ("4", "5")]
    client = RewardModelClient(models["qwen2"], server_type="vllm", server_address=server.url, api_key=API_KEY)
    got = client(samples)
    assert got == pytest.approx(reference_rewards(models["qwen2"], client.encode_ids(samples)), abs=TOL)


# --- more than one float: process, dense and multi-objective rewards (issue 13) ---------------------------

STEP_SAMPLES = [
    {"prompt": "What is 2+2?", "steps": ["2+2 is 4.", "So the answer is 4."]},
    {"prompt": "Capital of China?", "output": "Think.\n\nBeijing is the capital.\n\nDone.", "step_separator": "\n\n"},
    {"prompt": "北京?", "output": "Step one ✓ | step two", "step_separator": " | "},
]
CHAT_SAMPLES = [
    {"prompt": "What is the capital of China?", "output": "Beijing. The capital city."},
    {"prompt": "Hello, how are you?", "output": "I am fine, thank you."},
]


def test_process_rewards_through_vllm_equal_the_forward_pass(servers, models):
    """The launcher serves the PRM with ALL pooling and no activation; the client reads the two class
    logits at every step token and takes softmax[1], as the model card does."""
    from rmclient import RewardModelClient
    from rmclient.testing.kinds import reference_step_rewards

    server = servers["prm"]
    flags = server.command[server.command.index("--pooler-config") + 1]
    assert json.loads(flags) == {"pooling_type": "ALL", "use_activation": False}
    client = RewardModelClient(models["prm"], server_type="vllm", server_address=server.url, trust_remote_code=True)
    recipe = client.encoder.step_recipe()
    expected = reference_step_rewards(models["prm"], [e.ids for e in recipe.encode(STEP_SAMPLES)], recipe.separator_id)
    got = client.score_steps(STEP_SAMPLES)
    for result, want in zip(got, expected):
        assert len(result.rewards) == len(want) and result.cut == []
        assert max(abs(a - b) for a, b in zip(result.rewards, want)) < TOL
    local = RewardModelClient(models["prm"], trust_remote_code=True).score_steps(STEP_SAMPLES)
    assert max(abs(a - b) for r, l in zip(got, local) for a, b in zip(r.rewards, l.rewards)) < TOL
    with pytest.raises(ConfigurationError, match="score_steps"):
        client(CHAT_SAMPLES)


def test_dense_rewards_through_vllm_equal_the_reference(servers, models):
    from rmclient import RewardModelClient
    from rmclient.testing.remote_code import reference_token_rewards

    client = RewardModelClient(models["qwen2"], server_type="vllm", server_address=servers["qwen2"].url,
                               api_key=API_KEY)
    ids = client.encode_ids(CHAT_SAMPLES)
    expected = reference_token_rewards(models["qwen2"], ids)
    for sample, x, dense, want in zip(CHAT_SAMPLES, ids, client.score_tokens(CHAT_SAMPLES), expected):
        text = client.encode(sample)
        start = len(client.tokenizer(text[: text.rfind(sample["output"])], add_special_tokens=False)["input_ids"])
        assert max(abs(a - b) for a, b in zip(dense.values, want[start:start + len(dense.values)])) < TOL
        assert "".join(sample["output"][a:b] for a, b in dense.spans) == sample["output"]


@pytest.mark.parametrize("route", ["pooling", "classify"])
def test_multi_objective_vectors_through_vllm_are_raw(servers, models, route):
    import torch
    from transformers import AutoModelForSequenceClassification

    from rmclient import RewardModelClient

    from rmclient.adapters.vllm import VllmAdapter

    server = servers["multilabel"]
    remote = RewardModelClient(models["multilabel"], server_type="vllm", server_address=server.url)
    ids = remote.encode_ids(CHAT_SAMPLES)
    model = AutoModelForSequenceClassification.from_pretrained(models["multilabel"], dtype=torch.float32).eval()
    with torch.no_grad():
        expected = [model(torch.tensor([x])).logits[0].tolist() for x in ids]
    if route == "pooling":  # the client's route
        got = remote.score_vector(CHAT_SAMPLES)
    else:  # the table's other raw route, asked by the adapter itself
        adapter = VllmAdapter("0.32.0", architecture="LlamaForSequenceClassification", endpoint="classify")
        request = adapter.build_request(ids, "vector")
        answer = httpx.post(server.url + request.path, json=request.json, timeout=60)
        assert answer.status_code == 200, answer.text
        got = adapter.parse_response(answer.json(), len(ids), output="vector")
    assert remote.labels == ["helpfulness", "correctness", "coherence"]
    for g, e in zip(got, expected):
        assert len(g) == 3 and max(abs(a - b) for a, b in zip(g, e)) < TOL
    assert any(abs(sum(g) - 1.0) > 0.1 for g in got)  # raw logits, not a softmax
    with pytest.raises(ConfigurationError, match="ONE pooling task"):
        remote.score_tokens(CHAT_SAMPLES)


def test_math_shepherd_steps_through_vllm_equal_the_lm_logits(servers, models):
    """`rmclient launch vllm --steps math_shepherd`: the LM-head rows of "+" and "-" as a two-label
    classifier at every token (raw); the client takes softmax[0] at each step tag."""
    from rmclient import RewardModelClient
    from rmclient.testing.kinds import reference_shepherd_rewards

    server = servers["shepherd"]
    assert json.loads(server.command[server.command.index("--hf-overrides") + 1]) == {
        "classifier_from_token": ["+", "-"], "method": "no_post_processing"}
    client = RewardModelClient(models["shepherd"], server_type="vllm", server_address=server.url)
    assert client.encoder.step_format.name == "math_shepherd"
    expected = reference_shepherd_rewards(models["shepherd"], [e.ids for e in client.encoder.step_recipe().encode(STEP_SAMPLES)])
    for result, want in zip(client.score_steps(STEP_SAMPLES), expected):
        assert len(result.rewards) == len(want) and max(abs(a - b) for a, b in zip(result.rewards, want)) < TOL
