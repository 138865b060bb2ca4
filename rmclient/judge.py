"""LLM judges: rewards from any OpenAI-compatible chat-completions server, with the scalar reward models' guarantees.

:class:`JudgeClient` (and :class:`AsyncJudgeClient`) render each sample with a
:class:`~rmclient.judge_recipes.JudgeRecipe`, send one chat completion per
judgement through the same endpoint pool, retries, deadline and hedging as the
reward servers (``rmclient.send``), and read the verdict strictly
(``rmclient.verdicts``). A reply without a valid verdict is retried (up to
``max_attempts``, with the same request: the judge is deterministic at
temperature 0 with a seed) and then reported through the failure policy, never
scored 0.0. ``RewardModelClient(model, server_type="openai", ...)`` builds one.

Pairwise judgements are made in both orders, ``(a, b)`` and ``(b, a)``, and
averaged: the result does not depend on which answer came first, and the gap
between the two orders is reported. :meth:`rank` judges all pairs (or a
circular schedule, N judgements) and fits Bradley-Terry strengths.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import statistics
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from rmclient.adapters.openai import NO_VERDICT, ChatQuery

from ._loop import LoopThread, blocking
from .data import as_list
from .dispatch import ON_ERROR
from .errors import ClientClosedError, ConfigurationError, InvalidSampleError, ScoringError
from .judge_recipes import JudgeRecipe, as_text, judge_recipe, pointwise_variables
from .pool import CallFailed, EndpointPool, parse_addresses
from .preference import Comparison, Ranking, bradley_terry, compare, rank
from .progress import Progress, Tracker
from .send import Call, Chunk, RetryPolicy, send_chunk
from .transport import API_KEY_ENV

Sample = Dict[str, Any]
Data = Union[Sample, Sequence[Sample]]
SCHEDULES = ("all", "circular")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """One judged sample: the score, every reply's value (``n`` of them) and their spread.

    With a pairwise recipe the score is ``P(output beats reference)`` (both orders averaged) and
    ``disagreement`` is how far apart the two orders were (0: the order did not matter).
    """

    score: float
    replies: Tuple[float, ...]
    spread: float
    disagreement: Optional[float] = None


@dataclass(frozen=True)
class PairVerdict:
    """``P(a > b)`` from judging a pair in both orders: ``a_first`` with ``a`` shown as answer A,
    ``a_second`` with ``a`` shown as B; ``p_a`` is their mean, so ``p_a + p_b == 1`` exactly."""

    p_a: float
    a_first: float
    a_second: float
    spread: float = 0.0

    @property
    def p_b(self) -> float:
        return 1.0 - self.p_a

    @property
    def disagreement(self) -> float:
        """``|a_first - a_second|``: 0 when the order of the answers changed nothing."""
        return abs(self.a_first - self.a_second)

    @property
    def consistent(self) -> bool:
        """Whether both orders prefer the same answer (or both call it even)."""
        return (self.a_first - 0.5) * (self.a_second - 0.5) > 0 or self.a_first == self.a_second == 0.5


@dataclass(frozen=True)
class JudgeRanking(Ranking):
    """A ranking from pairwise judgements: Bradley-Terry log-strengths as the rewards."""

    #: ``(i, j) -> PairVerdict`` of every pair judged (``i < j``).
    pairs: Optional[Dict[Tuple[int, int], PairVerdict]] = None

    @property
    def consistency(self) -> Optional[float]:
        """The share of pairs both orders agreed on."""
        if not self.pairs:
            return None
        return sum(v.consistent for v in self.pairs.values()) / len(self.pairs)


class _JudgeBase:
    """Configuration, the recipe, the pools, and the one (async) implementation."""

    def __init__(
        self,
        model: Optional[str] = None,
        server_address: Union[str, Sequence[str], None] = None,
        *,
        recipe: Union[str, JudgeRecipe, None] = None,
        template: Optional[str] = None,
        system: Optional[str] = None,
        principles: Optional[Sequence[str]] = None,
        scale: Optional[Tuple[int, int]] = None,
        critique: Optional[bool] = None,
        temperature: float = 0.0,
        seed: Optional[int] = 42,
        n: int = 1,
        max_tokens: Optional[int] = None,
        top_logprobs: int = 20,
        structured: bool = True,
        extra_body: Optional[Mapping[str, Any]] = None,
        schedule: str = "all",
        api_key: Optional[str] = None,
        max_in_flight: int = 8,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_attempts: int = 3,
        deadline: Optional[float] = 600.0,
        retry_budget: Optional[int] = None,
        on_error: str = "raise",
        engine_version: Optional[str] = None,
        server_engine: Optional[str] = None,
    ) -> None:
        self._init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.addresses = parse_addresses(server_address)
        if not self.addresses:
            raise ConfigurationError("a judge needs server_address (an OpenAI-compatible server)")
        if on_error not in ON_ERROR:
            raise ConfigurationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        _schedule(2, schedule)  # checked now, not at the first rank()
        #: The recipe: what the judge reads and how its verdict is read.
        self.recipe: JudgeRecipe = judge_recipe(
            recipe, template=template, system=system, principles=principles, scale=scale, critique=critique,
            max_tokens=max_tokens,
        )
        if self.recipe.verdict == "probs" and n != 1:
            raise ConfigurationError("a probability verdict is the judge's distribution itself: n must be 1")
        if n < 1:
            raise ConfigurationError(f"n must be at least 1, got {n}")
        self.model = model
        #: What trainer hooks log the rewards under (TRL: ``rewards/judge_<model>/mean``).
        self.__name__ = "judge_" + (re.sub(r"[^0-9A-Za-z_.-]+", "_", str(model).rstrip("/").split("/")[-1]) if model
                                    else "openai")
        self.temperature, self.seed, self.n = temperature, seed, n
        self.top_logprobs = top_logprobs
        self.extra_body = dict(extra_body or {})
        self.schedule = schedule
        self.on_error = on_error
        #: No hedging: a duplicate generation costs as much as the first (and money on a hosted API).
        self.retry_policy = RetryPolicy(attempts=max_attempts, deadline=deadline, budget=retry_budget, hedge_after=None)
        self._pool_options = dict(
            max_in_flight=max_in_flight, api_key=api_key or os.environ.get(API_KEY_ENV) or None,
            connect_timeout=connect_timeout, read_timeout=read_timeout, engine_version=engine_version,
            served_model=model,
            adapter_options={"structured": structured, **({"server_engine": server_engine} if server_engine else {})},
        )
        self._pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EndpointPool]" = weakref.WeakKeyDictionary()

    server_type = "openai"
    #: Hooks tell a reward-model client by its encoder; a judge has none (it reads text).
    encoder = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.model!r}, at={', '.join(self.addresses)!r}, "
                f"recipe={self.recipe.name!r}, n={self.n})")

    def __getstate__(self) -> Dict[str, Any]:
        return dict(self._init_args)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        type(self).__init__(self, **state)

    # -- what is sent -------------------------------------------------------------------

    def _query(self, variables: Mapping[str, Any]) -> ChatQuery:
        r = self.recipe
        return ChatQuery(
            messages=tuple(r.messages(variables)), constraint=r.constraint(), max_tokens=r.tokens, read=r.read,
            temperature=self.temperature, seed=self.seed, n=self.n,
            top_logprobs=self.top_logprobs if r.verdict == "probs" else None, extra=self.extra_body,
        )

    def _pair_queries(self, base: Mapping[str, Any], a: str, b: str) -> List[ChatQuery]:
        """Both orders of a pair: ``a`` as answer A, then ``a`` as answer B."""
        return [self._query({**base, "a": a, "b": b}), self._query({**base, "a": b, "b": a})]

    def _queries(self, samples: List[Any]) -> List[ChatQuery]:
        """Each sample's judgements: one (pointwise), or the output against the reference in both orders."""
        out: List[ChatQuery] = []
        for i, sample in enumerate(samples):
            v = pointwise_variables(i, sample, self.recipe)
            if self.recipe.mode == "pointwise":
                out.append(self._query(v))
            else:
                if v["reference"] is None:
                    raise InvalidSampleError(i, "reference", "a pairwise judge scores the output against the "
                                                             "reference: give one (or use compare())")
                out.extend(self._pair_queries({"prompt": v["prompt"], "reference": None}, v["output"], v["reference"]))
        return out

    # -- the one implementation (async) ---------------------------------------------------

    def _pool(self) -> EndpointPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = EndpointPool("openai", self.addresses, **self._pool_options)
        return pool

    async def _judge_all(
        self, queries: List[ChatQuery], progress: Progress = None
    ) -> Tuple[List[Any], Dict[int, str]]:
        """Every query's verdict (the replies' values) or its failure, by index (``progress``: in judgements).

        A reply without a valid verdict is asked again, up to ``max_attempts`` rounds in all, with
        the seed plus the round (the same seed would give the same reply; each round's requests are
        still reproducible); greedy decoding (temperature 0) would too, so it is reported at once.
        """
        policy = self.retry_policy
        deadline_at = self._deadline_at()
        pool = self._pool()
        await pool.start(deadline_at)
        tracker = Tracker(progress, len(queries)) if progress is not None else None
        results: List[Any] = [None] * len(queries)
        failures: Dict[int, str] = {}
        todo = list(range(len(queries)))
        try:
            for attempt in range(policy.attempts):
                batch = [queries[i] if not attempt else replace(queries[i], seed=(self.seed or 0) + attempt)
                         for i in todo]
                got, failed = await self._round(pool, batch, deadline_at, tracker if not attempt else None)
                for k, i in enumerate(todo):
                    if k in failed:
                        failures[i] = failed[k]
                    else:
                        results[i] = got[k]
                        failures.pop(i, None)
                todo = [i for i in todo if NO_VERDICT in failures.get(i, "")]
                if not todo or self.temperature == 0 or time.monotonic() >= deadline_at:
                    break
                logger.warning("asking the judge again for %d replies without a valid verdict (round %d, seed %s)",
                               len(todo), attempt + 2, (self.seed or 0) + attempt + 1)
        finally:
            if tracker is not None:
                tracker.close()
        return results, failures

    async def _round(self, pool: EndpointPool, queries: List[ChatQuery], deadline_at: float,
                     tracker: Optional[Tracker]) -> Tuple[List[Any], Dict[int, str]]:
        """One request per query through the pool (its retries, hedging off), at most twice the pool's slots."""
        policy = self.retry_policy
        budget = policy.budget if policy.budget is not None else max(policy.attempts, len(queries))
        call = Call(len(queries), deadline_at=deadline_at, retries=budget,
                    on_scored=tracker.update if tracker is not None else None)
        room = asyncio.Semaphore(max(1, 2 * sum(e.limit for e in pool.endpoints)))

        async def one(i: int, query: ChatQuery) -> None:
            async with room:
                await send_chunk(pool, Chunk([i], [query], owners=[call]), policy, deadline_at)

        try:
            await asyncio.gather(*(one(i, q) for i, q in enumerate(queries)))
        except CallFailed as exc:
            if isinstance(exc.error, ClientClosedError):
                raise ClientClosedError(dict(call.failures), list(call.results)) from None
            raise exc.error from None
        return list(call.results), dict(call.failures)

    async def _score_details(self, data: Data, *, progress: Progress = None) -> Any:
        """:class:`Verdict` of each sample (one, or a list for a list); ``progress=True`` shows a bar, a
        callable gets ``(judgements done, total)``."""
        samples, single = as_list(data)
        queries = self._queries(samples)
        results, failures = await self._judge_all(queries, progress)
        verdicts: List[Optional[Verdict]] = []
        failed: Dict[int, str] = {}
        for i in range(len(samples)):
            if self.recipe.mode == "pointwise":
                if i in failures:
                    failed[i] = failures[i]
                    verdicts.append(None)
                    continue
                replies = tuple(results[i])
                verdicts.append(Verdict(statistics.fmean(replies), replies, _spread(replies)))
            else:
                k = 2 * i
                if k in failures or k + 1 in failures:
                    failed[i] = failures.get(k, failures.get(k + 1, ""))
                    verdicts.append(None)
                    continue
                pair = _pair(results[k], results[k + 1])
                verdicts.append(Verdict(pair.p_a, tuple(results[k]) + tuple(1.0 - x for x in results[k + 1]),
                                        pair.spread, pair.disagreement))
        if failed and self.on_error != "nan":
            raise ScoringError(failed, [None if v is None else v.score for v in verdicts])
        out = [v if v is not None else Verdict(math.nan, (), math.nan) for v in verdicts]
        return out[0] if single else out

    async def _score(self, data: Data, *, progress: Progress = None) -> Any:
        """The judge's score of one sample (a float) or of a list (a list, in input order)."""
        _, single = as_list(data)
        verdicts = await self._score_details(data, progress=progress)
        return verdicts.score if single else [v.score for v in verdicts]

    async def _compare(self, prompt: Any, a: Any, b: Any, reference: Any = None) -> Union[PairVerdict, Comparison]:
        """``P(a > b)``: a pairwise recipe judges both orders (:class:`PairVerdict`); a pointwise one
        scores both answers and compares the scores (Bradley-Terry on the scores, :class:`Comparison`)."""
        if self.recipe.mode == "pointwise":
            ra, rb = await self._score([_sample(prompt, a, reference), _sample(prompt, b, reference)])
            return compare(ra, rb)
        base = _base(prompt, reference)
        results, failures = await self._judge_all(self._pair_queries(base, as_text(0, "a", a), as_text(0, "b", b)))
        if failures:
            if self.on_error == "nan":
                return PairVerdict(math.nan, math.nan, math.nan, math.nan)
            raise ScoringError({0: failures.get(0, failures.get(1, ""))}, [None])
        return _pair(results[0], results[1])

    async def _rank(self, prompt: Any, outputs: Sequence[Any], reference: Any = None,
                    schedule: Optional[str] = None) -> Ranking:
        """``outputs`` best first. A pairwise recipe judges every pair in both orders (``schedule="all"``,
        N(N-1)/2 pairs) or each output against the next (``"circular"``, N pairs) and fits Bradley-Terry;
        a pointwise one ranks by score."""
        if self.recipe.mode == "pointwise":
            return rank(await self._score([_sample(prompt, o, reference) for o in outputs]))
        texts = [as_text(i, "outputs", o) for i, o in enumerate(outputs)]
        pairs = _schedule(len(texts), schedule or self.schedule)
        base = _base(prompt, reference)
        queries = [q for i, j in pairs for q in self._pair_queries(base, texts[i], texts[j])]
        results, failures = await self._judge_all(queries)
        judged: Dict[Tuple[int, int], PairVerdict] = {}
        failed: Dict[int, str] = {}
        for k, (i, j) in enumerate(pairs):
            if 2 * k in failures or 2 * k + 1 in failures:
                failed[k] = f"pair ({i}, {j}): {failures.get(2 * k, failures.get(2 * k + 1, ''))}"
            else:
                judged[(i, j)] = _pair(results[2 * k], results[2 * k + 1])
        if failed and self.on_error != "nan":  # by pair: its index in the schedule, P(i > j) of those judged
            raise ScoringError(failed, [judged[p].p_a if p in judged else None for p in pairs])
        games = [(i, j, v.p_a) for (i, j), v in judged.items()]
        rewards = await asyncio.to_thread(bradley_terry, len(texts), games)  # pure Python: off the loop
        ordered = rank(rewards)
        return JudgeRanking(ordered.rewards, ordered.order, judged)

    async def _request_bodies(self, data: Data) -> List[Dict[str, Any]]:
        """The exact request bodies the judge sends for ``data`` (reproducible: the same inputs give
        the same bodies, byte for byte, as ``json.dumps``)."""
        samples, _ = as_list(data)
        pool = self._pool()
        await pool.start(self._deadline_at())
        adapter = await pool.adapter_for(pool.endpoints[0])
        return [adapter.build_request([q]).json for q in self._queries(samples)]  # type: ignore[attr-defined, misc]

    def _deadline_at(self) -> float:
        return self.retry_policy.deadline_at()

    async def _aclose(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()


def _sample(prompt: Any, output: Any, reference: Any) -> Sample:
    sample = {"prompt": prompt, "output": output}
    if reference is not None:
        sample["reference"] = reference
    return sample


def _base(prompt: Any, reference: Any) -> Dict[str, Any]:
    """The variables a pair shares: the prompt and the reference (``None``: none)."""
    return {"prompt": as_text(0, "prompt", prompt),
            "reference": None if reference is None else as_text(0, "reference", reference)}


def _spread(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def _pair(first: Sequence[float], second: Sequence[float]) -> PairVerdict:
    """A pair's verdict from its two orders' replies (``P(A wins)`` each; ``a`` was A first, B second)."""
    a_first = statistics.fmean(first)
    a_second = 1.0 - statistics.fmean(second)
    both = list(first) + [1.0 - x for x in second]
    return PairVerdict((a_first + a_second) / 2.0, a_first, a_second, _spread(both))


def _schedule(n: int, schedule: str) -> List[Tuple[int, int]]:
    if schedule not in SCHEDULES:
        raise ConfigurationError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if n < 2:
        raise ConfigurationError(f"ranking needs at least 2 outputs, got {n}")
    if schedule == "circular" and n > 2:
        return [(i, (i + 1) % n) if i + 1 < n else ((i + 1) % n, i) for i in range(n)]
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


class AsyncJudgeClient(_JudgeBase):
    """An LLM judge from async code: ``await judge(data)``, ``compare``, ``rank``, ``score_details``."""

    __call__ = score = _JudgeBase._score
    score_details = _JudgeBase._score_details
    compare = _JudgeBase._compare
    rank = _JudgeBase._rank
    request_bodies = _JudgeBase._request_bodies

    async def ascore(self, samples: Sequence[Sample]) -> List[float]:
        """The :class:`~rmclient.scorer.Scorer` entry point."""
        return await self._score(list(samples))  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self._aclose()

    async def __aenter__(self) -> "AsyncJudgeClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _blocking(method: Any) -> Any:
    return blocking(method, "JudgeClient")


class JudgeClient(_JudgeBase):
    """An LLM judge on any OpenAI-compatible server: ``judge(data)`` gives one float per sample.

    Args:
        model: the served model name (default: read from ``/v1/models``).
        server_address: ``host:port`` or URL; a list or a comma-separated string for several.
        recipe: a name of :data:`~rmclient.judge_recipes.JUDGE_RECIPES` (default ``"pointwise"``) or a
            :class:`~rmclient.judge_recipes.JudgeRecipe`; ``template``, ``system``, ``principles``,
            ``scale``, ``critique``, ``max_tokens`` change it.
        temperature, seed, n: sampling (``n`` replies per judgement, averaged; their spread reported).
        top_logprobs: how many next tokens a probability verdict asks for.
        structured: force the verdict with the server's structured output (JSON schema, or a choice).
        extra_body: more request fields, sent as given.
        schedule: ``rank``'s pairs: ``"all"`` or ``"circular"``.
        api_key, max_in_flight, connect_timeout, read_timeout, max_attempts, deadline, retry_budget,
        on_error: as for :class:`~rmclient.RewardModelClient` (``on_error="nan"``: NaN for failures).
        engine_version, server_engine: the engine row to use (``"vllm"``, ``"sglang"``, ``"lmdeploy"``), whatever
            the server says at first contact (which still asks it for the model name).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread = LoopThread("rmclient-judge", on_cancelled=lambda: ClientClosedError({}, []))
        weakref.finalize(self, self._thread.stop)

    def _run(self, coro: Any) -> Any:
        return self._thread.run(coro)

    __call__ = score = _blocking(_JudgeBase._score)
    score_details = _blocking(_JudgeBase._score_details)
    compare = _blocking(_JudgeBase._compare)
    rank = _blocking(_JudgeBase._rank)
    request_bodies = _blocking(_JudgeBase._request_bodies)

    async def ascore(self, samples: Sequence[Sample]) -> List[float]:
        """The :class:`~rmclient.scorer.Scorer` entry point, from any event loop (runs on the judge's own)."""
        return await asyncio.wrap_future(self._thread.submit(self._score(list(samples))))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._thread.started:
            self._thread.run(self._aclose())
            self._thread.stop()

    def __enter__(self) -> "JudgeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: ``RewardModelClient``'s positional parameters (xtuner's order).
CLIENT_POSITIONAL = ("path", "max_length", "max_response_length", "response_cut_side", "server_type", "server_address")
#: ``RewardModelClient`` options a judge takes under the same name (``served_model`` becomes ``model``).
SHARED_OPTIONS = ("server_address", "api_key", "max_in_flight", "connect_timeout", "read_timeout", "max_attempts",
                  "deadline", "retry_budget", "on_error", "engine_version", "recipe")
JUDGE_OPTIONS = ("template", "system", "principles", "scale", "critique", "temperature", "seed", "n", "max_tokens",
                 "top_logprobs", "structured", "extra_body", "schedule", "server_engine")
#: ``RewardModelClient`` options that mean nothing to a judge, at these values (the settings pass some).
IGNORED_OPTIONS = {"trust_remote_code": (False, True), "max_length": (16384,),
                   "max_response_length": (4096,), "response_cut_side": ("right",)}


def judge_from_client_args(cls: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> _JudgeBase:
    """The judge ``RewardModelClient(model, server_type="openai", ...)`` stands for (``cls``: the sync or
    async judge): the shared options carried over, a reward-model option refused by name."""
    given = dict(zip(CLIENT_POSITIONAL, args))
    given.update(kwargs)
    path = given.pop("path", None)
    served = given.pop("served_model", None)
    given.pop("server_type", None)  # "openai", in any case: what brought us here
    judge_kwargs = {k: given.pop(k) for k in list(given) if k in SHARED_OPTIONS or k in JUDGE_OPTIONS}
    for k, harmless in IGNORED_OPTIONS.items():
        if k in given and given[k] in harmless:
            del given[k]
    if given:
        raise ConfigurationError(
            f"{', '.join(sorted(given))}: reward-model option(s) that a judge (server_type='openai') does not take"
        )
    return cls(served or path, **judge_kwargs)
