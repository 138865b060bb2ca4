"""``RewardModelClient`` and ``AsyncRewardModelClient``: encode samples exactly, score them on any backend.

Both classes take the same arguments and have the same methods; the async one
returns coroutines. One core (``rmclient.dispatch`` over ``rmclient.pool``)
does the chunking, routing and retries for both: the sync client runs it on an
event loop of its own, in a background thread, so it also works where a loop
is already running (Jupyter, Ray actors).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Union

from rmclient.adapters import ADAPTERS

from .data import as_list
from .dispatch import ON_ERROR, Chunk, RetryPolicy, score_chunks, split_by_tokens
from .errors import ClientClosedError, ConfigurationError
from .modelinfo import context_length, load_config
from .pool import EndpointPool, parse_addresses
from .recipes import ChatTemplateRecipe, Encoded, PolarRecipe, adds_bos, is_polar_model, select_recipe

logger = logging.getLogger(__name__)

from .engines import SERVER_TYPES
#: Read for the servers' API key when ``api_key`` is not given (as the CLI and the trainer hooks do).
API_KEY_ENV = "RMCLIENT_API_KEY"
Sample = Dict[str, Any]
Data = Union[Sample, Sequence[Sample]]
Rewards = Union[float, List[float]]
#: Samples encoded per step while earlier requests are in flight.
ENCODE_BLOCK = 256
#: Samples in each of the first blocks (one per server): every server gets its first request early.
FIRST_BLOCK = 64
#: Requests per server a call is cut into when it has fewer samples than ``batch_size`` allows.
REQUESTS_PER_ENDPOINT = 2


#: ``progress=``: ``True`` for a bar on stderr (tqdm), or ``callback(scored, total)`` after each request.
Progress = Union[bool, Callable[[int, int], None], None]


@dataclass(frozen=True)
class Scored:
    """One sample's reward with what it was scored from (``score_details``)."""

    reward: float
    #: The token ids scored (BOS and reward token included).
    num_tokens: int
    #: Whether the sample was cut to fit the longest encoding.
    truncated: bool


class _Tracker:
    """A call's progress: a tqdm bar, a callback, or nothing. ``update`` may come from a worker thread."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.total, self.done = total, 0
        self.callback = progress if callable(progress) else None
        self.bar = None
        self._lock = threading.Lock()
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="scoring", unit="samples", dynamic_ncols=True)

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            if self.callback is not None:
                self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _ClientBase:
    """What both clients share: configuration, tokenizer, recipes, and the async scoring core."""

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
    ) -> None:
        self._init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if server_type not in SERVER_TYPES:
            raise ConfigurationError(f"unknown server_type {server_type!r}; choose one of {SERVER_TYPES}")
        if on_error not in ON_ERROR:
            raise ConfigurationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.addresses = parse_addresses(server_address)
        if server_type != "transformers" and not self.addresses:
            raise ConfigurationError(f"server_type={server_type!r} needs a server_address")
        from transformers import AutoTokenizer

        self.path = str(path)
        self.max_length = max_length
        self.max_response_length = max_response_length
        self._recipe_used: Optional[str] = None  # the recipe of the last call (for truncation_limits)
        self.response_cut_side = response_cut_side
        self.server_type = server_type
        self.server_address = server_address
        self.recipe = recipe
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.max_tokens_per_request = max_tokens_per_request
        self.on_error = on_error
        self.config = load_config(self.path)
        #: The longest input the model itself takes (its config's context length).
        self.model_max_len = context_length(self.config)
        archs = self.config.get("architectures") or []
        self.architecture: Optional[str] = archs[0] if archs else None
        self.reward_token_id = reward_token_id if reward_token_id is not None else self.config.get("reward_token_id")
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
        self.retry_policy = RetryPolicy(attempts=max_attempts, deadline=deadline, budget=retry_budget)
        self._local_options = dict(
            device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            batch_size=batch_size or 32, max_tokens=max_tokens_per_batch, batch_invariant=batch_invariant,
        )
        self._pool_options = dict(
            max_in_flight=max_in_flight, api_key=api_key or os.environ.get(API_KEY_ENV) or None,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout, served_model=served_model,
        )
        self.engine_version = engine_version
        self._recipes: Dict[Any, Any] = {}
        self._local: Any = None
        self._local_lock = threading.Lock()
        self._pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, EndpointPool]]" = (
            weakref.WeakKeyDictionary()
        )
        self._server_max_len: Optional[int] = None
        self._lowered: Any = None

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
        limits = {"max_length": self.max_length, "the model's context": self.model_max_len,
                  "the servers' limit": self._server_max_len}
        name, limit = min(((k, v) for k, v in limits.items() if v), key=lambda kv: kv[1])
        if name != "max_length" and (name, limit) != self._lowered:
            self._lowered = (name, limit)
            logger.info("max_length %d lowered to %s: %d tokens", self.max_length, name, limit)
        return limit

    def _recipe(self, samples: Sequence[Any]) -> Any:
        name = select_recipe(self.recipe, self.path, self.config, samples)
        max_length = self.effective_max_length()
        key = (name, max_length)
        if key not in self._recipes:
            if self.recipe is None and name == "polar" and not is_polar_model(self.path, self.config):
                logger.warning(
                    "%s is not named as a POLAR model, but the data has 'reference': using the POLAR recipe "
                    "(pass recipe='chat_template' to score with the chat template and ignore 'reference')",
                    self.path,
                )
            if name == "polar":
                self._recipes[key] = PolarRecipe(
                    self.tokenizer,
                    max_length=max_length,
                    max_response_length=self.max_response_length,
                    response_cut_side=self.response_cut_side,
                    reward_token_id=self.reward_token_id,
                )
            else:
                self._recipes[key] = ChatTemplateRecipe(
                    self.tokenizer,
                    max_length=max_length,
                    reward_token_id=self.reward_token_id,
                    system_prompt=self.system_prompt,
                )
        return self._recipes[key]

    def _before_encode(self) -> None:
        """Overridden by the sync client to learn the servers' limit first."""

    def encode_samples(self, data: Data) -> List[Encoded]:
        """Text and exact ids of every sample (always a list)."""
        self._before_encode()
        samples, _ = as_list(data)
        return self._recipe(samples).encode(samples)

    def encode(self, data: Data) -> Union[str, List[str]]:
        """The text form (xtuner's ``encode``): a string for one sample, a list for a list."""
        self._before_encode()
        samples, single = as_list(data)
        texts = [e.text for e in self._recipe(samples).encode(samples)]
        return texts[0] if single else texts

    def encode_ids(self, data: Data) -> Union[List[int], List[List[int]]]:
        """The exact token ids: one list for one sample, a list of lists for a list."""
        self._before_encode()
        samples, single = as_list(data)
        ids = [e.ids for e in self._recipe(samples).encode(samples)]
        return ids[0] if single else ids

    # -- trainer hooks -------------------------------------------------------------

    def as_reward_func(self, **options: Any) -> Any:
        """A TRL ``GRPOTrainer`` reward function scoring with this client (async for the async client).

        Options: ``reference_column="reference"``, ``name``, ``strip_think``; see
        :func:`rmclient.integrations.trl.make_reward_func`.
        """
        from .integrations.trl import make_reward_func

        return make_reward_func(self, **options)

    # -- backends -----------------------------------------------------------------

    @property
    def local_backend(self) -> Any:
        """The in-process transformers backend (the model loads on its first forward pass)."""
        with self._local_lock:  # two threads' first calls must not load the model twice
            if self._local is None:
                from .local import TransformersBackend

                pad = self.tokenizer.pad_token_id
                self._local = TransformersBackend(
                    self.path, self.config, pad_token_id=pad if pad is not None else 0, **self._local_options
                )
        return self._local

    def _pool(self, server_type: str) -> EndpointPool:
        pools = self._pools.setdefault(asyncio.get_running_loop(), {})
        if server_type not in pools:
            if not self.addresses:
                raise ConfigurationError(f"{server_type} requests need a server_address")
            version = self.engine_version if server_type == self.server_type else None
            pools[server_type] = EndpointPool(
                server_type, self.addresses, engine_version=version, architecture=self.architecture,
                **self._pool_options,
            )
        return pools[server_type]

    # -- the async core -------------------------------------------------------------

    def _deadline_at(self) -> float:
        deadline = self.retry_policy.deadline
        return time.monotonic() + (deadline if deadline is not None else math.inf)

    async def _aconnect(self, deadline_at: Optional[float] = None) -> None:
        if self.server_type != "transformers":
            pool = self._pool(self.server_type)
            await pool.start(deadline_at)  # first contact: versions, model name, longest input
            self._server_max_len = pool.max_model_len
            if self._server_max_len is None and self.model_max_len:
                logger.info(
                    "%s reports no length limit: encoding within the model's context of %d tokens (pass "
                    "max_length= if the server was launched with a smaller one)", self.server_type, self.model_max_len,
                )

    async def _ascore(self, data: Data, progress: Progress = None, details: bool = False) -> Any:
        """Rewards in input order (one float for one sample); ``details``: :class:`Scored` per sample."""
        samples, single = as_list(data)
        meta: List[Any] = [None] * len(samples)  # (num_tokens, truncated) of each sample, once encoded
        tracker = _Tracker(progress, len(samples))
        try:
            if self.server_type == "transformers":
                recipe = self._recipe(samples)
                encoded = recipe.encode(samples)
                meta = [(len(e.ids), e.truncated) for e in encoded]
                rewards = await asyncio.to_thread(self.local_backend.score, [e.ids for e in encoded], tracker.update)
            else:
                deadline_at = self._deadline_at()  # the whole call, discovery included
                await self._aconnect(deadline_at)
                pool = self._pool(self.server_type)
                recipe = self._recipe(samples)
                valid = recipe.validate(samples)  # bad input fails before anything is sent
                size = self._request_size(len(valid), pool)
                rewards = await score_chunks(
                    pool, self._encoded_chunks(recipe, valid, size, len(pool.endpoints), pool, meta), len(samples),
                    policy=self.retry_policy, on_error=self.on_error, deadline_at=deadline_at, on_scored=tracker.update,
                )
        finally:
            tracker.close()
        self._recipe_used = recipe.name
        if details:  # each Scored says whether it was cut: no warning
            return [Scored(r, *m) for r, m in zip(rewards, meta)]
        cut = sum(1 for m in meta if m[1])
        if cut:
            logger.warning("%d of %d samples were cut to fit: %s", cut, len(meta), self.truncation_limits())
        return rewards[0] if single else rewards

    def truncation_limits(self) -> str:
        """What the last call cut samples to, in words: the length and, for POLAR, the response budget."""
        text = (f"at most {self.effective_max_length()} tokens (the smallest of max_length, the model's context "
                f"and the servers' limit)")
        if self._recipe_used == "polar":
            text += f", and at most {self.max_response_length} tokens of the reference and of the output (POLAR)"
        return text

    def _request_size(self, n: int, pool: EndpointPool) -> int:
        """Samples per request: up to ``batch_size`` (default 256), fewer when that keeps every server busy.

        Engines batch concurrent requests themselves and pay a cost per request, so the aim is
        ``REQUESTS_PER_ENDPOINT`` requests per server (one computing, one queued), not one per slot.
        """
        slots = sum(min(e.limit, REQUESTS_PER_ENDPOINT) for e in pool.endpoints)
        return min(self.batch_size or 256, max(8, -(-n // slots)))

    async def _encoded_chunks(
        self, recipe: Any, valid: Sequence[Any], size: int, servers: int, pool: EndpointPool, meta: List[Any]
    ) -> AsyncIterator[Chunk]:
        """Request-sized chunks, encoding the next block while earlier chunks are in flight.

        The first ``servers`` blocks are small (``FIRST_BLOCK``) so that every server has work
        soon; the rest are encoded in larger blocks behind them. ``meta[i]`` gets sample ``i``'s
        ``(num_tokens, truncated)``.
        """
        def chunks_of(lo: int, block: Sequence[Any]) -> List[Chunk]:
            encoded = recipe.encode_valid(block)
            meta[lo : lo + len(encoded)] = [(len(e.ids), e.truncated) for e in encoded]
            return list(self._request_chunks(list(range(lo, lo + len(encoded))), [e.ids for e in encoded], size, pool))

        lo = blocks = 0
        while lo < len(valid):
            block = valid[lo : lo + (min(FIRST_BLOCK, size) if blocks < servers else max(ENCODE_BLOCK, size))]
            blocks += 1
            chunks = chunks_of(lo, block) if len(valid) <= size else await asyncio.to_thread(chunks_of, lo, block)
            for chunk in chunks:
                yield chunk
            lo += len(block)

    def _request_chunks(
        self, indices: List[int], inputs: List[Any], size: int, pool: EndpointPool
    ) -> Iterator[Chunk]:
        """``size`` samples a request at most, split further by ``max_tokens_per_request``, in the form
        the pool's servers take (ids, or text that re-encodes to exactly the ids); the samples that
        cannot be sent (too long or too short for the server, not exact as text) travel as failures."""
        failures: Dict[int, str] = {}
        keep_i: List[int] = []
        keep_x: List[Any] = []
        limit, shortest = pool.max_model_len, ADAPTERS[pool.server_type].min_input_len
        for i, x in zip(indices, inputs):
            if not isinstance(x, str) and limit and len(x) > limit:
                failures[i] = f"{len(x)} token ids exceed the server's limit of {limit}; encode after connecting"
            elif not isinstance(x, str) and len(x) < shortest:
                failures[i] = f"{len(x)} token id(s): {pool.server_type} needs at least {shortest}"
            else:
                keep_i.append(i)
                keep_x.append(x)
        if pool.inputs != "ids":
            keep_i, keep_x = self._as_text(keep_i, keep_x, pool.inputs == "full_text", failures)
        if failures:
            yield Chunk([], [], failures)
        for k in range(0, len(keep_i), size):
            yield from split_by_tokens(Chunk(keep_i[k : k + size], keep_x[k : k + size]), self.max_tokens_per_request)

    def _as_text(
        self, indices: List[int], inputs: List[Any], full: bool, failures: Dict[int, str]
    ) -> "tuple[List[int], List[str]]":
        """Token ids as the text a text-only server turns back into exactly those ids.

        ``full``: the text carries every special token and the server adds none (OpenRLHF);
        else the server adds BOS itself, like the tokenizer (vLLM's text-only routes). A sample
        whose text would not give back its ids is a failure, never sent approximately.
        """
        tok = self.tokenizer
        bos = tok.bos_token_id if not full and adds_bos(tok) else None
        texts: List[Any] = []
        for x in inputs:
            if isinstance(x, str):
                texts.append(x)
                continue
            ids = list(x)
            if bos is not None and ids[:1] == [bos]:
                ids = ids[1:]
            texts.append(tok.decode(ids, skip_special_tokens=False))
        todo = [k for k, x in enumerate(inputs) if not isinstance(x, str)]
        back = tok([texts[k] for k in todo], add_special_tokens=not full)["input_ids"] if todo else []
        for k, ids in zip(todo, back):
            if list(ids) != list(inputs[k]):
                failures[indices[k]] = (
                    f"{self.server_type} at this version takes text only, and this sample's token ids "
                    "do not come back from their text (a cut inside the text, or ids not from this tokenizer)"
                )
        ok = [k for k in range(len(inputs)) if indices[k] not in failures]
        return [indices[k] for k in ok], [texts[k] for k in ok]

    async def _ascore_ids(self, ids: Sequence[Sequence[int]]) -> List[float]:
        if self.server_type == "transformers":
            return await asyncio.to_thread(self.local_backend.score, ids)
        return await self._arequest(self.server_type, [list(x) for x in ids])

    async def _arequest(self, server_type: str, encoded: Any) -> List[float]:
        """Score pre-encoded inputs (text or ids, one or a list) on ``server_type`` servers."""
        if isinstance(encoded, (list, tuple)) and not encoded:
            return []
        inputs = [encoded] if isinstance(encoded, str) or _is_ids(encoded) else list(encoded)
        pool = self._pool(server_type)
        deadline_at = self._deadline_at()
        await pool.start(deadline_at)

        async def chunks() -> AsyncIterator[Chunk]:
            for chunk in self._request_chunks(
                list(range(len(inputs))), inputs, self._request_size(len(inputs), pool), pool
            ):
                yield chunk

        return await score_chunks(
            pool, chunks(), len(inputs), policy=self.retry_policy, on_error=self.on_error, deadline_at=deadline_at
        )

    async def _aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for pool in self._pools.pop(loop, {}).values():
            await pool.aclose()


def _is_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and (not x or isinstance(x[0], int))


_DOC_ARGS = """
    Args:
        path: model folder or hub id (its tokenizer and config are read).
        max_length: the most token ids one encoded sample may have.
        max_response_length: POLAR's budget for the reference and the output.
        response_cut_side: ``"right"`` keeps a long response's head (training), ``"left"`` its tail.
        server_type: ``"transformers"`` (in-process), ``"sglang"``, ``"vllm"``, ``"lmdeploy"`` or
            ``"openrlhf"`` (an OpenRLHF ``serve_rm`` or ``rmclient serve``, via ``/get_reward``).
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
"""


class AsyncRewardModelClient(_ClientBase):
    """Score samples with a reward model from async code; the twin of :class:`RewardModelClient`.

    ``await client(data)`` returns a float for one sample and a list, in input
    order, for a list. Safe in an event loop that is already running.
    """

    __doc__ = (__doc__ or "") + _DOC_ARGS

    async def __call__(self, data: Data, *, progress: Progress = None) -> Rewards:
        """Raw reward of one sample (a float) or of a list of samples (a list, in input order).

        ``progress=True`` shows a bar on stderr; a callable gets ``(scored, total)`` as requests finish (from a worker thread: keep it quick).
        """
        return await self._ascore(data, progress)

    score = __call__

    async def score_details(self, data: Data, *, progress: Progress = None) -> List[Scored]:
        """Every sample's :class:`Scored`: its reward, how many tokens it was scored from, whether it was cut."""
        return await self._ascore(data, progress, details=True)

    async def score_ids(self, ids: Sequence[Sequence[int]]) -> List[float]:
        """Raw rewards for already encoded token ids, in input order."""
        return await self._ascore_ids(ids)

    async def sglang_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on sglang servers."""
        return await self._arequest("sglang", data)

    async def vllm_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on vLLM servers."""
        return await self._arequest("vllm", data)

    async def lmdeploy_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on lmdeploy servers."""
        return await self._arequest("lmdeploy", data)

    async def connect(self) -> None:
        """Contact the servers now (their versions, model name and ``max_model_len``).

        Done by the first call. Call it before :meth:`encode` (which is sync) so
        that its truncation respects the servers' limit.
        """
        await self._aconnect()

    async def aclose(self) -> None:
        """Close this event loop's server connections."""
        await self._aclose()

    async def __aenter__(self) -> "AsyncRewardModelClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class _LoopThread:
    """An event loop running in a daemon thread, for the sync client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rmclient-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # the loop was stopped under the call: close()
            raise ClientClosedError({}, []) from None
        except BaseException:
            future.cancel()  # Ctrl-C: stop the work in the background too
            raise

    def stop(self, grace: float = 2.0) -> None:
        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:  # calls on closed pools end by themselves (ClientClosedError): give them a moment
                await asyncio.wait(tasks, timeout=grace)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class RewardModelClient(_ClientBase):
    """Score samples with a reward model, in-process or on inference servers.

    Drop-in compatible with xtuner's ``RewardModelClient``: the first six
    arguments keep their names and meaning (``response_cut_side`` defaults to
    ``"right"``, the training rule). Constructing the client loads only the
    tokenizer; the model, or the connections, open on first use. Any failure
    raises; no reward is ever replaced by ``None`` or a default unless
    ``on_error="nan"`` asks for NaN.
    """

    __doc__ = (__doc__ or "") + _DOC_ARGS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread: Optional[_LoopThread] = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Contact the servers now (their versions, model name and ``max_model_len``).

        Done by the first call; :meth:`encode` does it too, so that its
        truncation respects the servers' limit.
        """
        self._run(self._aconnect())

    def _before_encode(self) -> None:
        if self.server_type != "transformers" and self._server_max_len is None:
            self.connect()

    def _run(self, coro: Any) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = _LoopThread()
                weakref.finalize(self, self._thread.stop)
        return self._thread.run(coro)

    def __call__(self, data: Data, *, progress: Progress = None) -> Rewards:
        """Raw reward of one sample (a float) or of a list of samples (a list, in input order).

        ``progress=True`` shows a bar on stderr; a callable gets ``(scored, total)`` as requests finish (from a worker thread: keep it quick).
        """
        return self._run(self._ascore(data, progress))

    score = __call__

    def score_details(self, data: Data, *, progress: Progress = None) -> List[Scored]:
        """Every sample's :class:`Scored`: its reward, how many tokens it was scored from, whether it was cut."""
        return self._run(self._ascore(data, progress, details=True))

    def score_ids(self, ids: Sequence[Sequence[int]]) -> List[float]:
        """Raw rewards for already encoded token ids, in input order."""
        return self._run(self._ascore_ids(ids))

    def sglang_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on sglang servers."""
        return self._run(self._arequest("sglang", data))

    def vllm_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on vLLM servers."""
        return self._run(self._arequest("vllm", data))

    def lmdeploy_request_reward(self, data: Any, *_xtuner_args: Any, **_xtuner_options: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on lmdeploy servers."""
        return self._run(self._arequest("lmdeploy", data))

    def close(self) -> None:
        """Close server connections and stop the background loop."""
        if self._thread is not None:
            self._thread.run(self._aclose())
            self._thread.stop()
            self._thread = None

    def __enter__(self) -> "RewardModelClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

