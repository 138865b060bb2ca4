"""The scripts in examples/ run as their docstrings say, inside each framework's own code.

Every example scores through a fake vLLM server (tests/fake_engine.py): its reward is a
function of the token ids it receives, so a reward that reaches the trainer through the
wrong sample, the wrong encoding or a lost request is caught.

* TRL: ``examples/trl_grpo.py`` runs a real ``GRPOTrainer`` (tiny policy, CPU); the step
  means it prints are the means of what the server answered.
* verl: ``examples/verl_reward.py`` loaded the way verl loads a custom reward file and
  called as its naive and batch reward managers call it; and run as a script.
* OpenRLHF 0.11.2: ``examples/openrlhf_reward_func.py`` loaded and called by OpenRLHF's
  own ``SingleTurnAgentExecutor`` (installed ``--no-deps`` in ``.venv/openrlhf`` by
  tests/run.sh), with a stand-in for its vLLM generation engine; the same executor
  against ``rmclient serve``'s ``/get_reward``.
* ms-swift 4.6.0: ``examples/swift_plugin.py`` loaded by ms-swift's plugin loader and run
  through its GRPO reward loop.
* ``examples/reward_kinds.py`` (every reward kind on tiny models) is run by ``tests/test_kinds.py``,
  next to the models it is checked against; ``examples/llm_judge.py`` (every judge mode) by
  ``tests/test_judge.py``, against a fake chat server whose verdicts it checks.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from rmclient import RewardModelClient
from tests.fake_engine import FakeEngine, reward_of
from tests.test_integrations_verl_swift import (
    ROWS,
    STRIPPED,
    SWIFT_DIR,
    batch_manager_call,
    expected_polar,
    naive_manager_calls,
    swift_rows,
    verl_load_module,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
OPENRLHF_DIR = ROOT / ".venv" / "openrlhf"


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory) -> str:
    from rmclient.testing.policy import build_policy

    return str(build_policy(tmp_path_factory.mktemp("models") / "tiny-policy"))


@pytest.fixture
def engine():
    with FakeEngine("vllm", "0.32.0") as fake:
        yield fake


def _env(polar_path: str, url: str, **extra: str) -> dict:
    return dict(os.environ, RMCLIENT_MODEL=polar_path, RMCLIENT_SERVER_TYPE="vllm", RMCLIENT_SERVER_ADDRESS=url,
                HF_HUB_OFFLINE="1", **extra)


def _answered(fake: FakeEngine) -> list:
    return [reward_of(ids) for r in fake.requests if r["path"] == "/pooling" for ids in r["body"]["input"]]


def test_every_example_is_tested():
    tested = {"trl_grpo.py", "verl_reward.py", "openrlhf_reward_func.py", "swift_plugin.py",
              "reward_kinds.py",  # tests/test_kinds.py::test_the_reward_kinds_example_runs_...
              "llm_judge.py"}  # tests/test_judge.py::test_the_judge_example_runs_every_mode
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.skipif(not __import__("importlib").util.find_spec("trl"), reason="TRL is installed by tests/run.sh")
def test_trl_example_trains_on_the_servers_rewards(policy_path, polar_path, engine, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "trl_grpo.py"), "--policy", policy_path, "--reward-model", polar_path,
         "--server-type", "vllm", "--server-address", engine.url, "--max-steps", "2",
         "--max-completion-length", "8", "--cpu", "--output-dir", str(tmp_path / "out")],
        env=_env(polar_path, engine.url), capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"step"')]  # TRL prints its own logs too
    assert [s["step"] for s in steps] == [1, 2]
    answered = _answered(engine)
    assert len(answered) == 4  # 2 steps x 1 prompt x 2 generations, each scored once
    # each step logs the mean of its two completions' rewards
    assert sum(s["reward"] for s in steps) / 2 == pytest.approx(sum(answered) / 4, abs=1e-6)


def test_verl_example_loaded_as_verl_loads_it(polar_path, engine, monkeypatch, tmp_path):
    for k, v in _env(polar_path, engine.url).items():
        monkeypatch.setenv(k, v)
    module = verl_load_module(EXAMPLES / "verl_reward.py")
    compute_score, compute_score_batch = module.compute_score, module.compute_score_batch
    with RewardModelClient(polar_path, server_type="vllm", server_address=engine.url) as direct:
        expected = expected_polar(direct)
    assert naive_manager_calls(compute_score) == expected
    assert batch_manager_call(compute_score_batch) == expected
    module.client.close()

    proc = subprocess.run([sys.executable, str(EXAMPLES / "verl_reward.py")], env=_env(polar_path, engine.url),
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(line)["reward"] for line in proc.stdout.splitlines()]
    prompt = [{"role": "user", "content": "What is the capital of China?"}]
    with RewardModelClient(polar_path, server_type="vllm", server_address=engine.url) as direct:
        assert got == direct([{"prompt": prompt, "reference": "Beijing.", "output": o} for o in ("Beijing.", "Shanghai.")])


# -- OpenRLHF ---------------------------------------------------------------------------------


class FakeLLM:
    """OpenRLHF's vLLM engine, as SingleTurnAgentExecutor uses it: ``generate`` returns fixed token ids."""

    def __init__(self, completions):
        self.completions = completions

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        ids = self.completions[tuple(prompt_token_ids)]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, finish_reason="stop", logprobs=None)])


def _rollouts(policy_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_path)
    rows = [("What is the capital of China?", "Beijing.", " Beijing."), ("Say hello, how are you?",
            "Hello, I am fine, thank you.", " Hello, I am fine.")]
    completions = {}
    for prompt, _, response in rows:
        prompt_ids = tok(text=prompt, add_special_tokens=False)["input_ids"]
        completions[tuple(prompt_ids)] = tok(text=response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return tok, rows, FakeLLM(completions)


def _execute(executor, tok, llm, rows):
    params = SimpleNamespace(max_tokens=32, logprobs=None)

    async def run():
        return await asyncio.gather(*(
            executor.execute(prompt, label, params, max_length=128, hf_tokenizer=tok, llm_engine=llm)
            for prompt, label, _ in rows
        ))

    return asyncio.run(run())


@pytest.mark.skipif(not (OPENRLHF_DIR / "openrlhf").is_dir(), reason="OpenRLHF is installed --no-deps by tests/run.sh")
def test_openrlhf_example_in_openrlhfs_own_executor(policy_path, polar_path, engine, monkeypatch):
    monkeypatch.syspath_prepend(str(OPENRLHF_DIR))
    for k, v in _env(polar_path, engine.url).items():
        monkeypatch.setenv(k, v)
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    tok, rows, llm = _rollouts(policy_path)
    executor = SingleTurnAgentExecutor(remote_rm_url=str(EXAMPLES / "openrlhf_reward_func.py"))
    outputs = _execute(executor, tok, llm, rows)
    executor.reward_func.__globals__["client"]().close()
    with RewardModelClient(polar_path, server_type="vllm", server_address=engine.url) as direct:
        # the response is what follows the prompt, without the policy's </s>
        expected = direct([{"prompt": p, "reference": ref, "output": resp} for p, ref, resp in rows])
    assert [float(o["reward"]) for o in outputs] == pytest.approx(expected, abs=1e-6)
    assert [float(o["scores"]) for o in outputs] == pytest.approx(expected, abs=1e-6)
    assert all(math.isfinite(x) for x in expected)


@pytest.mark.skipif(not (OPENRLHF_DIR / "openrlhf").is_dir(), reason="OpenRLHF is installed --no-deps by tests/run.sh")
def test_openrlhf_against_rmclient_serve(policy_path, polar_path, monkeypatch):
    """The README's outcome-RM path: OpenRLHF's HTTP reward client against `rmclient serve`."""
    from rmclient.serve import RewardServer, ServerThread

    monkeypatch.syspath_prepend(str(OPENRLHF_DIR))
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    tok, rows, llm = _rollouts(policy_path)
    with ServerThread(RewardServer(polar_path)) as srv:
        executor = SingleTurnAgentExecutor(remote_rm_url=f"{srv.url}/get_reward")
        outputs = _execute(executor, tok, llm, rows)
        queries = [tok.decode(tok(text=p, add_special_tokens=False)["input_ids"] + llm.completions[
            tuple(tok(text=p, add_special_tokens=False)["input_ids"])], skip_special_tokens=False) for p, _, _ in rows]
        direct = httpx.post(f"{srv.url}/get_reward", json={"query": queries}).json()["rewards"]
    # OpenRLHF logs a failed reward call and leaves the reward None: None here is a failure
    assert [o["reward"] for o in outputs] == [[r] for r in direct]
    assert all(isinstance(r, float) and math.isfinite(r) for r in direct)


# -- ms-swift --------------------------------------------------------------------------------

SWIFT_SCRIPT = r"""
import json, sys, torch
from swift.rewards import orms
from swift.utils import import_external_file
from swift.rlhf_trainers.utils import resolve_reward_funcs
from swift.rl_core.grpo_algorithm import compute_rewards_per_func
from swift.rl_core.data import GRPOSample

plugin, rows = sys.argv[1], json.loads(sys.argv[2])
import_external_file(plugin)                                          # --external_plugins
funcs, names = resolve_reward_funcs(["polar_and_length"], args=None)  # --reward_funcs
samples = [GRPOSample.from_row(r) for r in rows]
rewards = compute_rewards_per_func(samples, funcs, None, device=torch.device("cpu"), trainer_state=None)
print(json.dumps({"names": names, "rewards": rewards.tolist()}))
"""


@pytest.mark.skipif(not (SWIFT_DIR / "swift").is_dir(), reason="ms-swift is installed --no-deps by tests/run.sh")
def test_swift_example_in_ms_swifts_own_reward_loop(polar_path, engine, tmp_path):
    env = _env(polar_path, engine.url, PYTHONPATH=os.pathsep.join([str(SWIFT_DIR), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", SWIFT_SCRIPT, str(EXAMPLES / "swift_plugin.py"), json.dumps(swift_rows())],
                          env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    with RewardModelClient(polar_path, server_type="vllm", server_address=engine.url) as direct:
        polar = expected_polar(direct)
    groups = [info["index"] for _, _, info in ROWS]
    expected = []
    for i, (x, g) in enumerate(zip(polar, groups)):
        members = [polar[j] for j in range(len(polar)) if groups[j] == g]
        mean = sum(members) / len(members)
        std = math.sqrt(sum((m - mean) ** 2 for m in members) / len(members))
        z = (x - mean) / (std + 1e-6)
        expected.append(max(-5.0, min(5.0, z - len(STRIPPED[i]) / 1000.0)))
    assert [row[0] for row in out["rewards"]] == pytest.approx(expected, rel=1e-5, abs=1e-5)
