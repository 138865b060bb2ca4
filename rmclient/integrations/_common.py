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
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import ConfigurationError, InvalidSampleError

Sample = Dict[str, Any]

#: POLAR's verl recipe: the first ``<think>...</think>`` block and everything before it go,
#: the rest is stripped of surrounding whitespace; text without a closed block is kept as it is.
_THINK = re.compile(r"<think>(.*?)</think>(.*)", re.DOTALL)


def strip_think(text: str) -> str:
    """The answer after a ``<think>...</think>`` block, as POLAR's verl recipe extracts it."""
    match = _THINK.search(text)
    return match.group(2).strip() if match else text


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

    def wants_reference(self) -> bool:
        """Whether samples for this scorer carry the reference.

        A client gets it when it scores with the POLAR recipe (``recipe="polar"``,
        or no forced recipe and a checkpoint named POLAR); an outcome reward
        model never does (its recipe rejects one). Compositions and plain
        functions get everything there is.
        """
        if self.kind in ("client", "async_client"):
            from ..recipes import is_polar_model

            recipe = self.scorer.recipe
            if recipe is not None:
                return recipe == "polar"
            return is_polar_model(self.scorer.path, self.scorer.config)
        return True

    def needs_reference(self) -> bool:
        """Whether a sample without a reference cannot be scored at all (a POLAR client)."""
        return self.kind in ("client", "async_client") and self.wants_reference()

    def adapt(self, samples: List[Sample]) -> List[Sample]:
        if self.wants_reference():
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


def call_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)
