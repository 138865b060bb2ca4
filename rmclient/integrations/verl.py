"""verl: custom reward functions (``reward.custom_reward_function.path`` / ``.name``).

verl imports a function by file path and name and calls it per sample::

    compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **reward_kwargs)

(the ``naive``, ``dapo``, ``gdpo`` and rate-limited reward managers; an ``async def``
one is awaited by verl's reward loop, a sync one runs in its thread pool), or, with the
batch reward manager of earlier verl (``reward_model.reward_manager=batch``, as POLAR's
own verl recipe uses), per batch::

    compute_score_batch(data_sources=..., solution_strs=..., ground_truths=..., extra_infos=..., **reward_kwargs)

POLAR style: ``ground_truth`` is the reference, the prompt is ``extra_info["prompt"]``
(a string or a list of messages; ``prompt_key`` names another key), ``solution_str`` is
the output. ``strip_think=True`` scores only what follows the last ``</think>``, as POLAR's
recipe does. An outcome reward model ignores ``ground_truth``; a client with no ``recipe``
whose checkpoint is not named POLAR cannot tell which it is, and raises
:class:`~rmclient.ConfigurationError` asking for ``recipe="polar"`` or ``recipe="chat_template"``.

Two ways to configure it:

* point verl at this file and configure the client from ``reward_kwargs`` or the
  environment (``model``/``RMCLIENT_MODEL``, ``server_type``/``RMCLIENT_SERVER_TYPE``,
  ``server_address``, ``trust_remote_code``, ``recipe``, ``api_key``, ``on_error``,
  ``prompt_key``, ``strip_think``: each keyword, else ``RMCLIENT_<NAME>``); the
  module-level :func:`compute_score`, :func:`compute_score_async` and
  :func:`compute_score_batch` build one client and one scorer per configuration, once
  per process;
* or write a three-line file of your own with a factory::

      from rmclient import RewardModelClient
      from rmclient.integrations.verl import make_compute_score
      compute_score = make_compute_score(RewardModelClient(...), strip_think=True)
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from rmclient.errors import ConfigurationError, InvalidSampleError
from rmclient.scorer import Target
from rmclient.integrations._common import (
    as_step_samples, build_samples, check_kind, group_ids_by_prompt, plain, resolve_references,
)
from rmclient.integrations.settings import client_from_settings, read_settings


def _prompt(index: int, extra_info: Any, prompt_key: str) -> Any:
    info = extra_info if isinstance(extra_info, Mapping) else {}
    if prompt_key not in info or info[prompt_key] is None:
        keys = ", ".join(sorted(map(str, info))) or "none"
        raise InvalidSampleError(
            index,
            f"extra_info[{prompt_key!r}]",
            f"missing (keys: {keys}); put the policy's prompt in extra_info when preparing the data, "
            "or name the key that holds it with prompt_key=",
        )
    return info[prompt_key]


def _samples(
    target: Target,
    solution_strs: Sequence[Any],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any],
    *,
    prompt_key: str,
    strip_think: bool,
) -> List[Dict[str, Any]]:
    outputs = [plain(s) for s in solution_strs]
    for i, (output, raw) in enumerate(zip(outputs, solution_strs)):
        if not isinstance(output, str):
            raise InvalidSampleError(i, "solution_str", f"expected a string, got {type(raw).__name__}")
    prompts = [_prompt(i, info, prompt_key) for i, info in enumerate(extra_infos)]
    references = resolve_references(
        target, {"ground_truth": ground_truths}, "ground_truth", len(outputs), setting="ground_truth"
    )
    return build_samples(prompts, outputs, references, strip_think=strip_think)


def make_compute_score(
    scorer: Any, *, prompt_key: str = "prompt", strip_think: bool = False, asynchronous: bool = False,
    kind: str = "reward", aggregate: str = "min", step_separator: str = "\n\n",
) -> Any:
    """verl's per-sample ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)``.

    ``asynchronous=True`` returns an ``async def`` one: verl's reward loop awaits it
    instead of running it in its thread pool. ``kind="steps"`` (a process reward model): the
    solution is split into steps at ``step_separator`` and the answer is a dict, which verl's
    reward managers read as ``score`` (the ``aggregate`` of the step rewards) plus
    ``reward_extra_info`` columns ``step_rewards`` and ``cut_steps``.
    """
    check_kind(kind)
    target = Target(scorer)

    def samples(solution_str: Any, ground_truth: Any, extra_info: Any) -> List[Dict[str, Any]]:
        found = _samples(
            target, [solution_str], [ground_truth], [extra_info], prompt_key=prompt_key, strip_think=strip_think
        )
        return as_step_samples(found, step_separator) if kind == "steps" else found

    if asynchronous:

        async def compute_score(
            data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None,
            **kwargs: Any,
        ) -> Any:
            todo = samples(solution_str, ground_truth, extra_info)
            if kind == "steps":
                return _step_result((await target.ascore_steps(todo, aggregate))[0])
            return float((await target.ascore(todo, group_ids=[0]))[0])

    else:

        def compute_score(  # type: ignore[misc]
            data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None,
            **kwargs: Any,
        ) -> Any:
            todo = samples(solution_str, ground_truth, extra_info)
            if kind == "steps":
                return _step_result(target.score_steps(todo, aggregate)[0])
            return float(target.score(todo, group_ids=[0])[0])

    compute_score.target = target  # type: ignore[attr-defined]
    return compute_score


def _step_result(steps: Any) -> Dict[str, Any]:
    """verl's dict form of a reward: ``score`` plus columns for ``reward_extra_info``."""
    return {"score": float(steps.aggregate), "step_rewards": steps.rewards, "cut_steps": steps.cut}


def make_async_compute_score(scorer: Any, **options: Any) -> Any:
    """:func:`make_compute_score` as an ``async def`` function (verl's reward loop awaits it)."""
    return make_compute_score(scorer, asynchronous=True, **options)


def make_compute_score_batch(
    scorer: Any, *, prompt_key: str = "prompt", strip_think: bool = False, kind: str = "reward",
    aggregate: str = "min", step_separator: str = "\n\n",
) -> Any:
    """The batch reward manager's ``compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs)``.

    Samples with the same prompt share a group id (for a composition's ``normalize="group"``).
    ``kind="steps"``: one dict per sample, as :func:`make_compute_score` gives.
    """
    check_kind(kind)
    target = Target(scorer)

    def compute_score_batch(
        data_sources: Sequence[Any] = (),
        solution_strs: Sequence[Any] = (),
        ground_truths: Sequence[Any] = (),
        extra_infos: Optional[Sequence[Any]] = None,
        **kwargs: Any,
    ) -> List[float]:
        n = len(solution_strs)
        if extra_infos is None:
            extra_infos = [{}] * n
        if not (len(ground_truths) == len(extra_infos) == n) or (len(data_sources) not in (0, n)):
            raise ConfigurationError(
                f"{n} solution_strs, {len(ground_truths)} ground_truths, {len(extra_infos)} extra_infos, "
                f"{len(data_sources)} data_sources: one of each per sample"
            )
        samples = _samples(
            target, solution_strs, ground_truths, extra_infos, prompt_key=prompt_key, strip_think=strip_think
        )
        if kind == "steps":
            return [_step_result(r) for r in target.score_steps(as_step_samples(samples, step_separator), aggregate)]
        groups = group_ids_by_prompt([s["prompt"] for s in samples])
        return [float(r) for r in target.score(samples, group_ids=groups)]

    compute_score_batch.target = target  # type: ignore[attr-defined]
    return compute_score_batch


# -- module-level functions, configured by reward_kwargs or the environment ----------------

_scorers: Dict[Tuple[Any, ...], Any] = {}
_scorers_lock = threading.Lock()


def _configured(kind: str, kwargs: Mapping[str, Any]) -> Any:
    """The ``kind`` function (``"sync"``, ``"async"`` or ``"batch"``) for these settings, built once per process."""
    cfg = read_settings(kwargs, os.environ)
    key = (kind,) + tuple(sorted(cfg.items()))
    with _scorers_lock:
        fn = _scorers.get(key)
    if fn is None:
        client = client_from_settings(kwargs, os.environ)
        options = {"prompt_key": cfg["prompt_key"], "strip_think": cfg["strip_think"], "kind": cfg["kind"],
                   "aggregate": cfg["aggregate"], "step_separator": cfg["step_separator"]}
        if kind == "batch":
            fn = make_compute_score_batch(client, **options)
        else:
            fn = make_compute_score(client, asynchronous=kind == "async", **options)
        with _scorers_lock:
            fn = _scorers.setdefault(key, fn)
    return fn


def compute_score(
    data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None, **kwargs: Any
) -> float:
    """verl's per-sample reward function; the client comes from ``reward_kwargs`` or ``RMCLIENT_*``."""
    fn = _configured("sync", kwargs)
    return fn(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth, extra_info=extra_info)


async def compute_score_async(
    data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None, **kwargs: Any
) -> float:
    """:func:`compute_score` as ``async def``, for verl's reward loop (set ``name=compute_score_async``)."""
    fn = _configured("async", kwargs)
    return await fn(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth, extra_info=extra_info)


def compute_score_batch(
    data_sources: Sequence[Any] = (),
    solution_strs: Sequence[Any] = (),
    ground_truths: Sequence[Any] = (),
    extra_infos: Optional[Sequence[Any]] = None,
    **kwargs: Any,
) -> List[float]:
    """verl's batch reward function (``reward_manager=batch``); configured like :func:`compute_score`."""
    fn = _configured("batch", kwargs)
    return fn(data_sources=data_sources, solution_strs=solution_strs, ground_truths=ground_truths, extra_infos=extra_infos)
