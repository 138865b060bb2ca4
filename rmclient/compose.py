"""Several reward models (and plain reward functions) at once, combined into one reward.

::

    from rmclient import RewardModelClient
    from rmclient.compose import Member, RewardComposition

    polar = RewardModelClient("internlm/POLAR-7B", server_type="sglang", server_address="10.0.0.1:30000")
    skywork = RewardModelClient(
        "Skywork/Skywork-Reward-V2-Llama-3.1-8B", server_type="vllm", server_address="10.0.0.2:8000",
        recipe="chat_template",                # an outcome RM: score without the reference
    )

    def brevity(samples):                      # a plain function: samples -> list of floats
        return [-len(s["output"]) / 1000 for s in samples]

    reward = RewardComposition(
        [Member(polar, 1.0), Member(skywork, 0.5), Member(brevity, 0.1, normalize=None)],
        normalize="running", clip=(-5.0, 5.0),
    )
    reward(samples)                            # list of floats; the members are called concurrently

For each sample the combined reward is ``clip(sum_m weight_m * clip_m(norm_m(raw_m)))``:

* ``norm_m`` is the member's normalisation: ``None`` (raw), ``"running"`` (z-score against the
  running mean and standard deviation of every finite reward this member has produced so far,
  this call included) or ``"group"`` (z-score within each prompt group, from ``group_ids``);
  ``z = (x - mean) / (std + eps)``, with the population standard deviation;
* ``clip_m`` is the member's optional ``(low, high)``; the final ``clip`` bounds the sum.

Samples are rmclient samples (``prompt``, ``output``, and ``reference`` for POLAR). Each
client member gets what its recipe takes: a POLAR client gets the reference, an outcome
reward model gets the sample without it. A client with no ``recipe`` whose checkpoint is
not named POLAR cannot tell which it is: given samples with a reference it raises
:class:`~rmclient.ConfigurationError` (pass ``recipe="polar"`` or ``recipe="chat_template"``,
as for ``skywork`` above). Plain functions get the samples as they are.

Failures follow the clients' policy. By default (``on_error="raise"``) a member that cannot
score some samples makes the call raise :class:`~rmclient.ScoringError`, whose ``failures``
name the member and reason per sample and whose ``rewards`` keep the combined rewards of
the samples every member scored (``None`` elsewhere). With ``on_error="nan"`` those samples
get NaN instead. A member that returns ``None``, NaN or an infinite value for a sample
(a function, or a client built with ``on_error="nan"``) has failed on that sample, with
the same consequence. Malformed samples and configuration mistakes
(:class:`~rmclient.InvalidSampleError`, :class:`~rmclient.ConfigurationError`) always raise.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._loop import LoopThread
from .dispatch import ON_ERROR
from .errors import ConfigurationError, InvalidSampleError, ScoringError
from .scorer import Target

NORMALIZE = (None, "running", "group")
_UNSET: Any = object()


@dataclass
class RunningStats:
    """Count, mean and (population) variance of a stream of numbers, by Welford's update."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, values: Sequence[float]) -> None:
        for x in values:
            if math.isfinite(x):
                self.count += 1
                delta = x - self.mean
                self.mean += delta / self.count
                self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0


@dataclass
class Member:
    """One scorer in a :class:`RewardComposition`.

    ``scorer`` is a ``RewardModelClient``, an ``AsyncRewardModelClient``, another
    composition, or a function ``samples -> list of floats`` (sync or async).
    ``normalize`` and ``clip`` left unset take the composition's ``member_normalize``
    and ``member_clip``; ``normalize=None`` set explicitly keeps this member raw.
    """

    scorer: Any
    weight: float = 1.0
    name: Optional[str] = None
    normalize: Any = _UNSET
    clip: Any = _UNSET
    stats: RunningStats = field(default_factory=RunningStats, repr=False)


@dataclass
class CompositeScores:
    """What one call produced: the combined rewards and, per member, the raw and the normalised ones."""

    rewards: List[float]
    raw: Dict[str, List[float]]
    normalized: Dict[str, List[float]]


MemberSpec = Union[Member, Any, Tuple[Any, float]]


def _as_members(members: Union[Sequence[MemberSpec], Mapping[str, Any]]) -> List[Member]:
    items: List[Tuple[Optional[str], Any]]
    if isinstance(members, Mapping):
        items = list(members.items())
    else:
        items = [(None, m) for m in members]
    out: List[Member] = []
    for name, spec in items:
        if isinstance(spec, Member):
            member = spec
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], (int, float)):
            member = Member(spec[0], float(spec[1]))
        else:
            member = Member(spec)
        if name is not None:
            member.name = name
        out.append(member)
    if not out:
        raise ConfigurationError("a RewardComposition needs at least one member")
    return out


def _check_clip(clip: Any, what: str) -> Optional[Tuple[float, float]]:
    if clip is None:
        return None
    try:
        low, high = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what} must be (low, high) or None, got {clip!r}") from None
    if low > high:
        raise ConfigurationError(f"{what}: low {low} is above high {high}")
    return low, high


def _clip(x: float, bounds: Optional[Tuple[float, float]]) -> float:
    if bounds is None or math.isnan(x):
        return x
    return min(max(x, bounds[0]), bounds[1])


class RewardComposition:
    """Call several scorers concurrently and combine their rewards (see the module docs).

    Args:
        members: a list of :class:`Member` (or of scorers, or of ``(scorer, weight)`` pairs),
            or a dict ``name -> scorer | (scorer, weight) | Member``.
        member_normalize: the default normalisation of each member: ``None``, ``"running"``
            or ``"group"``.
        member_clip: the default ``(low, high)`` applied to each member after normalisation.
        clip: ``(low, high)`` applied to the weighted sum.
        on_error: ``"raise"`` (default) or ``"nan"``, as for the clients.
        eps: added to the standard deviation when normalising.
        name: the name trainers log this reward under.
    """

    #: :class:`~rmclient.scorer.Target` hands it the samples' prompt groups.
    takes_group_ids: ClassVar[bool] = True

    def __init__(
        self,
        members: Union[Sequence[MemberSpec], Mapping[str, Any]],
        *,
        member_normalize: Optional[str] = None,
        member_clip: Optional[Tuple[float, float]] = None,
        clip: Optional[Tuple[float, float]] = None,
        on_error: str = "raise",
        eps: float = 1e-6,
        name: str = "composite_reward",
        # ``normalize=`` is accepted as a short name for ``member_normalize=``.
        normalize: Any = _UNSET,
    ) -> None:
        if normalize is not _UNSET:
            member_normalize = normalize
        if member_normalize not in NORMALIZE:
            raise ConfigurationError(f"normalize must be one of {NORMALIZE}, got {member_normalize!r}")
        if on_error not in ON_ERROR:
            raise ConfigurationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.members = _as_members(members)
        self.clip = _check_clip(clip, "clip")
        self.on_error = on_error
        self.eps = float(eps)
        self.name = name
        self._targets: List[Target] = []
        seen: Dict[str, int] = {}
        for i, member in enumerate(self.members):
            target = Target(member.scorer)
            self._targets.append(target)
            if member.normalize is _UNSET:
                member.normalize = member_normalize
            if member.normalize not in NORMALIZE:
                raise ConfigurationError(f"member {i}: normalize must be one of {NORMALIZE}, got {member.normalize!r}")
            member.clip = _check_clip(member_clip if member.clip is _UNSET else member.clip, f"member {i} clip")
            base = member.name or target.default_name
            seen[base] = seen.get(base, 0) + 1
            member.name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        self._lock = threading.Lock()
        self._loop: Optional[LoopThread] = None

    # -- scoring --------------------------------------------------------------------

    def __call__(self, data: Any, group_ids: Optional[Sequence[Any]] = None) -> Any:
        """The combined reward of one sample (a float) or of a list of samples (a list)."""
        if isinstance(data, Mapping):
            return self.score([data], group_ids=group_ids)[0]
        return self.score(list(data), group_ids=group_ids)

    def score(self, samples: Sequence[Mapping[str, Any]], group_ids: Optional[Sequence[Any]] = None) -> List[float]:
        """Combined rewards, in input order (sync; runs the members concurrently)."""
        return self.score_details(samples, group_ids=group_ids).rewards

    async def ascore(
        self, samples: Sequence[Mapping[str, Any]], group_ids: Optional[Sequence[Any]] = None
    ) -> List[float]:
        """Combined rewards, in input order (async)."""
        return (await self.ascore_details(samples, group_ids=group_ids)).rewards

    def score_details(
        self, samples: Sequence[Mapping[str, Any]], group_ids: Optional[Sequence[Any]] = None
    ) -> CompositeScores:
        """Like :meth:`score`, with every member's raw and normalised rewards."""
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    self._loop = LoopThread("rmclient-compose-loop")
        return self._loop.run(self.ascore_details(samples, group_ids=group_ids))

    async def ascore_details(
        self, samples: Sequence[Mapping[str, Any]], group_ids: Optional[Sequence[Any]] = None
    ) -> CompositeScores:
        """Like :meth:`ascore`, with every member's raw and normalised rewards."""
        samples = [dict(s) for s in samples]
        n = len(samples)
        if group_ids is not None and len(group_ids) != n:
            raise ConfigurationError(f"{len(group_ids)} group ids for {n} samples")
        if group_ids is None and any(m.normalize == "group" for m in self.members):
            raise ConfigurationError("normalize='group' needs group_ids (one per sample) with the samples")
        if n == 0:
            return CompositeScores([], {m.name: [] for m in self.members}, {m.name: [] for m in self.members})
        results = await asyncio.gather(
            *(t.ascore(samples, group_ids=group_ids) for t in self._targets), return_exceptions=True
        )
        failures: Dict[int, str] = {}
        raw: Dict[str, List[float]] = {}
        cause: Optional[BaseException] = None
        for member, result in zip(self.members, results):
            if isinstance(result, (InvalidSampleError, ConfigurationError)):
                raise result
            if isinstance(result, ScoringError):
                cause = cause or result
                values = [float("nan") if r is None else float(r) for r in result.rewards]
                if len(values) != n:
                    values = [float("nan")] * n
                for i, why in result.failures.items():
                    failures.setdefault(i, f"{member.name}: {why}")
            elif isinstance(result, BaseException):
                if not isinstance(result, Exception):  # KeyboardInterrupt, CancelledError
                    raise result
                cause = cause or result
                values = [float("nan")] * n
                for i in range(n):
                    failures.setdefault(i, f"{member.name}: {type(result).__name__}: {result}")
            else:
                values = result
            values = [float("nan") if x is None else float(x) for x in values]
            for i, x in enumerate(values):
                if not math.isfinite(x):
                    failures.setdefault(i, f"{member.name}: returned {'None/NaN' if math.isnan(x) else x}")
            raw[member.name] = values

        normalized: Dict[str, List[float]] = {}
        with self._lock:
            for member in self.members:
                values = [x for i, x in enumerate(raw[member.name]) if i not in failures]
                if member.normalize == "running":
                    member.stats.update(values)
                normalized[member.name] = [
                    _clip(x, member.clip)
                    for x in self._normalize(member, raw[member.name], group_ids, failures)
                ]
        combined = [
            _clip(sum(m.weight * normalized[m.name][i] for m in self.members), self.clip) for i in range(n)
        ]
        if failures:
            if self.on_error == "raise":
                kept: List[Optional[float]] = [None if i in failures else combined[i] for i in range(n)]
                raise ScoringError(failures, kept) from cause
            combined = [float("nan") if i in failures else combined[i] for i in range(n)]
        return CompositeScores(combined, raw, normalized)

    def _normalize(
        self, member: Member, values: List[float], group_ids: Optional[Sequence[Any]], failures: Mapping[int, str]
    ) -> List[float]:
        if member.normalize is None:
            return list(values)
        if member.normalize == "running":
            mean, std = member.stats.mean, member.stats.std
            return [self._z(x, mean, std) for x in values]
        assert group_ids is not None
        groups: Dict[Any, RunningStats] = {}
        for i, (x, g) in enumerate(zip(values, group_ids)):
            if i not in failures:
                groups.setdefault(_hashable(g), RunningStats()).update([x])
        out = []
        for x, g in zip(values, group_ids):
            stats = groups.get(_hashable(g))
            out.append(float("nan") if stats is None else self._z(x, stats.mean, stats.std))
        return out

    def _z(self, x: float, mean: float, std: float) -> float:
        denom = std + self.eps
        if denom == 0.0:  # every value seen equals the mean
            return x - mean
        return (x - mean) / denom

    # -- state ----------------------------------------------------------------------

    @property
    def stats(self) -> Dict[str, RunningStats]:
        """Each member's running statistics (used by ``normalize="running"``)."""
        return {m.name: m.stats for m in self.members}

    def reset_stats(self) -> None:
        """Forget the running statistics."""
        with self._lock:
            for m in self.members:
                m.stats = RunningStats()

    # -- trainer hooks ------------------------------------------------------------------

    def as_reward_func(self, **options: Any) -> Any:
        """A TRL ``GRPOTrainer`` reward function (see :func:`rmclient.integrations.trl.make_reward_func`)."""
        from .integrations.trl import make_reward_func  # the hooks sit above: imported on use

        return make_reward_func(self, **options)

    def as_compute_score(self, *, batch: bool = False, asynchronous: bool = False, **options: Any) -> Any:
        """verl's ``compute_score`` (or, with ``batch=True``, the batch reward manager's function).

        See :mod:`rmclient.integrations.verl`.
        """
        from .integrations import verl  # the hooks sit above: imported on use

        if batch:
            return verl.make_compute_score_batch(self, **options)
        return verl.make_compute_score(self, asynchronous=asynchronous, **options)


def _hashable(g: Any) -> Any:
    try:
        hash(g)
        return g
    except TypeError:
        return repr(g)
