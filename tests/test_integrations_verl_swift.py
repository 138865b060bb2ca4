"""verl and ms-swift: our functions called exactly as each framework calls them.

verl (checked against verl 0.9.1's source; verl itself needs ray and a GPU stack, so it
is not imported): the module is loaded by file path the way ``verl.utils.import_utils.
load_module`` does, wrapped with ``reward_kwargs`` the way ``get_custom_reward_fn`` does,
and called with the keyword names and value types of ``NaiveRewardManager`` (legacy and
reward-loop), the reward loop's async path, and ``BatchRewardManager``.

ms-swift (4.6.0): its real code is installed ``--no-deps`` in ``.venv/ms-swift`` by
tests/run.sh; a subprocess with that folder on its path loads our plugin file with
ms-swift's own ``import_external_file``, resolves ``--reward_funcs rmclient`` with
``resolve_reward_funcs`` and scores ``GRPOSample`` rows with ``compute_rewards_per_func``,
the function its GRPO trainer calls.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from rmclient import ConfigurationError, InvalidSampleError, RewardModelClient
from rmclient.integrations import SWIFT_PLUGIN, make_async_compute_score, make_compute_score, make_compute_score_batch
from rmclient.integrations import verl as rm_verl

ROOT = Path(__file__).resolve().parent.parent
SWIFT_DIR = ROOT / ".venv" / "ms-swift"
VERL_FILE = Path(rm_verl.__file__)

PROMPT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of China?"}]
ROWS = [
    # (solution_str as the policy wrote it, ground truth, extra_info)
    ("<think>The capital... Beijing.</think>\n\nBeijing.", "Beijing.", {"prompt": PROMPT, "index": 0, "split": "train"}),
    ("<think>hmm</think>Shanghai.", "Beijing.", {"prompt": PROMPT, "index": 0, "split": "train"}),
    ("Hello, I am fine.", [{"role": "assistant", "content": "Hello, I am fine, thank you."}],
     {"prompt": "Say hello, how are you?", "index": 1, "split": "train"}),
]
STRIPPED = ["Beijing.", "Shanghai.", "Hello, I am fine."]


def expected_polar(client, strip=True):
    return client([
        {"prompt": info["prompt"], "reference": gt, "output": STRIPPED[i] if strip else sol}
        for i, (sol, gt, info) in enumerate(ROWS)
    ])


# -- verl's calling code, reproduced from verl 0.9.1 ----------------------------------------


def verl_load_module(module_path):
    """verl.utils.import_utils.load_module for a file path."""
    spec = importlib.util.spec_from_file_location(f"custom_module_{hash(os.path.abspath(module_path))}", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verl_load_extern_object(module_path: str, object_name: str):
    """verl.utils.import_utils.load_extern_object for a file path."""
    return getattr(verl_load_module(module_path), object_name)


def _call_with_kwargs(raw_fn, extra_kwargs, *args, **kwargs):
    return raw_fn(*args, **{**kwargs, **extra_kwargs})


async def _call_with_kwargs_async(raw_fn, extra_kwargs, *args, **kwargs):
    return await raw_fn(*args, **{**kwargs, **extra_kwargs})


def verl_get_custom_reward_fn(path: str, name: str, reward_kwargs: dict):
    """verl.trainer.ppo.reward.get_custom_reward_fn."""
    raw_fn = verl_load_extern_object(path, name)
    if not inspect.iscoroutinefunction(raw_fn):
        return partial(_call_with_kwargs, raw_fn, reward_kwargs)
    return partial(_call_with_kwargs_async, raw_fn, reward_kwargs)


def naive_manager_calls(compute_score, router=False):
    """NaiveRewardManager: one call per sample, extra_info from non_tensor_batch plus num_turns etc."""
    scores = []
    for sol, gt, info in ROWS:
        extra_info = dict(info)
        extra_info["num_turns"] = None
        extra_info["rollout_reward_scores"] = {}
        extra = {"reward_router_address": "127.0.0.1:1", "reward_model_tokenizer": object()} if router else {}
        scores.append(
            compute_score(data_source=np.str_("general"), solution_str=sol, ground_truth=gt, extra_info=extra_info, **extra)
        )
    return scores


async def reward_loop_calls(compute_score):
    """verl.experimental.reward_loop NaiveRewardManager.run_single, for all samples concurrently."""
    loop = asyncio.get_running_loop()
    is_async = inspect.iscoroutinefunction(compute_score)

    async def run_single(sol, gt, info):
        extra_info = dict(info, num_turns=None, rollout_reward_scores={})
        kw = dict(data_source="general", solution_str=sol, ground_truth=gt, extra_info=extra_info)
        if is_async:
            return await compute_score(**kw)
        return await loop.run_in_executor(None, lambda: compute_score(**kw))

    return await asyncio.gather(*(run_single(*row) for row in ROWS))


def batch_manager_call(compute_score_batch, reward_kwargs=None):
    """BatchRewardManager.verify: numpy object arrays, as DataProto's non_tensor_batch holds them."""
    data_sources = np.array(["general"] * len(ROWS), dtype=object)
    extras = np.empty(len(ROWS), dtype=object)
    for i, (_, _, info) in enumerate(ROWS):
        extras[i] = dict(info)
        extras[i]["prompt"] = np.array(info["prompt"], dtype=object) if isinstance(info["prompt"], list) else info["prompt"]
    for i in range(len(ROWS)):
        extras[i]["rollout_reward_scores"] = {}
    return compute_score_batch(
        data_sources=data_sources,
        solution_strs=[sol for sol, _, _ in ROWS],
        ground_truths=[gt for _, gt, _ in ROWS],
        extra_infos=extras,
        **(reward_kwargs or {}),
    )


# -- verl tests ------------------------------------------------------------------------------


def test_verl_file_with_reward_kwargs_naive_and_batch(polar_path, monkeypatch):
    for var in ("RMCLIENT_MODEL", "RMCLIENT_SERVER_TYPE", "RMCLIENT_SERVER_ADDRESS", "RMCLIENT_STRIP_THINK"):
        monkeypatch.delenv(var, raising=False)
    client = RewardModelClient(polar_path)
    expected = expected_polar(client)
    kwargs = {"model": polar_path, "strip_think": True}
    fn = verl_get_custom_reward_fn(str(VERL_FILE), "compute_score", kwargs)
    got = naive_manager_calls(fn)
    assert all(type(s) is float for s in got)
    assert got == pytest.approx(expected, rel=1e-5)
    # verl's reward loop with a verl-managed reward model adds router kwargs: ignored
    assert naive_manager_calls(fn, router=True) == pytest.approx(expected, rel=1e-5)
    # the batch manager (POLAR's own verl recipe uses it)
    batch = verl_get_custom_reward_fn(str(VERL_FILE), "compute_score_batch", kwargs)
    assert batch_manager_call(batch) == pytest.approx(expected, rel=1e-5)
    # without strip_think the <think> block is scored too, and the rewards differ
    raw = naive_manager_calls(verl_get_custom_reward_fn(str(VERL_FILE), "compute_score", {"model": polar_path}))
    assert raw == pytest.approx(expected_polar(client, strip=False), rel=1e-5)
    assert raw[0] != pytest.approx(expected[0], rel=1e-3)


def test_verl_env_config_and_async_reward_loop(polar_path, monkeypatch):
    monkeypatch.setenv("RMCLIENT_MODEL", polar_path)
    monkeypatch.setenv("RMCLIENT_STRIP_THINK", "1")
    expected = expected_polar(RewardModelClient(polar_path))
    fn = verl_get_custom_reward_fn(str(VERL_FILE), "compute_score_async", {})
    assert inspect.iscoroutinefunction(fn)  # verl's reward loop awaits it
    assert asyncio.run(reward_loop_calls(fn)) == pytest.approx(expected, rel=1e-5)
    sync = verl_get_custom_reward_fn(str(VERL_FILE), "compute_score", {})
    assert asyncio.run(reward_loop_calls(sync)) == pytest.approx(expected, rel=1e-5)  # in verl's thread pool


def test_verl_factories_and_outcome_rm(polar_path, chat_path):
    polar = RewardModelClient(polar_path)
    expected = expected_polar(polar)
    assert naive_manager_calls(make_compute_score(polar, strip_think=True)) == pytest.approx(expected, rel=1e-5)
    assert batch_manager_call(make_compute_score_batch(polar, strip_think=True)) == pytest.approx(expected, rel=1e-5)
    afn = make_async_compute_score(polar, strip_think=True)
    assert asyncio.run(reward_loop_calls(afn)) == pytest.approx(expected, rel=1e-5)
    # make_async_compute_score is make_compute_score(asynchronous=True)
    assert inspect.iscoroutinefunction(make_compute_score(polar, asynchronous=True))
    assert not inspect.iscoroutinefunction(make_compute_score(polar))
    # an outcome RM: ground_truth is not a reference; prompt + output through the chat template
    chat = RewardModelClient(chat_path, recipe="chat_template")
    got = naive_manager_calls(make_compute_score(chat, strip_think=True))
    want = chat([{"prompt": info["prompt"], "output": STRIPPED[i]} for i, (_, _, info) in enumerate(ROWS)])
    assert got == pytest.approx(want, rel=1e-5)
    assert batch_manager_call(make_compute_score_batch(chat, strip_think=True)) == pytest.approx(want, rel=1e-5)


def test_verl_unforced_recipe_with_ground_truth_is_not_guessed(polar_path, chat_path, tmp_path_factory, monkeypatch):
    """A POLAR checkpoint in a folder not named POLAR used to be scored without its reference."""
    renamed = tmp_path_factory.mktemp("ckpt") / "my-rm"
    renamed.symlink_to(polar_path, target_is_directory=True)
    for client in (RewardModelClient(str(renamed)), RewardModelClient(chat_path)):
        for fn in (make_compute_score(client), make_compute_score_batch(client)):
            with pytest.raises(ConfigurationError, match="recipe='polar'.*recipe='chat_template'"):
                (naive_manager_calls if fn.__name__ == "compute_score" else batch_manager_call)(fn)
        with pytest.raises(ConfigurationError, match="recipe='polar'"):
            asyncio.run(reward_loop_calls(make_async_compute_score(client)))
    # the recipe from reward_kwargs: the renamed checkpoint scores as the POLAR model it is
    for var in ("RMCLIENT_MODEL", "RMCLIENT_RECIPE", "RMCLIENT_SERVER_TYPE", "RMCLIENT_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    fn = verl_get_custom_reward_fn(str(VERL_FILE), "compute_score", {"model": str(renamed), "recipe": "polar",
                                                                    "strip_think": True})
    assert naive_manager_calls(fn) == pytest.approx(expected_polar(RewardModelClient(polar_path)), rel=1e-5)
    with pytest.raises(ConfigurationError, match="recipe='polar'"):
        naive_manager_calls(verl_get_custom_reward_fn(str(VERL_FILE), "compute_score", {"model": str(renamed)}))
    # ... or from the environment
    monkeypatch.setenv("RMCLIENT_MODEL", chat_path)
    monkeypatch.setenv("RMCLIENT_RECIPE", "chat_template")
    chat = RewardModelClient(chat_path, recipe="chat_template")
    want = chat([{"prompt": info["prompt"], "output": sol} for sol, _, info in ROWS])
    assert naive_manager_calls(verl_get_custom_reward_fn(str(VERL_FILE), "compute_score", {})) == pytest.approx(
        want, rel=1e-5
    )


def test_verl_settings_recipe_api_key_and_one_scorer_per_configuration(polar_path, monkeypatch):
    for var in ("RMCLIENT_MODEL", "RMCLIENT_RECIPE", "RMCLIENT_API_KEY", "RMCLIENT_SERVER_TYPE", "RMCLIENT_STRIP_THINK"):
        monkeypatch.delenv(var, raising=False)
    kwargs = {"model": polar_path, "recipe": "polar", "api_key": "secret-1", "reward_router_address": "x"}
    fn = rm_verl._configured("sync", kwargs)
    client = fn.target.scorer
    assert client.recipe == "polar" and client._pool_options["api_key"] == "secret-1"
    # built once per configuration, not per call
    assert rm_verl._configured("sync", dict(kwargs)) is fn
    assert rm_verl._configured("batch", kwargs).target.scorer is client
    assert rm_verl._configured("sync", {**kwargs, "strip_think": True}) is not fn
    calls = []
    real = rm_verl.make_compute_score
    monkeypatch.setattr(rm_verl, "make_compute_score", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(3):
        rm_verl.compute_score("d", "4", "4", {"prompt": "2+2?"}, **kwargs)
    assert calls == []  # the scorer built above is reused
    # the environment: RMCLIENT_API_KEY and RMCLIENT_RECIPE
    monkeypatch.setenv("RMCLIENT_MODEL", polar_path)
    monkeypatch.setenv("RMCLIENT_API_KEY", "secret-2")
    monkeypatch.setenv("RMCLIENT_RECIPE", "chat_template")
    env_client = rm_verl._configured("sync", {}).target.scorer
    assert env_client.recipe == "chat_template" and env_client._pool_options["api_key"] == "secret-2"
    monkeypatch.setenv("RMCLIENT_RECIPE", "orm")
    with pytest.raises(ConfigurationError, match="unknown recipe 'orm'"):
        rm_verl.compute_score("d", "4", "4", {"prompt": "2+2?"})


def test_verl_prompt_key_and_errors(polar_path, monkeypatch):
    polar = RewardModelClient(polar_path)
    fn = make_compute_score(polar, prompt_key="question")
    info = {"question": "2+2?", "index": 3}
    assert fn("math", "4", "4", info) == pytest.approx(polar({"prompt": "2+2?", "reference": "4", "output": "4"}), rel=1e-5)
    with pytest.raises(InvalidSampleError, match=r"extra_info\['question'\].*keys: index, prompt"):
        fn("math", "4", "4", {"prompt": "2+2?", "index": 3})
    monkeypatch.delenv("RMCLIENT_MODEL", raising=False)
    with pytest.raises(ConfigurationError, match="RMCLIENT_MODEL"):
        rm_verl.compute_score("x", "4", "4", {"prompt": "2+2?"})


def test_strip_think_matches_the_polar_recipe():
    from rmclient.integrations._common import strip_think

    assert strip_think("<think>a\nb</think>\n\n The answer. ") == "The answer."
    assert strip_think("no thinking here ") == "no thinking here "  # untouched without a closed block
    assert strip_think("<think>unterminated") == "<think>unterminated"
    # the answer follows the last </think>
    assert strip_think("pre <think>x</think>post <think>y</think> tail") == "tail"
    # templates that end the prompt with "<think>\\n" leave no opening tag in the completion
    assert strip_think("The capital... Beijing.\n</think>\n\nBeijing.") == "Beijing."
    assert strip_think("</think>") == ""


def test_verl_strip_think_without_the_opening_tag(polar_path):
    polar = RewardModelClient(polar_path)
    fn = make_compute_score(polar, strip_think=True)
    got = fn("d", "reasoning...\n</think>\n\nBeijing.", "Beijing.", {"prompt": PROMPT})
    assert got == pytest.approx(polar({"prompt": PROMPT, "reference": "Beijing.", "output": "Beijing."}), rel=1e-5)


# -- ms-swift ----------------------------------------------------------------------------------

SWIFT_SCRIPT = r"""
import json, sys, torch
from swift.rewards import ORM, AsyncORM, orms
from swift.utils import import_external_file
from swift.rlhf_trainers.utils import resolve_reward_funcs
from swift.rl_core.grpo_algorithm import compute_rewards_per_func
from swift.rl_core.data import GRPOSample

plugin, rows = sys.argv[1], json.loads(sys.argv[2])
import_external_file(plugin)                      # what --external_plugins does
assert issubclass(orms["rmclient"], ORM) and issubclass(orms["rmclient_async"], AsyncORM)
funcs, names = resolve_reward_funcs(["rmclient", "rmclient_async"], args=None)   # --reward_funcs
samples = [GRPOSample.from_row(r) for r in rows]
rewards = compute_rewards_per_func(samples, funcs, None, device=torch.device("cpu"), trainer_state=None)
print(json.dumps({"names": names, "rewards": rewards.tolist(), "version": __import__("swift").__version__}))
"""


def swift_rows():
    rows = []
    for i, (sol, gt, info) in enumerate(ROWS):
        prompt = info["prompt"] if isinstance(info["prompt"], list) else [{"role": "user", "content": info["prompt"]}]
        rows.append({
            "messages": prompt + [{"role": "assistant", "content": sol}],
            "prompt_id": f"p{info['index']}",
            "request_id": f"r{i}",
            "answer": gt,          # a dataset column: POLAR's reference
            "solution": "unused",  # another dataset column
        })
    return rows


@pytest.mark.skipif(not (SWIFT_DIR / "swift").is_dir(), reason="ms-swift is installed --no-deps by tests/run.sh")
def test_swift_plugin_in_ms_swifts_own_reward_loop(polar_path):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(SWIFT_DIR), str(ROOT)]),
        RMCLIENT_MODEL=polar_path,
        RMCLIENT_REFERENCE_COLUMN="answer",
        RMCLIENT_STRIP_THINK="true",
    )
    proc = subprocess.run(
        [sys.executable, "-c", SWIFT_SCRIPT, SWIFT_PLUGIN, json.dumps(swift_rows())],
        env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["names"] == ["RMClientORM", "RMClientAsyncORM"]
    expected = expected_polar(RewardModelClient(polar_path))
    for row, want in zip(out["rewards"], expected):
        assert row == pytest.approx([want, want], rel=1e-5)  # float32 in ms-swift's tensor


@pytest.fixture
def plugin(monkeypatch):
    """The plugin file loaded with ms-swift's base classes replaced by stand-ins."""
    import types

    fake = types.ModuleType("swift.rewards")
    fake.ORM = type("ORM", (), {"__init__": lambda self, args=None, **kw: None})
    fake.AsyncORM = type("AsyncORM", (), {"__init__": lambda self, args=None, **kw: None})
    fake.orms = {}
    monkeypatch.setitem(sys.modules, "swift", types.ModuleType("swift"))
    monkeypatch.setitem(sys.modules, "swift.rewards", fake)
    spec = importlib.util.spec_from_file_location("_swift_plugin_under_test", SWIFT_PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(fake.orms) == {"rmclient", "rmclient_async"}
    return module


def test_swift_samples_without_ms_swift(plugin, polar_path, chat_path):
    """The plugin's sample building on its own."""
    polar = RewardModelClient(polar_path)
    rows = swift_rows()
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    completions = [r["messages"][-1]["content"] for r in rows]
    orm = plugin.make_orm(lambda: polar, reference_column="answer", strip_think=True)(args=None)
    assert orm(completions, trainer_state=None, **columns) == pytest.approx(expected_polar(polar), rel=1e-5)
    missing = plugin.make_orm(lambda: polar, reference_column="reference")(args=None)
    with pytest.raises(ConfigurationError, match="'reference' column"):
        missing(completions, **columns)
    chat = RewardModelClient(chat_path)
    orm = plugin.make_orm(lambda: chat, strip_think=True)(args=None)
    want = chat([{"prompt": r["messages"][:-1], "output": STRIPPED[i]} for i, r in enumerate(rows)])
    assert orm(completions, **columns) == pytest.approx(want, rel=1e-5)
    # the reference column present: an unforced client not named POLAR asks for a recipe
    with pytest.raises(ConfigurationError, match="recipe='polar'.*recipe='chat_template'"):
        plugin.make_orm(lambda: chat, reference_column="answer")(args=None)(completions, **columns)
    forced = RewardModelClient(chat_path, recipe="chat_template")
    orm = plugin.make_orm(lambda: forced, reference_column="answer", strip_think=True)(args=None)
    assert orm(completions, **columns) == pytest.approx(want, rel=1e-5)


def test_swift_short_reference_column_is_a_clear_error(plugin, polar_path):
    polar = RewardModelClient(polar_path)
    rows = swift_rows()
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    columns["answer"] = columns["answer"][:2]  # used to be an IndexError
    completions = [r["messages"][-1]["content"] for r in rows]
    orm = plugin.make_orm(lambda: polar, reference_column="answer")(args=None)
    with pytest.raises(ConfigurationError, match="'answer' has 2 values for 3 completions"):
        orm(completions, **columns)


def test_swift_client_from_env_takes_recipe_and_api_key(plugin, chat_path, monkeypatch):
    monkeypatch.setenv("RMCLIENT_MODEL", chat_path)
    monkeypatch.setenv("RMCLIENT_RECIPE", "chat_template")
    monkeypatch.setenv("RMCLIENT_API_KEY", "secret-3")
    monkeypatch.delenv("RMCLIENT_SERVER_TYPE", raising=False)
    client = plugin.client_from_env()
    assert client.recipe == "chat_template" and client._pool_options["api_key"] == "secret-3"
    assert plugin.client_from_env() is client  # one per process and configuration
    monkeypatch.delenv("RMCLIENT_MODEL")
    with pytest.raises(ConfigurationError, match="RMCLIENT_MODEL"):
        plugin.client_from_env()
