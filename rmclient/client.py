"""``RewardModelClient`` and ``AsyncRewardModelClient``: encode samples exactly, score them on any backend.

Both classes take the same arguments and share one implementation; the async
one's methods are coroutines, the sync one's run them on an event loop of its
own, in a background thread, so it also works where a loop is already running
(Jupyter, Ray actors). The client is configuration: an
:class:`~rmclient.model.Encoder` (the model layer), a backend (in-process or
an endpoint pool) and, per backend and event loop, a
:class:`~rmclient.dispatch.Scheduler` that every call goes through, so that
concurrent calls share requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import threading
import weakref
from dataclasses import dataclass, replace
from typing import (
    Any, AsyncIterator, Awaitable, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union,
)

from ._loop import LoopThread, blocking
from .data import as_list
from .dispatch import ON_ERROR, LocalSink, RemoteSink, RetryPolicy, Scheduler
from .engines import server_type as engine_of
from .errors import ClientClosedError, ConfigurationError, ScoringError
from .model import Encoder
from .pool import EndpointPool, parse_addresses
from .preference import Comparison, Ranking, compare, rank
from .progress import Progress, Tracker
from .recipes import Encoded
from .spans import dense_inputs, dense_rewards
from .steps import AGGREGATES, check_aggregate, step_results
from .transport import API_KEY_ENV

logger = logging.getLogger(__name__)

Sample = Dict[str, Any]
Data = Union[Sample, Sequence[Sample]]
Rewards = Union[float, List[float]]
#: ``reduce=`` of a multi-label head: a name of :data:`REDUCE`, a callable of the vector, or ``None`` (the vector).
Reduce = Union[str, Callable[[List[float]], float], None]
REDUCE: Dict[str, Callable[[List[float]], float]] = {"mean": AGGREGATES["mean"], "sum": sum, "min": min, "max": max}
_UNSET: Any = object()
T = TypeVar("T")


@dataclass(frozen=True)
class Scored:
    """One sample's reward with what it was scored from (``score_details``)."""

    reward: float
    #: The token ids scored (BOS and reward token included).
    num_tokens: int
    #: Whether the sample was cut to fit the longest encoding.
    truncated: bool


class _ClientBase:
    """Configuration, the Encoder, the backends, and the one (async) implementation of every method."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """``server_type="openai"`` gives an LLM judge (:class:`~rmclient.judge.JudgeClient`, or its
        async twin): the same calls, scored by a chat model on any OpenAI-compatible server."""
        server_type = kwargs.get("server_type", args[4] if len(args) > 4 else None)
        if isinstance(server_type, str) and server_type.lower() == "openai":
            from .judge import AsyncJudgeClient, JudgeClient, judge_from_client_args

            if cls not in (RewardModelClient, AsyncRewardModelClient):
                raise ConfigurationError(f"{cls.__name__} is a reward-model client: for an LLM judge use "
                                         "rmclient.judge.JudgeClient (or subclass it)")

            judge = AsyncJudgeClient if issubclass(cls, AsyncRewardModelClient) else JudgeClient
            return judge_from_client_args(judge, args, kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        path: str,
        max_length: int = 16384,
        max_response_length: int = 4096,
        response_cut_side: str = "right",
        server_type: str = "transformers",
        server_address: Union[str, Sequence[str], None] = None,
        *,
        recipe: Optional[str] = None,
        system_prompt: Optional[str] = None,
        reward_token_id: Optional[int] = None,
        tokenizer: Any = None,
        trust_remote_code: bool = False,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        batch_size: Optional[int] = None,
        max_tokens_per_batch: int = 16384,
        batch_invariant: Optional[bool] = False,
        max_tokens_per_request: Optional[int] = 65536,
        max_in_flight: int = 8,
        api_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_attempts: int = 5,
        deadline: Optional[float] = 600.0,
        retry_budget: Optional[int] = None,
        on_error: str = "raise",
        engine_version: Optional[str] = None,
        served_model: Optional[str] = None,
        steps: Optional[str] = None,
    ) -> None:
        self._init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        engine_of(server_type)  # an unknown one names the valid ones
        if on_error not in ON_ERROR:
            raise ConfigurationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.addresses = parse_addresses(server_address)
        if server_type != "transformers" and not self.addresses:
            raise ConfigurationError(f"server_type={server_type!r} needs a server_address")
        #: The model layer: config, tokenizer, limits, recipe policy (shared, never changed).
        self.encoder = Encoder.load(
            str(path), tokenizer=tokenizer, trust_remote_code=trust_remote_code, reward_token_id=reward_token_id,
            max_length=max_length, max_response_length=max_response_length, response_cut_side=response_cut_side,
            recipe=recipe, system_prompt=system_prompt, steps=steps,
        )
        self.server_type = server_type
        self.server_address = server_address
        self.batch_size = batch_size
        self.max_tokens_per_request = max_tokens_per_request
        self.on_error = on_error
        self.engine_version = engine_version
        self.retry_policy = RetryPolicy(attempts=max_attempts, deadline=deadline, budget=retry_budget)
        self._local_options = dict(
            device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            batch_size=batch_size or 32, max_tokens=max_tokens_per_batch, batch_invariant=batch_invariant,
            max_padding=None,
        )
        self._pool_options = dict(
            max_in_flight=max_in_flight, api_key=api_key or os.environ.get(API_KEY_ENV) or None,
            connect_timeout=connect_timeout, read_timeout=read_timeout, served_model=served_model,
        )
        self._local: Any = None
        self._local_lock = threading.Lock()
        #: Per event loop: the endpoint pools and the schedulers, by server type.
        self._pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, EndpointPool]]" = (
            weakref.WeakKeyDictionary()
        )
        self._schedulers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, Scheduler]]" = (
            weakref.WeakKeyDictionary()
        )
        self._server_max_len: Optional[int] = None
        self._lowered: Any = None
        self._recipe_used: Optional[str] = None  # the recipe of the last call (for truncation_limits)

    # -- the model layer's facts, as xtuner's client has them --------------------------------

    path = property(lambda self: self.encoder.path)
    config = property(lambda self: self.encoder.config)
    tokenizer = property(lambda self: self.encoder.tokenizer)
    recipe = property(lambda self: self.encoder.recipe)
    max_response_length = property(lambda self: self.encoder.max_response_length)
    response_cut_side = property(lambda self: self.encoder.response_cut_side)
    system_prompt = property(lambda self: self.encoder.system_prompt)
    reward_token_id = property(lambda self: self.encoder.reward_token_id)
    model_max_len = property(lambda self: self.encoder.model_max_len, doc="The longest input the model itself takes.")
    architecture = property(lambda self: self.encoder.architecture)
    labels = property(lambda self: self.encoder.labels, doc="The head's label names (``id2label``), one per value.")

    @property
    def max_length(self) -> int:
        """The most token ids one encoded sample may have (as asked; see :meth:`effective_max_length`)."""
        return self.encoder.max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self.encoder = replace(self.encoder, max_length=value, _recipes={})

    def __repr__(self) -> str:
        where = "in-process" if self.server_type == "transformers" else ", ".join(self.addresses)
        return (f"{type(self).__name__}({self.path!r}, server_type={self.server_type!r}, at={where!r}, "
                f"recipe={self.recipe or 'auto'!r}, max_length={self.max_length})")

    def __getstate__(self) -> Dict[str, Any]:
        """Pickled as its constructor arguments (Ray, cloudpickle): the copy loads its own
        tokenizer (and model, in-process) and opens its own connections where it is unpickled."""
        return dict(self._init_args)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        type(self).__init__(self, **state)

    # -- encoding (sync: CPU work) ---------------------------------------------

    def effective_max_length(self) -> int:
        """The longest encoding: the smallest of ``max_length``, the model's own context and, once
        known, the servers' limit. Every backend gets the same ids for the same sample."""
        name, limit = self.encoder.limit(self._server_max_len)
        if name != "max_length" and (name, limit) != self._lowered:
            self._lowered = (name, limit)
            logger.info("max_length %d lowered to %s: %d tokens", self.max_length, name, limit)
        return limit

    def _recipe(self, samples: Sequence[Any]) -> Any:
        return self.encoder.recipe_for(samples, self.effective_max_length())

    def _before_encode(self) -> None:
        """Overridden by the sync client to learn the servers' limit first."""

    def encode_samples(self, data: Data) -> List[Encoded]:
        """Text and exact ids of every sample (always a list)."""
        self._before_encode()
        samples, _ = as_list(data)
        return self._recipe(samples).encode(samples)

    def encode(self, data: Data) -> Union[str, List[str]]:
        """The text form (xtuner's ``encode``): a string for one sample, a list for a list."""
        _, single = as_list(data)
        texts = [e.text for e in self.encode_samples(data)]
        return texts[0] if single else texts

    def encode_ids(self, data: Data) -> Union[List[int], List[List[int]]]:
        """The exact token ids: one list for one sample, a list of lists for a list."""
        _, single = as_list(data)
        ids = [e.ids for e in self.encode_samples(data)]
        return ids[0] if single else ids

    def truncation_limits(self) -> str:
        """What the last call cut samples to, in words: the length and, for POLAR, the response budget."""
        return self.encoder.truncation_limits(self._recipe_used, self._server_max_len)

    # -- trainer hooks -------------------------------------------------------------

    def as_reward_func(self, **options: Any) -> Any:
        """A TRL ``GRPOTrainer`` reward function scoring with this client (async for the async client).

        Options: ``reference_column="reference"``, ``name``, ``strip_think``; see
        :func:`rmclient.integrations.trl.make_reward_func`.
        """
        from .integrations.trl import make_reward_func  # the hooks sit above the client: imported on use

        return make_reward_func(self, **options)

    # -- backends -----------------------------------------------------------------

    @property
    def local_backend(self) -> Any:
        """The in-process transformers backend (the model loads on its first forward pass)."""
        with self._local_lock:  # two threads' first calls must not load the model twice
            if self._local is None:
                from .local import TransformersBackend

                pad = self.tokenizer.pad_token_id
                fmt = self.encoder.step_format
                columns = self.encoder.step_recipe().token_columns if fmt and fmt.returned_tokens else None
                self._local = TransformersBackend(
                    self.path, self.config, pad_token_id=pad if pad is not None else 0, token_columns=columns,
                    **self._local_options,
                )
        return self._local

    def _per_loop(self, table: Any) -> Dict[str, Any]:
        loop = asyncio.get_running_loop()
        per_loop = table.get(loop)
        if per_loop is None:
            per_loop = table[loop] = {}
        return per_loop

    def _pool(self, server_type: str) -> EndpointPool:
        pools = self._per_loop(self._pools)
        if server_type not in pools:
            if not self.addresses:
                raise ConfigurationError(f"{server_type} requests need a server_address")
            version = self.engine_version if server_type == self.server_type else None
            pools[server_type] = EndpointPool(
                server_type, self.addresses, engine_version=version, architecture=self.architecture,
                **self._pool_options,
            )
        return pools[server_type]

    def _scheduler(self, server_type: str, output: str = "reward") -> Scheduler:
        """This event loop's scheduler for ``server_type`` and ``output`` (``adapters.base.OUTPUTS``):
        every call to that backend for that output goes through it."""
        schedulers = self._per_loop(self._schedulers)
        key = server_type if output == "reward" else f"{server_type}:{output}"
        if key not in schedulers:
            if server_type == "transformers":
                backend = self.local_backend
                sink: Any = LocalSink(functools.partial(backend.score, output=output), executor=backend.thread)
            else:
                sink = RemoteSink(self._pool(server_type), batch_size=self.batch_size,
                                  max_tokens_per_request=self.max_tokens_per_request,
                                  as_text=self.encoder.ids_as_text, output=output)
            schedulers[key] = Scheduler(sink, policy=self.retry_policy, on_error=self.on_error)
        return schedulers[key]

    # -- the one implementation (async) ------------------------------------------------

    def _deadline_at(self) -> float:
        return self.retry_policy.deadline_at()

    async def _connect(self, deadline_at: Optional[float] = None) -> None:
        """Contact the servers now (their versions, model name and ``max_model_len``).

        Done by the first call. Call it before :meth:`encode` so that its truncation
        respects the servers' limit (the sync client's ``encode`` does it itself).
        """
        if self.server_type != "transformers":
            pool = self._pool(self.server_type)
            if not pool.ready():
                await pool.start(deadline_at)  # first contact: versions, model name, longest input
                if pool.max_model_len is None and self.model_max_len:
                    logger.info(
                        "%s reports no length limit: encoding within the model's context of %d tokens (pass "
                        "max_length= if the server was launched with a smaller one)", self.server_type,
                        self.model_max_len,
                    )
            self._server_max_len = pool.max_model_len

    async def _prepare(self, data: Data) -> Tuple[List[Any], bool, Any, Scheduler, float]:
        """Connect, choose the recipe, validate (bad input fails before anything is sent)."""
        samples, single = as_list(data)
        local = self.server_type == "transformers"
        deadline_at = math.inf if local else self._deadline_at()  # the whole call, discovery included
        if not local:
            await self._connect(deadline_at)
        recipe = self._recipe(samples)
        self._recipe_used = recipe.name
        return recipe.validate(samples), single, recipe, self._scheduler(self.server_type), deadline_at

    async def _score_all(self, data: Data, progress: Progress = None) -> Tuple[List[float], List[Any], bool]:
        valid, single, recipe, scheduler, deadline_at = await self._prepare(data)
        rewards, meta = await _tracked(scheduler, valid, progress, recipe=recipe, deadline_at=deadline_at)
        return rewards, meta, single

    async def _score(
        self, data: Data, *, progress: Progress = None, reduce: Reduce = _UNSET,
        weights: Optional[Sequence[float]] = None,
    ) -> Any:
        """Raw reward of one sample (a float) or of a list of samples (a list, in input order).

        ``progress=True`` shows a bar on stderr; a callable gets ``(scored, total)`` as requests
        finish (from a worker thread: keep it quick). Concurrent calls share requests.
        A multi-label head (``num_labels > 1``) needs ``weights=`` (one per label: the weighted sum)
        or ``reduce=`` (``"mean"``, ``"sum"``, ``"min"``, ``"max"``, a callable; ``None``: the vectors,
        as :meth:`score_vector`).
        """
        if self.encoder.step_format is not None:
            raise ConfigurationError(
                f"{self.path} is a process reward model: score it with score_steps(data, aggregate=...)"
            )
        if weights is not None or reduce is not _UNSET or self.encoder.num_labels > 1:
            vectors, single = await self._score_output(data, "vector", progress)
            out = _reduced(vectors, self.encoder.labels, reduce, weights)
            return out[0] if single else out
        rewards, meta, single = await self._score_all(data, progress)
        cut = sum(1 for m in meta if m and m[1])
        if cut:
            logger.warning("%d of %d samples were cut to fit: %s", cut, len(meta), self.truncation_limits())
        return rewards[0] if single else rewards

    async def _score_output(self, data: Data, output: str, progress: Progress = None) -> Tuple[List[Any], bool]:
        """Every sample's raw ``output`` (``"vector"``, ``"tokens"``), through the shared pipeline."""
        valid, single, recipe, _, deadline_at = await self._prepare(data)
        scheduler = await self._output_scheduler(output, deadline_at)
        values, _ = await _tracked(scheduler, valid, progress, recipe=recipe, deadline_at=deadline_at)
        return values, single

    async def _output_scheduler(self, output: str, deadline_at: float) -> Scheduler:
        """The scheduler for ``output``, after checking that every server can return it raw."""
        if self.server_type != "transformers":
            pool = self._pool(self.server_type)
            await pool.start(deadline_at)
            for endpoint in pool.endpoints:
                if endpoint.adapter is not None:
                    endpoint.adapter.check_output(output)
        return self._scheduler(self.server_type, output)

    async def _score_ids_output(self, ids: Sequence[Sequence[int]], output: str, progress: Progress = None) -> List[Any]:
        deadline_at = math.inf if self.server_type == "transformers" else self._deadline_at()
        scheduler = await self._output_scheduler(output, deadline_at)
        return (await _tracked(scheduler, [list(x) for x in ids], progress, deadline_at=deadline_at))[0]

    def _not_a_prm(self, what: str) -> None:
        if self.encoder.step_format is not None:
            raise ConfigurationError(f"{self.path} is a process reward model: {what} would read its class "
                                     "logits as rewards; score it with score_steps()")

    async def _score_vector(self, data: Data, *, progress: Progress = None) -> Any:
        """Every label of a multi-objective head (``num_labels > 1``), raw, per sample: a list of floats
        in the order of :attr:`labels` (a list of such lists for a list of samples)."""
        self._not_a_prm("score_vector()")
        values, single = await self._score_output(data, "vector", progress)
        return values[0] if single else values

    async def _score_tokens(self, data: Data, *, progress: Progress = None) -> Any:
        """Dense rewards: the head's raw value at every token of the output, with each token's
        character span in the output (:class:`~rmclient.spans.TokenRewards`), per sample.

        For heads that score every token (``*ForRewardModel``, seq-cls heads in-process); chat-template
        samples only (``prompt`` + ``output`` or ``messages``), whose output is whole in the encoding."""
        self._not_a_prm("score_tokens()")
        if self.server_type != "transformers":
            await self._connect(self._deadline_at())
        samples, single = as_list(data)
        recipe = self._recipe(samples)
        if recipe.name != "chat_template":
            raise ConfigurationError("score_tokens() takes chat-template samples (prompt + output), not POLAR ones")
        chats = recipe.validate(samples)
        encoded = recipe.encode_valid(chats)
        where = dense_inputs(recipe, chats, encoded)  # bad samples fail before anything is sent
        result = await self._finished(encoded, "tokens", progress, lambda rows: dense_rewards(where, encoded, rows))
        return result[0] if single else result

    async def _score_steps(self, data: Data, *, aggregate: str = "min", progress: Progress = None) -> Any:
        """Process rewards: for each sample (``{prompt, steps}`` or ``{prompt, output, step_separator}``)
        a :class:`~rmclient.steps.StepRewards`: one probability per step (``None`` for steps cut by
        ``max_length``, listed in ``cut``), each step's span in the output, and ``aggregate``
        (``"min"``, ``"last"``, ``"mean"``, ``"prod"``) over the scored steps for trainers."""
        check_aggregate(aggregate)
        if self.server_type != "transformers":
            await self._connect(self._deadline_at())
        samples, single = as_list(data)
        recipe = self.encoder.step_recipe(self.effective_max_length())
        encoded = recipe.encode(samples)
        result = await self._finished(encoded, "tokens", progress, lambda rows: step_results(
            encoded, rows, recipe.format.positive, aggregate, f"{self.server_type} output"))
        cut = [i for i, x in enumerate(result) if x.cut]
        if cut:
            logger.warning("%d of %d samples lost steps to max_length=%d (their rewards are None; see .cut)",
                           len(cut), len(result), recipe.max_length)
        return result[0] if single else result

    async def _finished(self, encoded: Sequence[Any], output: str, progress: Progress,
                        finish: Callable[[List[Any]], List[Any]]) -> List[Any]:
        """Score the encoded samples' ``output`` and ``finish`` the raw rows into results; on a
        :class:`~rmclient.errors.ScoringError` its ``rewards`` become those results too (``None`` at
        the failed samples), so nothing already scored is lost."""
        try:
            rows = await self._score_ids_output([e.ids for e in encoded], output, progress)
        except ScoringError as exc:
            exc.rewards = finish(list(exc.rewards))
            raise
        return finish(rows)

    async def _compare(
        self, prompt: Any, a: Any, b: Any, reference: Any = None, *, reduce: Reduce = _UNSET,
        weights: Optional[Sequence[float]] = None,
    ) -> Comparison:
        """``P(a > b) = sigmoid(r_a - r_b)`` (Bradley-Terry) and both rewards; POLAR: against ``reference``."""
        pair = [_sample(prompt, x, reference) for x in (a, b)]
        ra, rb = await self._score(pair, reduce=reduce, weights=weights)
        return compare(ra, rb)

    async def _rank(
        self, prompt: Any, outputs: Sequence[Any], reference: Any = None, *, reduce: Reduce = _UNSET,
        weights: Optional[Sequence[float]] = None,
    ) -> Ranking:
        """The outputs ranked by reward (best first), with ``P(best)`` and ``P(i > j)`` from the rewards."""
        rewards = await self._score([_sample(prompt, x, reference) for x in outputs], reduce=reduce, weights=weights)
        return rank(rewards)

    async def _score_details(self, data: Data, *, progress: Progress = None) -> List[Scored]:
        """Every sample's :class:`Scored`: its reward, how many tokens it was scored from, whether it was cut."""
        rewards, meta, _ = await self._score_all(data, progress)
        return [Scored(r, *m) for r, m in zip(rewards, meta)]  # each says whether it was cut: no warning

    async def _stream(self, data: Data) -> AsyncIterator[Tuple[int, float]]:
        """``(index, reward)`` as the requests complete (not in input order); failures raise at the end
        (:class:`~rmclient.errors.ScoringError`) unless ``on_error="nan"``, which yields NaN for them."""
        valid, _, recipe, scheduler, deadline_at = await self._prepare(data)
        async for item in scheduler.stream(valid, recipe=recipe, deadline_at=deadline_at):
            yield item

    async def _score_ids(self, ids: Sequence[Sequence[int]]) -> List[float]:
        """Raw rewards for already encoded token ids, in input order."""
        if self.server_type == "transformers":
            scheduler = self._scheduler("transformers")
            return (await scheduler.score([list(x) for x in ids], deadline_at=math.inf))[0]
        return await self._request(self.server_type, [list(x) for x in ids])

    async def _request(self, server_type: str, encoded: Any) -> List[float]:
        """Score pre-encoded inputs (text or ids, one or a list) on ``server_type`` servers."""
        if isinstance(encoded, (list, tuple)) and not encoded:
            return []
        inputs = [encoded] if isinstance(encoded, str) or _is_ids(encoded) else list(encoded)
        deadline_at = self._deadline_at()
        await self._pool(server_type).start(deadline_at)
        return (await self._scheduler(server_type).score(inputs, deadline_at=deadline_at))[0]

    async def _sglang_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on sglang servers."""
        return await self._request("sglang", data)

    async def _vllm_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on vLLM servers."""
        return await self._request("vllm", data)

    async def _lmdeploy_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on lmdeploy servers."""
        return await self._request("lmdeploy", data)

    async def _aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for scheduler in self._schedulers.pop(loop, {}).values():
            await scheduler.aclose()
        for pool in self._pools.pop(loop, {}).values():
            await pool.aclose()


async def _tracked(scheduler: Scheduler, items: List[Any], progress: Progress, **options: Any) -> Tuple[List[Any], Any]:
    """``scheduler.score(items, **options)`` with ``progress`` (a bar or a callback) shown as requests finish."""
    if progress is None:
        return await scheduler.score(items, **options)
    tracker = Tracker(progress, len(items))
    try:
        return await scheduler.score(items, on_scored=tracker.update, **options)
    finally:
        tracker.close()


def _sample(prompt: Any, output: Any, reference: Any) -> Dict[str, Any]:
    sample = {"prompt": prompt, "output": output}
    if reference is not None:
        sample["reference"] = reference
    return sample


def _reduced(rows: List[Any], labels: List[str], reduce: Reduce, weights: Optional[Sequence[float]]) -> List[Any]:
    """One float per sample from multi-label vectors (or the vectors, ``reduce=None``); a failed sample's
    NaN (``on_error="nan"``) stays NaN."""
    if any(isinstance(r, float) for r in rows):  # NaN for failed samples: reduce the others
        ok = [i for i, r in enumerate(rows) if not isinstance(r, float)]
        done = _reduced([rows[i] for i in ok], labels, reduce, weights) if ok else []
        out_nan: List[Any] = [math.nan] * len(rows)
        for i, v in zip(ok, done):
            out_nan[i] = v
        return out_nan
    if weights is not None:
        if reduce is not _UNSET:
            raise ConfigurationError("give weights= or reduce=, not both")
        if len(weights) != len(labels):
            raise ConfigurationError(f"{len(weights)} weights for {len(labels)} labels ({', '.join(labels)})")
        out: List[Any] = [sum(w * v for w, v in zip(weights, row)) for row in rows]
    elif reduce is _UNSET:
        if len(labels) > 1:
            raise ConfigurationError(
                f"the head has {len(labels)} labels ({', '.join(labels)}): pass weights= or reduce= for one float "
                "per sample, or use score_vector()"
            )
        out = [row[0] for row in rows]
    elif reduce is None:
        out = list(rows)
    else:
        fn = REDUCE.get(reduce) if isinstance(reduce, str) else reduce
        if fn is None or not callable(fn):
            raise ConfigurationError(f"reduce must be one of {sorted(REDUCE)}, a callable or None, got {reduce!r}")
        out = [fn(row) for row in rows]
    return out


def _is_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and (not x or isinstance(x[0], int))


_DOC_ARGS = """
    Args:
        path: model folder or hub id (its tokenizer and config are read).
        max_length: the most token ids one encoded sample may have.
        max_response_length: POLAR's budget for the reference and the output.
        response_cut_side: ``"right"`` keeps a long response's head (training), ``"left"`` its tail.
        server_type: ``"transformers"`` (in-process), ``"sglang"``, ``"vllm"``, ``"lmdeploy"``,
            ``"rmclient"`` (our own ``rmclient serve``, exact ids) or ``"openrlhf"`` (OpenRLHF's
            ``serve_rm``, whole texts via ``/get_reward``; ``rmclient serve`` answers it too), or
            ``"openai"``: an LLM judge on any chat-completions server (a :class:`~rmclient.judge.JudgeClient`;
            ``path`` is the served model name).
        server_address: ``host:port`` or URL of the server; a list or a comma-separated string for several.
        recipe: ``"polar"`` or ``"chat_template"``; chosen from the model and data when ``None``.
        system_prompt: a system turn for the chat-template recipe (Qwen2.5-Math-RM needs one).
        reward_token_id: override the reward token (default: the config's ``reward_token_id``).
        tokenizer: a tokenizer object to use instead of loading the one at ``path``.
        trust_remote_code: allow the checkpoint's own code (POLAR, InternLM2-Reward).
        device, dtype: in-process only (default: CUDA/bf16 when present, else CPU/fp32).
        batch_size: samples per forward pass in-process (default 32), or the most per request to a
            server (default 256; smaller when a call has too few samples for two per server).
        max_tokens_per_batch: in-process padded-token budget per forward pass.
        batch_invariant: in-process, one sequence per forward pass: a reward then does not depend
            on which samples are scored with it (free on CPU, slow on a GPU; ``None``: CPU only).
        max_tokens_per_request: token budget of one request to a server.
        max_in_flight: requests in flight per server (lowered where the engine needs it).
        api_key: bearer token for the servers (default: ``$RMCLIENT_API_KEY``).
        connect_timeout, read_timeout: seconds to open a connection / to wait for an answer.
        max_attempts: attempts per request, retried with backoff on other servers.
        deadline: seconds for one whole call.
        retry_budget: retries in all for one call (default: ``max_attempts - 1`` per request).
        on_error: ``"raise"`` (default: :class:`~rmclient.errors.ScoringError` lists the failed
            samples and keeps the rewards obtained) or ``"nan"`` (NaN for failed samples).
        engine_version: skip asking the servers their version.
        served_model: the served model name (default: read from ``/v1/models``).
        steps: a process reward model's step format (``"qwen_prm"``, ``"math_shepherd"``; default:
            from the architecture, ``Qwen2ForProcessRewardModel`` is ``"qwen_prm"``).
"""

class AsyncRewardModelClient(_ClientBase):
    """Score samples with a reward model from async code; the twin of :class:`RewardModelClient`.

    ``await client(data)`` returns a float for one sample and a list, in input
    order, for a list. Safe in an event loop that is already running; concurrent
    calls share requests (score each rollout as it finishes, lose nothing in throughput).
    """

    __doc__ = (__doc__ or "") + _DOC_ARGS

    __call__ = score = _ClientBase._score
    score_details = _ClientBase._score_details
    score_vector = _ClientBase._score_vector
    score_tokens = _ClientBase._score_tokens
    score_steps = _ClientBase._score_steps
    compare = _ClientBase._compare
    rank = _ClientBase._rank
    score_ids = _ClientBase._score_ids
    stream = _ClientBase._stream
    sglang_request_reward = _ClientBase._sglang_request_reward
    vllm_request_reward = _ClientBase._vllm_request_reward
    lmdeploy_request_reward = _ClientBase._lmdeploy_request_reward
    connect = _ClientBase._connect

    async def ascore(self, samples: Sequence[Sample]) -> List[float]:
        """The :class:`~rmclient.scorer.Scorer` entry point: rewards of a list of samples."""
        return await self._score(list(samples))  # type: ignore[return-value]

    async def ascore_steps(self, samples: Sequence[Sample], aggregate: str = "min") -> List[Any]:
        """:meth:`score_steps` of a list of samples (the hooks' entry point, as :meth:`ascore`)."""
        return await self._score_steps(list(samples), aggregate=aggregate)  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Close this event loop's server connections."""
        await self._aclose()

    async def __aenter__(self) -> "AsyncRewardModelClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _blocking(method: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """The sync twin of one of ``_ClientBase``'s coroutine methods: run on the client's loop thread."""
    return blocking(method, "RewardModelClient")


class RewardModelClient(_ClientBase):
    """Score samples with a reward model, in-process or on inference servers.

    Drop-in compatible with xtuner's ``RewardModelClient``: the first six
    arguments keep their names and meaning (``response_cut_side`` defaults to
    ``"right"``, the training rule). Constructing the client loads only the
    tokenizer; the model, or the connections, open on first use. Any failure
    raises; no reward is ever replaced by ``None`` or a default unless
    ``on_error="nan"`` asks for NaN. Calls from several threads (or through
    :meth:`ascore` from an event loop) share requests.
    """

    __doc__ = (__doc__ or "") + _DOC_ARGS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread = LoopThread("rmclient-loop", on_cancelled=lambda: ClientClosedError({}, []))
        weakref.finalize(self, self._thread.stop)

    def _run(self, coro: Awaitable[T]) -> T:
        return self._thread.run(coro)

    def _before_encode(self) -> None:
        if self.server_type != "transformers" and self._server_max_len is None:
            self.connect()

    __call__ = score = _blocking(_ClientBase._score)
    score_details = _blocking(_ClientBase._score_details)
    score_vector = _blocking(_ClientBase._score_vector)
    score_tokens = _blocking(_ClientBase._score_tokens)
    score_steps = _blocking(_ClientBase._score_steps)
    compare = _blocking(_ClientBase._compare)
    rank = _blocking(_ClientBase._rank)
    score_ids = _blocking(_ClientBase._score_ids)
    sglang_request_reward = _blocking(_ClientBase._sglang_request_reward)
    vllm_request_reward = _blocking(_ClientBase._vllm_request_reward)
    lmdeploy_request_reward = _blocking(_ClientBase._lmdeploy_request_reward)
    connect = _blocking(_ClientBase._connect)

    def stream(self, data: Data) -> Iterator[Tuple[int, float]]:
        """``(index, reward)`` as the requests complete (see the async client's ``stream``)."""
        agen = self._stream(data)
        done = object()

        async def next_item() -> Any:  # a coroutine for the loop thread; the end as a value, not an exception
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return done

        try:
            while (item := self._run(next_item())) is not done:
                yield item
        finally:
            self._run(agen.aclose())

    async def ascore(self, samples: Sequence[Sample]) -> List[float]:
        """The :class:`~rmclient.scorer.Scorer` entry point, from any event loop: the work runs on the
        client's own loop, so concurrent awaits (verl's per-sample reward loop) share requests."""
        future = self._thread.submit(self._score(list(samples)))
        return await asyncio.wrap_future(future)  # type: ignore[return-value]

    async def ascore_steps(self, samples: Sequence[Sample], aggregate: str = "min") -> List[Any]:
        """:meth:`score_steps` from any event loop, on the client's own loop (as :meth:`ascore`)."""
        future = self._thread.submit(self._score_steps(list(samples), aggregate=aggregate))
        return await asyncio.wrap_future(future)  # type: ignore[return-value]

    def close(self) -> None:
        """Close server connections and stop the background loop."""
        if self._thread.started:
            self._thread.run(self._aclose())
            self._thread.stop()

    def __enter__(self) -> "RewardModelClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
