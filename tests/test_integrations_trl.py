"""TRL: our reward function in a real GRPOTrainer run (tiny policy, tiny reward model, CPU).

The rewards TRL logs (``rewards/<name>/mean`` per step, and the per-completion table it
keeps) must equal what the client returns for the same completions.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import warnings

import pytest

from rmclient import AsyncRewardModelClient, ConfigurationError, RewardModelClient
from rmclient.integrations.trl import make_async_reward_func, make_reward_func

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

PROMPTS = ["What is the capital of China?", "Say hello, how are you?"]
REFERENCES = ["Beijing.", "Hello, I am fine, thank you."]


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory) -> str:
    from rmclient.testing.policy import build_policy

    return str(build_policy(tmp_path_factory.mktemp("models") / "tiny-policy"))


class Recorder:
    """Wraps a reward function (keeping its name and sync/async kind) and records every call."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__
        self.calls = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = self.fn(prompts=prompts, completions=completions, **kwargs)
        self.calls.append({"prompts": list(prompts), "completions": list(completions), "kwargs": kwargs, "rewards": rewards})
        return rewards


class AsyncRecorder(Recorder):
    async def __call__(self, prompts, completions, **kwargs):
        rewards = await self.fn(prompts=prompts, completions=completions, **kwargs)
        self.calls.append({"prompts": list(prompts), "completions": list(completions), "kwargs": kwargs, "rewards": rewards})
        return rewards


def grpo(policy_path, reward_func, dataset, tmp_path, **overrides):
    from trl import GRPOConfig, GRPOTrainer

    args = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    args.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(
            model=policy_path, reward_funcs=reward_func, args=GRPOConfig(**args), train_dataset=dataset
        )
        trainer.train()
    return trainer


def polar_samples(call, reference_column="reference"):
    return [
        {"prompt": p, "reference": r, "output": c}
        for p, c, r in zip(call["prompts"], call["completions"], call["kwargs"][reference_column])
    ]


def check_logged(trainer, recorder, expected_rewards):
    """TRL's per-step means and its per-completion table equal our rewards."""
    name = recorder.__name__
    logged = [h[f"rewards/{name}/mean"] for h in trainer.state.log_history if f"rewards/{name}/mean" in h]
    assert len(recorder.calls) == 2 and len(logged) == 2
    for call, mean, expected in zip(recorder.calls, logged, expected_rewards):
        assert call["rewards"] == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert mean == pytest.approx(sum(expected) / len(expected), rel=1e-5, abs=1e-5)
    last = recorder.calls[-1]
    assert list(trainer._logs["completion"]) == last["completions"]
    assert list(trainer._logs["rewards"][name]) == pytest.approx(expected_rewards[-1], rel=1e-6, abs=1e-6)
    # the call had what TRL passes: completion ids, trainer state, and the dataset columns
    assert len(last["kwargs"]["completion_ids"]) == len(last["completions"])
    assert last["kwargs"]["trainer_state"].global_step >= 1


def test_grpo_in_process_polar_plain_text(tmp_path, policy_path, polar_path):
    client = RewardModelClient(polar_path)
    dataset = datasets.Dataset.from_dict({"prompt": PROMPTS, "gold": REFERENCES})
    recorder = Recorder(make_reward_func(client, reference_column="gold"))
    assert recorder.__name__ == "tiny-polar"
    trainer = grpo(policy_path, recorder, dataset, tmp_path)
    # rescored independently by the client: the same numbers TRL logged
    expected = [client(polar_samples(call, "gold")) for call in recorder.calls]
    check_logged(trainer, recorder, expected)
    for call in recorder.calls:  # each prompt was scored against its own reference
        for p, r in zip(call["prompts"], call["kwargs"]["gold"]):
            assert REFERENCES[PROMPTS.index(p)] == r


def test_grpo_conversational_outcome_rm_async(tmp_path, policy_path, chat_path):
    """Conversational data, an outcome RM through the async client: TRL awaits our async function."""
    client = AsyncRewardModelClient(chat_path, recipe="chat_template")  # an outcome RM: no reference
    dataset = datasets.Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": p}] for p in PROMPTS], "reference": REFERENCES}
    )
    fn = make_reward_func(client, name="chat_rm")
    assert inspect.iscoroutinefunction(fn)
    recorder = AsyncRecorder(fn)
    trainer = grpo(policy_path, recorder, dataset, tmp_path)
    sync = RewardModelClient(chat_path, recipe="chat_template")
    expected = []
    for call in recorder.calls:
        assert isinstance(call["completions"][0], list) and call["completions"][0][0]["role"] == "assistant"
        # an outcome RM takes no reference: the dataset's 'reference' column is not sent
        expected.append(sync([{"prompt": p, "output": c} for p, c in zip(call["prompts"], call["completions"])]))
    check_logged(trainer, recorder, expected)


def _server(polar_path):
    """``rmclient serve`` in-process when it exists, else the fake sglang engine."""
    try:
        from rmclient.serve import RewardServer, ServerThread
    except ImportError:
        from tests.fake_engine import FakeEngine

        return FakeEngine("sglang", "0.4.6.post1"), False
    return ServerThread(RewardServer(polar_path, served_model_name="tiny-polar")), True


def test_grpo_through_a_server(tmp_path, policy_path, polar_path):
    server, real = _server(polar_path)
    with server:
        remote = RewardModelClient(polar_path, server_type="sglang", server_address=server.url)
        dataset = datasets.Dataset.from_dict({"prompt": PROMPTS, "reference": REFERENCES})
        recorder = AsyncRecorder(make_async_reward_func(remote, name="polar_remote"))
        trainer = grpo(policy_path, recorder, dataset, tmp_path)
        expected = [remote(polar_samples(call)) for call in recorder.calls]
        check_logged(trainer, recorder, expected)
        if real:  # the server's rewards are the in-process model's rewards
            local = RewardModelClient(polar_path)
            for call, rewards in zip(recorder.calls, expected):
                assert rewards == pytest.approx(local(polar_samples(call)), rel=1e-4, abs=1e-4)
        remote.close()


# -- the function alone, called as TRL calls it ------------------------------------------


def trl_kwargs(**columns):
    return dict(completion_ids=[[1, 2]], trainer_state=object(), log_extra=print, log_metric=print, **columns)


def test_samples_built_for_polar_and_chat(polar_path, chat_path):
    polar = RewardModelClient(polar_path)
    fn = make_reward_func(polar, strip_think=True)
    prompts = ["2+2?", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]]
    completions = ["<think>add</think> 4", [{"role": "assistant", "content": "<think>x</think>\n4."}]]
    got = fn(prompts, completions, completion_ids=[[1], [2]], trainer_state=None, reference=["4", "4."], extra=[1, 2])
    expected = polar([
        {"prompt": "2+2?", "reference": "4", "output": "4"},
        {"prompt": "Be brief.\n2+2?", "reference": "4.", "output": "4."},
    ])
    assert got == pytest.approx(expected, rel=1e-6)
    # content given as parts (VLM-style text blocks) is the same text
    parts = [[{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]]
    one = fn(parts, ["4"], reference=["4"])
    assert one == pytest.approx(polar([{"prompt": "2+2?", "reference": "4", "output": "4"}]), rel=1e-6)

    chat = RewardModelClient(chat_path, recipe="chat_template")
    cfn = make_reward_func(chat)  # the reference column is present but an outcome RM ignores it
    got = cfn(["2+2?"], ["4"], **trl_kwargs(reference=["4"]))
    assert got == pytest.approx(chat([{"prompt": "2+2?", "output": "4"}]), rel=1e-6)


def test_strip_think_without_the_opening_tag(polar_path):
    """Templates that end the prompt with ``<think>\\n`` leave only ``...</think>answer`` in the completion."""
    polar = RewardModelClient(polar_path)
    fn = make_reward_func(polar, strip_think=True)
    got = fn(["2+2?", "2+2?"], ["add them\n</think>\n\n4", [{"role": "assistant", "content": "x</think> 4."}]],
             **trl_kwargs(reference=["4", "4."]))
    assert got == pytest.approx(polar([
        {"prompt": "2+2?", "reference": "4", "output": "4"},
        {"prompt": "2+2?", "reference": "4.", "output": "4."},
    ]), rel=1e-6)


def test_unforced_recipe_with_references_is_not_guessed(polar_path, chat_path, tmp_path_factory):
    """A POLAR checkpoint in a folder not named POLAR used to lose its reference silently."""
    renamed = tmp_path_factory.mktemp("ckpt") / "my-rm"
    renamed.symlink_to(polar_path, target_is_directory=True)
    unforced = RewardModelClient(str(renamed))
    with pytest.raises(ConfigurationError, match="recipe='polar'.*recipe='chat_template'"):
        make_reward_func(unforced)(["q"], ["a"], **trl_kwargs(reference=["r"]))
    with pytest.raises(ConfigurationError, match="recipe='polar'"):  # the async function too
        asyncio.run(make_async_reward_func(unforced)(["q"], ["a"], **trl_kwargs(reference=["r"])))
    # forced: scored against the reference, as the POLAR checkpoint it is
    forced = RewardModelClient(str(renamed), recipe="polar")
    got = make_reward_func(forced)(["q"], ["a"], **trl_kwargs(reference=["r"]))
    assert got == pytest.approx(RewardModelClient(polar_path)([{"prompt": "q", "reference": "r", "output": "a"}]))
    # an unforced outcome RM with no reference in the data needs no recipe
    chat = RewardModelClient(chat_path)
    got = make_reward_func(chat)(["q"], ["a"], **trl_kwargs(answer=["x"]))
    assert got == pytest.approx(chat([{"prompt": "q", "output": "a"}]), rel=1e-6)
    with pytest.raises(ConfigurationError, match="recipe='chat_template'"):
        make_reward_func(chat)(["q"], ["a"], **trl_kwargs(reference=["r"]))


def test_reference_column_of_the_wrong_length(polar_path):
    fn = make_reward_func(RewardModelClient(polar_path))
    with pytest.raises(ConfigurationError, match="'reference' has 1 values for 2 completions"):
        fn(["q", "q"], ["a", "b"], **trl_kwargs(reference=["r"]))


def test_polar_without_its_reference_column_says_which(polar_path):
    fn = make_reward_func(RewardModelClient(polar_path), reference_column="answer")
    with pytest.raises(ConfigurationError, match="'answer'.*columns: reference"):
        fn(["q"], ["a"], **trl_kwargs(reference=["r"]))


def test_failures_follow_the_client_policy(polar_path):
    from tests.fake_engine import FakeEngine

    with FakeEngine("sglang", "0.4.6.post1") as fake:
        fake.script = [400] * 20  # every request rejected
        strict = RewardModelClient(polar_path, server_type="sglang", server_address=fake.url, max_attempts=1)
        fn = make_reward_func(strict)
        from rmclient import ScoringError

        with pytest.raises(ScoringError):
            fn(["q", "q"], ["a", "b"], **trl_kwargs(reference=["r", "r"]))
        fake.script = [400] * 20
        lenient = RewardModelClient(
            polar_path, server_type="sglang", server_address=fake.url, max_attempts=1, on_error="nan"
        )
        got = make_reward_func(lenient)(["q", "q"], ["a", "b"], **trl_kwargs(reference=["r", "r"]))
        assert len(got) == 2 and all(math.isnan(x) for x in got)
        strict.close()
        lenient.close()
