"""The reward server: an :class:`~rmclient.model.Encoder`, a local scorer, a batcher, and the routes.

The routes' wire formats (parsing requests, building answers) are the adapters' server
halves (:mod:`rmclient.adapters.sglang`, :mod:`~rmclient.adapters.openrlhf`,
:mod:`~rmclient.adapters.rmclient`); this module wires them to the model and checks
what needs the server's limits (:mod:`.limits`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import jsonsafe
from ..adapters.base import OUTPUTS, request_object
from ..adapters.openrlhf import get_reward_response, parse_get_reward_request
from ..adapters.rmclient import kind_response, parse_rewards_request, rewards_kind, rewards_response
from ..adapters.sglang import classify_response, parse_classify_request
from ..adapters.vllm import parse_pooling_request, pooling_response
from ..batcher import DynamicBatcher
from ..errors import ConfigurationError, ProtocolError
from ..model import Encoder
from ..adapters.base import model_kind
from ..preference import sigmoid, softmax
from ..spans import dense_inputs, dense_rewards
from ..steps import step_results
from .deps import require_serve
from .errors import RequestError
from .limits import Limits
from .middleware import middleware

logger = logging.getLogger("rmclient.serve")  # not __name__: one logger for the whole server

DEFAULT_MAX_BODY_MB = 32.0
DEFAULT_MAX_SAMPLES = 1024
#: Requests with bodies larger than this are parsed and tokenized in a lane of their own (a
#: thread apart from the small requests'), so one huge request never stalls the others.
BIG_BODY = 256 * 1024
#: A connection that has not sent a whole request head in this long is closed; a body must
#: arrive within ``DEFAULT_BODY_TIMEOUT`` of its head.
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_BODY_TIMEOUT = 60.0


def _from_client(client: Any, recipe: Optional[str]) -> Tuple[Encoder, Any]:
    """The encoder and local scorer of a ready in-process client (its own, never rebuilt)."""
    if getattr(client, "server_type", None) != "transformers":
        raise ConfigurationError(
            f"client= must be an in-process client (server_type='transformers'), got server_type="
            f"{getattr(client, 'server_type', None)!r}: the server scores with the client's local model"
        )
    encoder: Encoder = client.encoder
    if recipe is not None and encoder.recipe not in (None, recipe):
        raise ConfigurationError(f"recipe={recipe!r} but the given client's recipe is {encoder.recipe!r}")
    return encoder, client.local_backend


class RewardServer:
    """The reward server: a model, a batcher and the aiohttp application that serves them.

    Args:
        model: model folder or hub id.
        served_model_name: the name in ``/v1/models`` (default: ``model``).
        api_key: bearer token every route but ``/health`` requires (``None``: open).
        trust_remote_code, device, dtype: how the model loads (as ``RewardModelClient``).
        recipe, system_prompt, max_length, max_response_length, response_cut_side:
            the native route's encoding (as ``RewardModelClient``; ``max_length``
            defaults to ``min(16384, max_model_len)``). The recipe is fixed at
            startup (``None``: the model's own, POLAR for a POLAR model, else the
            chat template), never chosen from a request's data.
        max_model_len: longest input accepted (default: the config's
            ``max_position_embeddings``).
        max_batch_size, max_batch_tokens: one forward pass holds at most this many
            sequences and this many padded tokens (``rows * longest``).
        max_wait_ms: how long the oldest waiting request waits for others to join it.
        max_padding: a merged batch is sorted by length and cut into forward passes whose
            padding stays under this fraction of their tokens (``None``: no padding on CPU,
            where a padded batch takes the masked attention path, measured 2x slower per token
            on the benchmark's model, and equal lengths still share a pass; no cut on GPUs,
            where wide batches pay).
        max_samples: most inputs per request (413 over it).
        max_body_bytes: largest request body (413 over it).
        header_timeout: a connection that has not sent a whole request head in this many seconds
            is closed (stalled or idle connections hold no file descriptor for long).
        body_timeout: seconds for a request's body to arrive once its head has (408 after).
        client: a ready in-process (``server_type="transformers"``) ``RewardModelClient`` whose
            encoder and loaded local model to serve instead of loading them again; its backend
            is used as it is (``max_padding`` must then be left ``None``).
    """

    def __init__(
        self,
        model: str,
        *,
        served_model_name: Optional[str] = None,
        api_key: Optional[str] = None,
        trust_remote_code: bool = False,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        recipe: Optional[str] = None,
        system_prompt: Optional[str] = None,
        steps: Optional[str] = None,
        max_length: Optional[int] = None,
        max_response_length: int = 4096,
        response_cut_side: str = "right",
        max_model_len: Optional[int] = None,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_wait_ms: float = 5.0,
        max_padding: Optional[float] = None,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 2**20),
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        client: Any = None,
    ) -> None:
        require_serve()
        from ..local import TransformersBackend
        from ..metrics import ServerMetrics

        if max_samples < 1 or max_body_bytes < 1:
            raise ConfigurationError("max_samples and max_body_bytes must be >= 1")
        self.model = str(model)
        self.served_model_name = served_model_name or self.model
        self.api_key = api_key or None
        self.max_body_bytes = max_body_bytes
        if client is not None:
            if max_padding is not None:
                raise ConfigurationError("max_padding= cannot be set with client=: the client's backend is used as it is")
            encoder, self.backend = _from_client(client, recipe)
        else:
            encoder = Encoder.load(
                self.model, trust_remote_code=trust_remote_code, max_response_length=max_response_length,
                response_cut_side=response_cut_side, system_prompt=system_prompt, steps=steps,
            )
        self.max_model_len = max_model_len or encoder.model_max_len or 16384
        if client is None:
            encoder = dataclasses.replace(encoder, max_length=max_length or min(16384, self.max_model_len))
        # One recipe for every request, fixed now: chosen from a request's data, a client sending
        # 'reference' would get a chat RM's samples POLAR-encoded.
        self.encoder = encoder.fixed(recipe)
        if client is not None:  # the client encodes as the server does (the encoder itself is never changed)
            client.encoder = self.encoder
        self.recipe: str = self.encoder.recipe  # type: ignore[assignment]
        self.tokenizer = self.encoder.tokenizer
        if client is None:
            pad = self.tokenizer.pad_token_id
            fmt = self.encoder.step_format
            self.backend = TransformersBackend(
                self.model, self.encoder.config, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                batch_size=max_batch_size, max_tokens=max_batch_tokens, pad_token_id=pad if pad is not None else 0,
                max_padding=max_padding, batch_invariant=False,
                token_columns=self.encoder.step_recipe().token_columns if fmt and fmt.returned_tokens else None,
            )
        self.max_padding = self.backend.max_padding
        self.limits = Limits(
            max_samples=max_samples, max_model_len=self.max_model_len, vocab_size=self.encoder.vocab_size,
            max_token_chars=max((len(t) for t in self.tokenizer.get_vocab()), default=1) or 1,
        )
        self._model_pool = self.backend.thread  # every forward pass on one thread (TransformersBackend)
        self._token_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rmclient-tokenize")
        self._big_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rmclient-big-requests")
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.metrics = ServerMetrics(self.stats)
        #: One batcher per output (``adapters.base.OUTPUTS``), each made on first use; ``batcher``: rewards.
        self._batchers: Dict[str, DynamicBatcher] = {}
        self._batcher_options = dict(
            max_tokens=max_batch_tokens, max_batch_size=max_batch_size, max_wait=max_wait_ms / 1000.0,
            executor=self._model_pool, on_batch=self.metrics.batch_size.observe,
        )
        self.batcher = self._batcher("reward")
        self.started = time.time()
        self.http_requests = 0
        self.http_errors: Dict[int, int] = {}

    def _batcher(self, output: str) -> DynamicBatcher:
        if output not in self._batchers:
            score = self.backend.score if output == "reward" else functools.partial(self.backend.score, output=output)
            self._batchers[output] = DynamicBatcher(score, **self._batcher_options)
        return self._batchers[output]

    @property
    def max_samples(self) -> int:
        return self.limits.max_samples

    @property
    def vocab_size(self) -> Optional[int]:
        return self.limits.vocab_size

    # -- lifecycle ------------------------------------------------------------------

    def load(self) -> None:
        """Load the model and run one tiny forward pass (blocking)."""
        t0 = time.perf_counter()
        model = self.backend.model
        bos = self.tokenizer.bos_token_id
        self.backend.score([[bos if bos is not None else 0]], output="vector")  # any head's shape
        logger.info("%s loaded (%s) in %.1f s", self.model, type(model).__name__, time.perf_counter() - t0)

    async def _on_startup(self, app: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._model_pool, self.load)

    async def _on_cleanup(self, app: Any) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._token_pool.shutdown(wait=False)
        self._big_pool.shutdown(wait=False)

    def runner(self, **kwargs: Any) -> Any:
        """An ``aiohttp.web.AppRunner`` for :meth:`build_app`: a handler whose client disconnected is
        cancelled (its samples are dropped unscored); connections silent past ``header_timeout`` close."""
        from aiohttp import web

        return web.AppRunner(
            self.build_app(), handler_cancellation=True, keepalive_timeout=self.header_timeout, **kwargs
        )

    def build_app(self) -> Any:
        """The ``aiohttp.web.Application`` (loads the model on startup, before the port is bound)."""
        from aiohttp import web

        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[middleware(self)])
        app.router.add_post("/classify", self.classify)
        app.router.add_post("/get_reward", self.get_reward)
        app.router.add_post("/v1/rewards", self.rewards)
        app.router.add_post("/pooling", self.pooling)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/stats", self.stats_route)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/get_server_info", self.server_info)
        app.router.add_get("/server_info", self.server_info)
        app.router.add_get("/get_model_info", self.model_info)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    # -- plumbing -------------------------------------------------------------------

    def _lane(self, request: Any) -> concurrent.futures.Executor:
        """Where a request's parsing and tokenizing run: big bodies apart from small ones."""
        return self._big_pool if (request.content_length or 0) > BIG_BODY else self._token_pool

    async def _off_loop(self, request: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: in the request's lane for a big body, else right here."""
        if (request.content_length or 0) > BIG_BODY:
            return await asyncio.get_running_loop().run_in_executor(self._lane(request), fn, *args)
        return fn(*args)

    async def _json(self, request: Any) -> Dict[str, Any]:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise RequestError(
                413, f"the body ({length} bytes) exceeds the server's limit of {self.max_body_bytes} bytes",
                kind="too_large",
            )
        try:
            raw = await asyncio.wait_for(request.read(), self.body_timeout)
        except asyncio.TimeoutError:
            raise RequestError(408, f"the body did not arrive within {self.body_timeout:g} s", kind="timeout") from None
        try:
            if len(raw) > BIG_BODY:
                body = await asyncio.get_running_loop().run_in_executor(self._lane(request), jsonsafe.loads, raw)
            else:
                body = jsonsafe.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"malformed JSON: {exc}", kind="invalid_json") from None
        return request_object(body)  # a 400 naming the type otherwise

    async def _tokenize(self, request: Any, texts: List[str], special: bool) -> List[List[int]]:
        def run() -> List[List[int]]:
            return [list(x) for x in self.tokenizer(texts, add_special_tokens=special)["input_ids"]]

        return await asyncio.get_running_loop().run_in_executor(self._lane(request), run)

    async def _score(self, ids: List[List[int]], route: str, output: str = "reward") -> List[Any]:
        try:
            rewards = await self._batcher(output).score(ids)
        except ConfigurationError as exc:  # this model cannot give that output (a PRM's reward, ...)
            raise RequestError(400, str(exc), kind="unsupported") from None
        self.metrics.samples.labels(route).inc(len(ids))
        return rewards

    # -- scoring routes -------------------------------------------------------------

    async def classify(self, request: Any) -> Any:
        """sglang ``POST /classify``: text (BOS added, as sglang does) or exact token ids."""
        from aiohttp import web

        t0 = time.perf_counter()
        body = await self._json(request)
        kind, items, single = await self._off_loop(request, parse_classify_request, body)
        output = body.get("output") or "reward"  # ours (RmclientAdapter); sglang sends none
        if output not in OUTPUTS:
            raise ProtocolError(f"'output' must be one of {list(OUTPUTS)}, got {output!r}", field="output")
        self.limits.count(len(items))
        if kind == "text":
            field = "text"
            self.limits.texts(items, field)
            ids = await self._tokenize(request, items, True)
        else:
            field = "input_ids"
            await self._off_loop(request, self.limits.vocabulary, items, field)
            ids = items
        self.limits.lengths(ids, field)
        rewards = await self._score(ids, "/classify", output)
        latency = round(time.perf_counter() - t0, 6)
        return web.json_response(classify_response(rewards, [len(x) for x in ids], single, latency))

    async def pooling(self, request: Any) -> Any:
        """vLLM ``POST /pooling``, as vLLM answers it: ``task`` ``"classify"`` (every label at the last
        token; the default for a sequence head) or ``"token_classify"`` (per token; the default for reward
        and process reward models, and a PRM answers at its step tokens only, as vLLM's STEP pooling).
        The head's activation (softmax over several labels, else sigmoid) unless ``use_activation: false``."""
        from aiohttp import web

        req = await self._off_loop(request, parse_pooling_request, await self._json(request))
        self.limits.count(len(req.items))
        if req.kind == "text":
            self.limits.texts(req.items, "input")
            ids = await self._tokenize(request, req.items, req.add_special_tokens)
        else:
            await self._off_loop(request, self.limits.vocabulary, req.items, "input")
            ids = req.items
        self.limits.lengths(ids, "input")
        per_token = model_kind(self.encoder.architecture) in ("reward", "process")
        task = req.task or ("token_classify" if per_token else "classify")
        rows = await self._score(ids, "/pooling", "tokens" if task == "token_classify" else "vector")
        if task == "token_classify" and self.encoder.step_format is not None:
            sep = self.encoder.step_recipe().separator_id
            rows = [[r for t, r in zip(x, out) if t == sep] for x, out in zip(ids, rows)]
        if req.use_activation is not False:
            rows = [[_activated(r) for r in out] if task == "token_classify" else _activated(out) for out in rows]
        return web.json_response(pooling_response(self.served_model_name, rows, [len(x) for x in ids], int(time.time())))

    async def get_reward(self, request: Any) -> Any:
        """OpenRLHF ``POST /get_reward``: whole texts, tokenized without adding special tokens."""
        from aiohttp import web

        texts = parse_get_reward_request(await self._json(request))
        self.limits.count(len(texts))
        self.limits.texts(texts, "query")
        ids = await self._tokenize(request, texts, False)
        self.limits.lengths(ids, "query")
        rewards = await self._score(ids, "/get_reward")
        return web.json_response(get_reward_response(rewards))

    async def rewards(self, request: Any) -> Any:
        """Native ``POST /v1/rewards``: raw samples, encoded here with the server's fixed recipe."""
        from aiohttp import web

        body = await self._json(request)
        samples, return_encodings = parse_rewards_request(body)
        kind, aggregate = rewards_kind(body, "steps" if self.encoder.step_format else "reward")
        self.limits.count(len(samples))
        if kind != "reward":
            return web.json_response(await self._kind(request, samples, kind, aggregate, return_encodings))
        if self.encoder.step_format is not None:
            raise RequestError(400, f"{self.model} is a process reward model: kind 'reward' is not served "
                               "(use 'steps')", kind="unsupported")
        encoded = await asyncio.get_running_loop().run_in_executor(
            self._lane(request), self.encoder.encode, samples
        )
        ids = [e.ids for e in encoded]
        self.limits.lengths(ids, "<sample>")
        rewards = await self._score(ids, "/v1/rewards")
        encodings = [(e.text, e.ids) for e in encoded] if return_encodings else None
        return web.json_response(rewards_response(self.served_model_name, rewards, [len(x) for x in ids], encodings))

    async def _kind(self, request: Any, samples: List[Any], kind: str, aggregate: str,
                    return_encodings: bool) -> Dict[str, Any]:
        """``/v1/rewards`` of ``kind`` ``"steps"``, ``"tokens"`` or ``"vector"``: encoded in the request's
        lane, scored by the batcher of its output, finished as the client does."""
        prm = self.encoder.step_format is not None
        if (kind == "steps") != prm:
            raise RequestError(400, f"{self.model} is {'a' if prm else 'not a'} process reward model: "
                               f"kind {kind!r} is not served (use {'steps' if prm else 'reward, tokens or vector'})",
                               kind="unsupported")

        def encode() -> Tuple[Any, List[Any], Any]:
            if kind == "steps":
                recipe = self.encoder.step_recipe()
                return recipe, recipe.encode(samples), None
            recipe = self.encoder.recipe_for(samples)
            if kind == "tokens" and recipe.name != "chat_template":
                raise RequestError(400, "kind 'tokens' takes chat-template samples (prompt + output)", kind="unsupported")
            chats = recipe.validate(samples)
            encoded = recipe.encode_valid(chats)
            return recipe, encoded, dense_inputs(recipe, chats, encoded) if kind == "tokens" else None

        recipe, encoded, where = await asyncio.get_running_loop().run_in_executor(self._lane(request), encode)
        ids = [e.ids for e in encoded]
        self.limits.lengths(ids, "<sample>")
        rows = await self._score(ids, "/v1/rewards", "vector" if kind == "vector" else "tokens")
        if kind == "steps":
            results: List[Any] = step_results(encoded, rows, recipe.format.positive, aggregate)
        elif kind == "tokens":
            results = dense_rewards(where, encoded, rows)
        else:
            results = [(r, len(x)) for r, x in zip(rows, ids)]
        encodings = [(e.text, e.ids) for e in encoded] if return_encodings else None
        return kind_response(self.served_model_name, kind, results, self.encoder.labels, encodings)

    # -- information routes ---------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Batching and HTTP counters."""
        return {
            **self.batcher.stats.as_dict(),
            "forward_passes": self.backend.forward_passes,  # what the merged batches were cut into
            "queued_requests": self.batcher.queued,
            "http_requests": self.http_requests,
            "http_errors": {str(k): v for k, v in sorted(self.http_errors.items())},
            "uptime_s": round(time.time() - self.started, 3),
        }

    async def health(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"status": "ok", "model": self.served_model_name, **self.stats()})

    async def prometheus(self, request: Any) -> Any:
        """``GET /metrics``: the Prometheus text format."""
        from aiohttp import web

        from ..metrics import CONTENT_TYPE

        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def stats_route(self, request: Any) -> Any:
        """``GET /stats``: the same counters as JSON."""
        from aiohttp import web

        return web.json_response(self.stats())

    async def models(self, request: Any) -> Any:
        from aiohttp import web

        card = {
            "id": self.served_model_name,
            "object": "model",
            "created": int(self.started),
            "owned_by": "rmclient",
            "root": self.model,
            "max_model_len": self.max_model_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def server_info(self, request: Any) -> Any:
        from aiohttp import web

        from .. import __version__

        return web.json_response(
            {
                "server": "rmclient",
                "rmclient_version": __version__,
                "model_path": self.model,
                "served_model_name": self.served_model_name,
                "max_model_len": self.max_model_len,
                # sglang's form (its clients send fewer tokens than this): the longest input + 1
                "max_req_input_len": self.max_model_len + 1,
                "max_batch_size": self.batcher.max_batch_size,
                "max_batch_tokens": self.batcher.max_tokens,
                "max_wait_ms": self.batcher.max_wait * 1000.0,
                "max_samples": self.max_samples,
                "max_body_bytes": self.max_body_bytes,
            }
        )

    async def model_info(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"model_path": self.model, "is_generation": False})


def _activated(values: List[float]) -> List[float]:
    """vLLM's default activation of a classifier head: softmax over several labels, sigmoid of one."""
    return softmax(values) if len(values) > 1 else [sigmoid(values[0])]
