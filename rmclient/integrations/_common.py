"""What the trainer hooks share: one way to call any scorer, and the sample shapes trainers hand us.

A *scorer* is anything the hooks can score a list of rmclient samples with:

* a :class:`~rmclient.RewardModelClient` (sync) or :class:`~rmclient.AsyncRewardModelClient`;
* a :class:`~rmclient.integrations.compose.RewardComposition`;
* a plain function ``f(samples) -> list[float]``, sync or ``async``.

:class:`Target` wraps one and gives it both a sync and an async entry point.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..errors import ConfigurationError, InvalidSampleError

Sample = Dict[str, Any]

def strip_think(text: str) -> str:
    """The answer after the reasoning: what follows the last ``</think>``, stripped of surrounding whitespace.

    Text without ``</think>`` is returned unchanged. The opening ``<think>`` is not
    needed: chat templates that end the prompt with ``<think>\\n`` leave only
    ``...</think>answer`` in the completion. For a full ``<think>...</think>answer``
    this is what POLAR's verl recipe extracts.
    """
    _, sep, answer = text.rpartition("</think>")
    return answer.strip() if sep else text


def plain(value: Any) -> Any:
    """numpy arrays (verl's parquet columns) and tuples become lists, recursively; mappings become dicts."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def text_content(index: int, field: str, value: Any) -> Any:
    """A string, or a list of messages whose ``content`` is a string.

    Content given as parts (``[{"type": "text", "text": ...}]``, as TRL and
    OpenAI-style VLM data carry it) is joined into one string; a part that is
    not text cannot be scored by a text reward model and is an error.
    """
    value = plain(value)
    if not isinstance(value, list):
        return value
    out = []
    for j, message in enumerate(value):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            texts = []
            for k, part in enumerate(message["content"]):
                if isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif isinstance(part, str):
                    texts.append(part)
                else:
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise InvalidSampleError(
                        index, f"{field}[{j}].content[{k}]", f"a {kind!r} part cannot be scored by a text reward model"
                    )
            message = {**message, "content": "".join(texts)}
        out.append(message)
    return out


def strip_think_in(value: Any) -> Any:
    """:func:`strip_think` on a string, or on every assistant message of a list of messages."""
    if isinstance(value, str):
        return strip_think(value)
    if isinstance(value, list):
        return [
            {**m, "content": strip_think(m["content"])}
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant" and isinstance(m.get("content"), str)
            else m
            for m in value
        ]
    return value


def group_ids_by_prompt(prompts: Sequence[Any]) -> List[int]:
    """Samples with the same prompt share a group id (first appearance order)."""
    ids: Dict[str, int] = {}
    return [ids.setdefault(repr(plain(p)), len(ids)) for p in prompts]


# -- scorers ---------------------------------------------------------------------


class _Loop:
    """A private event loop in a daemon thread: runs an async scorer from sync code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def run(self, coro: Any) -> Any:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="rmclient-hook-loop", daemon=True).start()
                self._loop = loop
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


def is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class Target:
    """One scorer with both a sync (:meth:`score`) and an async (:meth:`ascore`) entry point.

    ``group_ids`` reach only scorers that use them (a composition normalising
    per prompt group); a client or a plain function never sees them.
    """

    def __init__(self, scorer: Any) -> None:
        from ..client import AsyncRewardModelClient, RewardModelClient
        from .compose import RewardComposition

        if isinstance(scorer, Target):
            scorer = scorer.scorer
        self.scorer = scorer
        self.kind = (
            "client" if isinstance(scorer, RewardModelClient)
            else "async_client" if isinstance(scorer, AsyncRewardModelClient)
            else "composition" if isinstance(scorer, RewardComposition)
            else "async_function" if is_async_callable(scorer)
            else "function" if callable(scorer)
            else None
        )
        if self.kind is None:
            raise ConfigurationError(
                f"cannot score with a {type(scorer).__name__}: give a RewardModelClient, an AsyncRewardModelClient, "
                "a RewardComposition, or a function samples -> list of floats"
            )
        self._loop: Optional[_Loop] = None

    @property
    def is_async(self) -> bool:
        """Whether the scorer is natively async (the hooks then hand trainers an async function)."""
        return self.kind in ("async_client", "async_function")

    @property
    def default_name(self) -> str:
        if self.kind in ("client", "async_client"):
            name = str(self.scorer.path).rstrip("/").split("/")[-1]
            return re.sub(r"[^0-9A-Za-z_.-]+", "_", name) or "rmclient"
        if self.kind == "composition":
            return self.scorer.name
        return getattr(self.scorer, "__name__", type(self.scorer).__name__)

    def wants_reference(self, has_references: bool = True) -> bool:
        """Whether samples for this scorer carry the reference.

        A client gets it when it scores with the POLAR recipe (``recipe="polar"``, or no
        forced recipe and a checkpoint named POLAR); a client forced to
        ``recipe="chat_template"`` never does. A client with no forced recipe whose
        checkpoint is not named POLAR cannot tell which one it is: when the data has
        references (``has_references``) that is a :class:`~rmclient.ConfigurationError`
        rather than a guess (a POLAR checkpoint in a folder not named POLAR would
        silently lose its reference). Compositions and plain functions get everything
        there is.
        """
        if self.kind not in ("client", "async_client"):
            return True
        from ..recipes import is_polar_model

        recipe = self.scorer.recipe
        if recipe is not None:
            return recipe == "polar"
        if is_polar_model(self.scorer.path, self.scorer.config):
            return True
        if has_references:
            raise ConfigurationError(
                f"{self.scorer.path} is not named as a POLAR model and its client has no recipe, but the data "
                "has references: pass recipe='polar' to the client to score each output against its reference "
                "(POLAR), or recipe='chat_template' to score prompt and output with the chat template and "
                "ignore the references"
            )
        return False

    def needs_reference(self) -> bool:
        """Whether a sample without a reference cannot be scored at all (a POLAR client)."""
        return self.kind in ("client", "async_client") and self.wants_reference(has_references=False)

    def adapt(self, samples: List[Sample]) -> List[Sample]:
        if self.wants_reference(any(s.get("reference") is not None for s in samples)):
            return samples
        return [{k: v for k, v in s.items() if k != "reference"} for s in samples]

    def _check(self, rewards: Any, n: int) -> List[float]:
        if isinstance(rewards, (int, float)) and not isinstance(rewards, bool):
            rewards = [rewards]
        rewards = list(rewards)
        if len(rewards) != n:
            raise ConfigurationError(f"{self.default_name} returned {len(rewards)} rewards for {n} samples")
        return [float("nan") if r is None else float(r) for r in rewards]

    def score(self, samples: List[Sample], group_ids: Optional[Sequence[Any]] = None) -> List[float]:
        if not samples:
            return []
        samples = self.adapt(samples)
        if self.kind == "composition":
            return self.scorer.score(samples, group_ids=group_ids)
        if self.kind in ("client", "function"):
            return self._check(self.scorer(samples), len(samples))
        if self._loop is None:
            self._loop = _Loop()
        return self._check(self._loop.run(self.scorer(samples)), len(samples))

    async def ascore(self, samples: List[Sample], group_ids: Optional[Sequence[Any]] = None) -> List[float]:
        if not samples:
            return []
        samples = self.adapt(samples)
        if self.kind == "composition":
            return await self.scorer.ascore(samples, group_ids=group_ids)
        if self.kind in ("async_client", "async_function"):
            return self._check(await self.scorer(samples), len(samples))
        return self._check(await asyncio.to_thread(self.scorer, samples), len(samples))


def missing_reference(column: Optional[str], available: Sequence[str], where: str) -> ConfigurationError:
    cols = ", ".join(sorted(available)) or "none"
    if column is None:
        return ConfigurationError(f"this reward model is POLAR and needs a reference, but {where} was set to None")
    return ConfigurationError(
        f"this reward model is POLAR and scores each output against a reference, but there is no {column!r} "
        f"column (columns: {cols}); name the column that holds it with {where}="
    )


def resolve_references(
    target: Target, columns: Mapping[str, Any], column: Optional[str], n: int, *, setting: str
) -> Optional[List[Any]]:
    """The reference of each of ``n`` samples, from ``columns[column]``; ``None`` when the scorer takes none.

    The column must hold one value per sample. A scorer that needs references (a POLAR
    client) without the column is a :class:`~rmclient.ConfigurationError` naming
    ``setting``, the option that names the column; see :meth:`Target.wants_reference`
    for a client that cannot tell.
    """
    values = columns.get(column) if column is not None else None
    if values is None:
        if target.needs_reference():
            raise missing_reference(column, list(columns), setting)
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ConfigurationError(
            f"the reference column {column!r} holds a {type(values).__name__}, not one value per completion"
        )
    if len(values) != n:
        raise ConfigurationError(
            f"the reference column {column!r} has {len(values)} values for {n} completions: it needs one per "
            f"completion (name another column with {setting}=)"
        )
    values = list(values)
    return values if target.wants_reference(any(v is not None for v in values)) else None


def build_samples(
    prompts: Sequence[Any],
    outputs: Sequence[Any],
    references: Optional[Sequence[Any]] = None,
    *,
    strip_think: bool = False,
) -> List[Sample]:
    """rmclient samples ``{prompt, output[, reference]}``, one per output, in order.

    Prompts, outputs and references are strings or lists of messages (content given as
    text parts is joined); ``strip_think`` keeps only what follows the reasoning of each
    output (:func:`strip_think`).
    """
    if len(prompts) != len(outputs):
        raise ConfigurationError(f"{len(prompts)} prompts for {len(outputs)} completions")
    out = []
    for i, (prompt, completion) in enumerate(zip(prompts, outputs)):
        output = text_content(i, "output", completion)
        if strip_think:
            output = strip_think_in(output)
        sample: Sample = {"prompt": text_content(i, "prompt", prompt), "output": output}
        if references is not None:
            sample["reference"] = text_content(i, "reference", references[i])
        out.append(sample)
    return out


# -- settings: reward_kwargs (verl) and RMCLIENT_* environment variables ----------------

#: Every setting the configure-by-name hooks read (verl's module-level functions, the ms-swift
#: plugin) and its default. Each is taken from the keyword arguments, else from the
#: environment variable ``RMCLIENT_<NAME>`` (e.g. ``RMCLIENT_API_KEY``), else the default.
SETTINGS: Dict[str, Any] = {
    "model": None,
    "server_type": "transformers",
    "server_address": None,
    "trust_remote_code": False,
    "recipe": None,
    "api_key": None,
    "on_error": "raise",
    "prompt_key": "prompt",
    "reference_column": "reference",
    "strip_think": False,
}
_BOOLEAN_SETTINGS = ("trust_remote_code", "strip_think")
#: The settings that configure the client (the rest configure the hook).
CLIENT_SETTINGS = ("model", "server_type", "server_address", "trust_remote_code", "recipe", "api_key", "on_error")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def read_settings(kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> Dict[str, Any]:
    """Every :data:`SETTINGS` value, from ``kwargs``, else ``environ``'s ``RMCLIENT_*``, else the default.

    Other keywords are ignored (verl's reward loop adds ``reward_router_address``...).
    A missing, ``None`` or empty keyword falls through to the environment; ``False`` does not.
    """
    from ..recipes import RECIPES

    cfg: Dict[str, Any] = {}
    for key, default in SETTINGS.items():
        value = kwargs.get(key)
        if value is None or value == "":
            value = environ.get(f"RMCLIENT_{key.upper()}")
        if value is None or value == "":
            value = default
        cfg[key] = _truthy(value) if key in _BOOLEAN_SETTINGS else value
    address = cfg["server_address"]
    if address is not None and not isinstance(address, str):  # a list (or omegaconf ListConfig) of servers
        cfg["server_address"] = tuple(str(a) for a in address)
    if cfg["recipe"] is not None and cfg["recipe"] not in RECIPES:
        raise ConfigurationError(f"unknown recipe {cfg['recipe']!r} (RMCLIENT_RECIPE); choose one of {RECIPES}")
    return cfg


_clients: Dict[Any, Any] = {}
_clients_lock = threading.Lock()


def client_from_settings(kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    """The ``RewardModelClient`` the settings (:func:`read_settings`) describe, built once per process."""
    cfg = read_settings(kwargs, environ)
    if not cfg["model"]:
        raise ConfigurationError(
            "no reward model configured: set RMCLIENT_MODEL (and RMCLIENT_SERVER_TYPE / RMCLIENT_SERVER_ADDRESS "
            "for a server), or pass model=... (verl: in reward.custom_reward_function.reward_kwargs)"
        )
    key = tuple(cfg[k] for k in CLIENT_SETTINGS)
    with _clients_lock:
        if key not in _clients:
            from ..client import RewardModelClient

            address = cfg["server_address"]
            _clients[key] = RewardModelClient(
                cfg["model"],
                server_type=cfg["server_type"],
                server_address=list(address) if isinstance(address, tuple) else address,
                trust_remote_code=cfg["trust_remote_code"],
                recipe=cfg["recipe"],
                api_key=cfg["api_key"],
                on_error=cfg["on_error"],
            )
        return _clients[key]
