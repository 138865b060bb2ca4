"""TRL: reward functions for ``GRPOTrainer`` (and the other TRL trainers that take ``reward_funcs``).

::

    from trl import GRPOConfig, GRPOTrainer
    from rmclient import RewardModelClient
    from rmclient.integrations.trl import make_reward_func

    client = RewardModelClient("internlm/POLAR-7B", server_type="sglang", server_address="127.0.0.1:30000")
    trainer = GRPOTrainer(model=..., reward_funcs=make_reward_func(client), train_dataset=dataset, args=GRPOConfig(...))

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=...,
trainer_state=..., log_extra=..., log_metric=..., **dataset_columns)``: one entry per
completion, every dataset column repeated to match. Prompts and completions are strings
(standard data) or lists of ``{"role", "content"}`` messages (conversational data). The
function it gets from here turns each pair into an rmclient sample ``{"prompt", "output"}``,
adds ``"reference"`` from the dataset column named by ``reference_column`` when the reward
model is POLAR, scores the batch in one call and returns the raw rewards, in order.

TRL versions with async reward functions (1.16.0 checked) run ``async def`` ones on an
event loop of their own, concurrently with each other:
:func:`make_async_reward_func` returns one, and :func:`make_reward_func` returns one for an
``AsyncRewardModelClient`` or an async function.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigurationError
from ..scorer import Target
from ._common import as_step_samples, build_samples, check_kind, group_ids_by_prompt, resolve_references

#: Keyword arguments TRL adds that are not dataset columns.
TRL_KWARGS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)


class _Hook:
    """Turns one TRL call into rmclient samples and scores them."""

    def __init__(
        self,
        target: Target,
        *,
        name: str,
        reference_column: Optional[str],
        strip_think: bool,
        group_by_prompt: bool,
    ) -> None:
        self.target = target
        self.name = name
        self.reference_column = reference_column
        self.strip_think = strip_think
        self.group_by_prompt = group_by_prompt

    def samples(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        """The rmclient samples for one TRL call."""
        if len(prompts) != len(completions):
            raise ConfigurationError(f"{len(prompts)} prompts for {len(completions)} completions")
        references = resolve_references(
            self.target, columns, self.reference_column, len(completions), setting="reference_column"
        )
        return build_samples(prompts, completions, references, strip_think=self.strip_think)

    def prepare(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: Dict[str, Any]) -> Any:
        columns = {k: v for k, v in kwargs.items() if k not in TRL_KWARGS}
        groups = group_ids_by_prompt(prompts) if self.group_by_prompt else None
        return self.samples(prompts, completions, columns), groups


def make_reward_func(
    scorer: Any,
    *,
    reference_column: Optional[str] = "reference",
    name: Optional[str] = None,
    strip_think: bool = False,
    group_by_prompt: bool = True,
    asynchronous: Optional[bool] = None,
    kind: str = "reward",
    aggregate: str = "min",
    step_separator: str = "\n\n",
) -> Any:
    """A ``GRPOTrainer`` reward function that scores with ``scorer``.

    Args:
        scorer: a ``RewardModelClient``, an ``AsyncRewardModelClient``, a
            :class:`~rmclient.compose.RewardComposition`, or a function
            ``samples -> list of floats``.
        reference_column: the dataset column that holds POLAR's reference (a string or a
            list of messages). A POLAR model without that column raises
            :class:`~rmclient.ConfigurationError`; a client forced to
            ``recipe="chat_template"`` ignores it. A client with no ``recipe`` whose
            checkpoint is not named POLAR raises ``ConfigurationError`` when the column is
            there (pass ``recipe="polar"`` or ``recipe="chat_template"``).
            ``None``: never send a reference.
        name: what TRL logs the reward under (default: the model folder's name, e.g.
            ``POLAR-7B``, so TRL logs ``rewards/POLAR-7B/mean``).
        strip_think: score only what follows the last ``</think>`` of each completion.
        group_by_prompt: hand a composition one group id per distinct prompt (for
            ``normalize="group"``); TRL puts a prompt's generations side by side.
        asynchronous: return an ``async def`` function (default: when the scorer is async).
        kind: ``"steps"`` for a process reward model: each completion is split into steps at
            ``step_separator`` and its reward is the ``aggregate`` (``"min"``, ``"last"``, ``"mean"``,
            ``"prod"``) of its step rewards; the per-step lists go to TRL's completions table as the
            column ``step_rewards`` (through ``log_extra``, where the TRL version has it).

    Failures follow the client's ``on_error``: ``"raise"`` stops the training step with
    :class:`~rmclient.ScoringError`; ``"nan"`` gives NaN, which TRL treats as "no reward
    from this function" for that completion.
    """
    check_kind(kind)
    target = Target(scorer)
    if asynchronous is None:
        asynchronous = target.is_async
    hook = _Hook(
        target, name=name or target.default_name, reference_column=reference_column,
        strip_think=strip_think, group_by_prompt=group_by_prompt,
    )
    # Plain (async) functions, not callable objects: every TRL version that takes async reward
    # functions recognises an ``async def`` (older ones missed an object whose __call__ is async).
    if asynchronous:

        async def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> List[float]:
            samples, groups = hook.prepare(prompts, completions, kwargs)
            if kind == "steps":
                steps = await target.ascore_steps(as_step_samples(samples, step_separator), aggregate)
                return _logged_steps(steps, kwargs)
            return await target.ascore(samples, group_ids=groups)

    else:

        def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> List[float]:  # type: ignore[misc]
            samples, groups = hook.prepare(prompts, completions, kwargs)
            if kind == "steps":
                return _logged_steps(target.score_steps(as_step_samples(samples, step_separator), aggregate), kwargs)
            return target.score(samples, group_ids=groups)

    reward_func.__name__ = reward_func.__qualname__ = hook.name
    reward_func.__doc__ = f"GRPOTrainer reward function: scores completions with {hook.name} (rmclient)."
    reward_func.target = target  # type: ignore[attr-defined]
    reward_func.samples = hook.samples  # type: ignore[attr-defined]
    return reward_func


def _logged_steps(steps: Sequence[Any], kwargs: Dict[str, Any]) -> List[float]:
    """The aggregates for TRL; the step lists to its completions table (``log_extra``, TRL >= 1.x)."""
    log_extra = kwargs.get("log_extra")
    if callable(log_extra):
        log_extra("step_rewards", [r.rewards for r in steps])
    return [r.aggregate for r in steps]


def make_async_reward_func(scorer: Any, **options: Any) -> Any:
    """:func:`make_reward_func` as an ``async def`` function (TRL >= 0.25 runs those concurrently)."""
    return make_reward_func(scorer, asynchronous=True, **options)
