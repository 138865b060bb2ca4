"""What scores samples: the :class:`Scorer` protocol, and :class:`Target`, which gives any scorer both entry points.

A scorer is anything the hooks and compositions can score a list of rmclient samples with:

* a :class:`~rmclient.RewardModelClient` (sync) or :class:`~rmclient.AsyncRewardModelClient`
  (both have ``ascore`` and an ``encoder``, whose recipe policy says whether they take the reference);
* a :class:`~rmclient.compose.RewardComposition` (also takes the samples' prompt groups);
* an LLM judge (:class:`~rmclient.judge.JudgeClient`, :class:`~rmclient.judge.AsyncJudgeClient`);
* a plain function ``f(samples) -> list[float]``, sync or ``async``.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any, List, Optional, Protocol, Sequence, runtime_checkable

from ._loop import LoopThread
from .errors import ConfigurationError

Sample = Any


@runtime_checkable
class Scorer(Protocol):
    """Scores a list of rmclient samples: one float per sample, in order."""

    async def ascore(self, samples: List[Sample]) -> List[float]: ...


def is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class Target:
    """One scorer with both a sync (:meth:`score`) and an async (:meth:`ascore`) entry point.

    ``group_ids`` reach only scorers that use them (``takes_group_ids``: a composition
    normalising per prompt group); a client or a plain function never sees them.
    """

    def __init__(self, scorer: Any) -> None:
        if isinstance(scorer, Target):
            scorer = scorer.scorer
        self.scorer = scorer
        #: The model layer of a client (its recipe policy); ``None`` for compositions and functions.
        self.encoder = getattr(scorer, "encoder", None)
        self.kind = (
            "composition" if getattr(scorer, "takes_group_ids", False)
            else "async_client" if self.encoder is not None and is_async_callable(scorer)
            else "client" if self.encoder is not None
            else "async_function" if is_async_callable(scorer)
            else "function" if callable(scorer)
            else None
        )
        if self.kind is None:
            raise ConfigurationError(
                f"cannot score with a {type(scorer).__name__}: give a RewardModelClient, an AsyncRewardModelClient, "
                "a RewardComposition, or a function samples -> list of floats"
            )
        self._loop: Optional[LoopThread] = None

    @property
    def is_async(self) -> bool:
        """Whether the scorer is natively async (the hooks then hand trainers an async function)."""
        return self.kind in ("async_client", "async_function")

    @property
    def default_name(self) -> str:
        if self.encoder is not None:
            name = str(self.encoder.path).rstrip("/").split("/")[-1]
            return re.sub(r"[^0-9A-Za-z_.-]+", "_", name) or "rmclient"
        if self.kind == "composition":
            return self.scorer.name
        return getattr(self.scorer, "__name__", type(self.scorer).__name__)

    def wants_reference(self, has_references: bool = True) -> bool:
        """Whether samples for this scorer carry the reference: a client's recipe policy decides
        (:meth:`rmclient.model.Encoder.wants_reference`); compositions and plain functions get
        everything there is."""
        if self.encoder is None:
            return True
        return self.encoder.wants_reference(has_references)

    def needs_reference(self) -> bool:
        """Whether a sample without a reference cannot be scored at all (a POLAR client)."""
        return self.encoder is not None and self.wants_reference(has_references=False)

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
            self._loop = LoopThread("rmclient-hook-loop")
        return self._check(self._loop.run(self.scorer(samples)), len(samples))

    def _client(self, what: str) -> Any:
        if self.kind not in ("client", "async_client"):
            raise ConfigurationError(f"{what} needs a RewardModelClient or AsyncRewardModelClient, not a {self.kind}")
        return self.scorer

    def score_steps(self, samples: List[Sample], aggregate: str = "min") -> List[Any]:
        """Process rewards (:class:`~rmclient.steps.StepRewards`) of ``samples``, from a client."""
        client = self._client("kind='steps'")
        if self.kind == "client":
            return client.score_steps(samples, aggregate=aggregate)
        if self._loop is None:
            self._loop = LoopThread("rmclient-hook-loop")
        return self._loop.run(client.score_steps(samples, aggregate=aggregate))

    async def ascore_steps(self, samples: List[Sample], aggregate: str = "min") -> List[Any]:
        """The same from an event loop (a sync client's work runs on its own loop: calls coalesce)."""
        return await self._client("kind='steps'").ascore_steps(samples, aggregate=aggregate)

    async def ascore(self, samples: List[Sample], group_ids: Optional[Sequence[Any]] = None) -> List[float]:
        if not samples:
            return []
        samples = self.adapt(samples)
        if self.kind == "composition":
            return await self.scorer.ascore(samples, group_ids=group_ids)
        if self.kind in ("client", "async_client"):  # a sync client's ascore runs on its own loop: calls coalesce
            return self._check(await self.scorer.ascore(samples), len(samples))
        if self.kind == "async_function":
            return self._check(await self.scorer(samples), len(samples))
        if is_async_callable(getattr(self.scorer, "ascore", None)):  # a sync scorer with its own loop (a judge)
            return self._check(await self.scorer.ascore(samples), len(samples))
        return self._check(await asyncio.to_thread(self.scorer, samples), len(samples))
