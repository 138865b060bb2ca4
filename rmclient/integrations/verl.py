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
the output. ``strip_think=True`` scores only what follows a ``<think>...</think>`` block,
as POLAR's recipe does. An outcome reward model ignores ``ground_truth``.

Two ways to configure it:

* point verl at this file and configure the client from ``reward_kwargs`` or the
  environment (``RMCLIENT_MODEL``, ``RMCLIENT_SERVER_TYPE``, ``RMCLIENT_SERVER_ADDRESS``,
  ``RMCLIENT_TRUST_REMOTE_CODE``, ``RMCLIENT_PROMPT_KEY``, ``RMCLIENT_STRIP_THINK``); the
  module-level :func:`compute_score`, :func:`compute_score_async` and
  :func:`compute_score_batch` build one client per configuration, once per process;
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
from rmclient.integrations._common import Target, group_ids_by_prompt, plain, strip_think as _strip_think, text_content

#: The ``reward_kwargs`` keys the module-level functions read (any other keyword is ignored,
#: e.g. ``reward_router_address`` / ``reward_model_tokenizer`` that verl's reward loop adds).
CONFIG_KEYS = ("model", "server_type", "server_address", "trust_remote_code", "prompt_key", "strip_think", "on_error")


def _sample(
    index: int,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Any,
    *,
    prompt_key: str,
    strip_think: bool,
    with_reference: bool,
) -> Dict[str, Any]:
    info = extra_info if isinstance(extra_info, Mapping) else {}
    if prompt_key not in info or info[prompt_key] is None:
        keys = ", ".join(sorted(map(str, info))) or "none"
        raise InvalidSampleError(
            index,
            f"extra_info[{prompt_key!r}]",
            f"missing (keys: {keys}); put the policy's prompt in extra_info when preparing the data, "
            "or name the key that holds it with prompt_key=",
        )
    output = plain(solution_str)
    if not isinstance(output, str):
        raise InvalidSampleError(index, "solution_str", f"expected a string, got {type(solution_str).__name__}")
    if strip_think:
        output = _strip_think(output)
    sample: Dict[str, Any] = {"prompt": text_content(index, "prompt", info[prompt_key]), "output": output}
    if with_reference:
        sample["reference"] = text_content(index, "reference", ground_truth)
    return sample


def _score(reward: float) -> float:
    return float(reward)


def make_compute_score(scorer: Any, *, prompt_key: str = "prompt", strip_think: bool = False) -> Any:
    """verl's per-sample ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)``."""
    target = Target(scorer)

    def compute_score(
        data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None, **kwargs: Any
    ) -> float:
        sample = _sample(
            0, solution_str, ground_truth, extra_info,
            prompt_key=prompt_key, strip_think=strip_think, with_reference=target.wants_reference(),
        )
        return _score(target.score([sample], group_ids=[0])[0])

    compute_score.target = target  # type: ignore[attr-defined]
    return compute_score


def make_async_compute_score(scorer: Any, *, prompt_key: str = "prompt", strip_think: bool = False) -> Any:
    """An ``async def compute_score(...)``: verl's reward loop awaits it instead of using a thread."""
    target = Target(scorer)

    async def compute_score(
        data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None, **kwargs: Any
    ) -> float:
        sample = _sample(
            0, solution_str, ground_truth, extra_info,
            prompt_key=prompt_key, strip_think=strip_think, with_reference=target.wants_reference(),
        )
        return _score((await target.ascore([sample], group_ids=[0]))[0])

    compute_score.target = target  # type: ignore[attr-defined]
    return compute_score


def make_compute_score_batch(scorer: Any, *, prompt_key: str = "prompt", strip_think: bool = False) -> Any:
    """The batch reward manager's ``compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs)``.

    Samples with the same prompt share a group id (for a composition's ``normalize="group"``).
    """
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
        with_reference = target.wants_reference()
        samples = [
            _sample(
                i, solution_strs[i], ground_truths[i], extra_infos[i],
                prompt_key=prompt_key, strip_think=strip_think, with_reference=with_reference,
            )
            for i in range(n)
        ]
        groups = group_ids_by_prompt([s["prompt"] for s in samples])
        return [_score(r) for r in target.score(samples, group_ids=groups)]

    compute_score_batch.target = target  # type: ignore[attr-defined]
    return compute_score_batch


# -- module-level functions, configured by reward_kwargs or the environment ----------------

_clients: Dict[Tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _config(kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    env = os.environ
    cfg = {
        "model": kwargs.get("model") or env.get("RMCLIENT_MODEL"),
        "server_type": kwargs.get("server_type") or env.get("RMCLIENT_SERVER_TYPE") or "transformers",
        "server_address": kwargs.get("server_address") or env.get("RMCLIENT_SERVER_ADDRESS"),
        "trust_remote_code": _truthy(kwargs.get("trust_remote_code", env.get("RMCLIENT_TRUST_REMOTE_CODE", False))),
        "prompt_key": kwargs.get("prompt_key") or env.get("RMCLIENT_PROMPT_KEY") or "prompt",
        "strip_think": _truthy(kwargs.get("strip_think", env.get("RMCLIENT_STRIP_THINK", False))),
        "on_error": kwargs.get("on_error") or env.get("RMCLIENT_ON_ERROR") or "raise",
    }
    if not cfg["model"]:
        raise ConfigurationError(
            "no reward model configured: set RMCLIENT_MODEL (and RMCLIENT_SERVER_TYPE / RMCLIENT_SERVER_ADDRESS), "
            "or pass model=... in reward.custom_reward_function.reward_kwargs"
        )
    address = cfg["server_address"]
    if address is not None and not isinstance(address, str):  # a list (or omegaconf ListConfig) of servers
        cfg["server_address"] = tuple(str(a) for a in address)
    return cfg


def _client(cfg: Mapping[str, Any]) -> Any:
    from rmclient.client import RewardModelClient

    key = (cfg["model"], cfg["server_type"], cfg["server_address"], cfg["trust_remote_code"], cfg["on_error"])
    with _clients_lock:
        if key not in _clients:
            address = cfg["server_address"]
            _clients[key] = RewardModelClient(
                cfg["model"],
                server_type=cfg["server_type"],
                server_address=list(address) if isinstance(address, tuple) else address,
                trust_remote_code=cfg["trust_remote_code"],
                on_error=cfg["on_error"],
            )
        return _clients[key]


def compute_score(
    data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None, **kwargs: Any
) -> float:
    """verl's per-sample reward function; the client comes from ``reward_kwargs`` or ``RMCLIENT_*``."""
    cfg = _config(kwargs)
    fn = make_compute_score(_client(cfg), prompt_key=cfg["prompt_key"], strip_think=cfg["strip_think"])
    return fn(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth, extra_info=extra_info)


async def compute_score_async(
    data_source: Any = None, solution_str: Any = None, ground_truth: Any = None, extra_info: Any = None, **kwargs: Any
) -> float:
    """:func:`compute_score` as ``async def``, for verl's reward loop (set ``name=compute_score_async``)."""
    cfg = _config(kwargs)
    fn = make_async_compute_score(_client(cfg), prompt_key=cfg["prompt_key"], strip_think=cfg["strip_think"])
    return await fn(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth, extra_info=extra_info)


def compute_score_batch(
    data_sources: Sequence[Any] = (),
    solution_strs: Sequence[Any] = (),
    ground_truths: Sequence[Any] = (),
    extra_infos: Optional[Sequence[Any]] = None,
    **kwargs: Any,
) -> List[float]:
    """verl's batch reward function (``reward_manager=batch``); configured like :func:`compute_score`."""
    cfg = _config(kwargs)
    fn = make_compute_score_batch(_client(cfg), prompt_key=cfg["prompt_key"], strip_think=cfg["strip_think"])
    return fn(data_sources=data_sources, solution_strs=solution_strs, ground_truths=ground_truths, extra_infos=extra_infos)
