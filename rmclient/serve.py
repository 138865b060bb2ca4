"""``rmclient serve MODEL``: an HTTP reward server over the in-process transformers backend.

    python -m rmclient.serve /models/POLAR-7B --trust-remote-code --port 8000

Routes (JSON in, JSON out):

``POST /classify`` (sglang)
    ``{"text": [str, ...]}`` or ``{"input_ids": [[int, ...], ...]}`` (exactly
    one; a single string or id list is one input; other keys are ignored).
    Text is tokenized WITH special tokens (BOS added), as sglang does, so
    xtuner's client (``text + "[UNUSED_TOKEN_130]"``) and ours work unchanged.
    Answers ``[{"embedding": [reward], "meta_info": {...}}, ...]``, or one such
    dict for a single input. The reward is raw.
``POST /get_reward`` (OpenRLHF ``serve_rm``)
    ``{"query": [str, ...]}``: each query is the whole text the model sees,
    special tokens included; tokenized WITHOUT adding any. Answers
    ``{"rewards": [...], "scores": [...]}``.
``POST /v1/rewards`` (native)
    ``{"samples": [sample, ...]}`` (or one sample dict), POLAR
    (``prompt``/``reference``/``output``) or outcome-RM (``prompt`` +
    ``output``, or ``messages``) samples, encoded here with the same recipes as
    :class:`~rmclient.RewardModelClient`. Answers ``{"model", "rewards": [...],
    "num_tokens": [...]}`` (plus ``"encodings": [{"text", "input_ids"}]`` when
    ``"return_encodings": true``).
``GET /health``
    ``{"status": "ok", ...}`` with the batching counters (no API key needed).
``GET /metrics``
    the batching counters (batches, requests, merged batches, ...).
``GET /v1/models``
    OpenAI model list with the served name and ``max_model_len``.
``GET /server_info`` (and ``/get_server_info``), ``GET /get_model_info``
    sglang-style facts, ``max_req_input_len`` in sglang's form (one more than the
    longest input), no engine ``version`` (clients treat it as unknown).

Concurrent requests are merged into shared forward passes
(:class:`~rmclient.batcher.DynamicBatcher`): up to a padded-token budget and a
batch size, waiting at most ``--max-wait-ms`` for company. The backend
(:func:`~rmclient.local.plan_batches`) sorts a merged batch by
length and, on CPU, cuts it into forward passes padded by at most
``--max-padding`` (a CPU forward costs the same per token at any batch size,
so padding is pure waste). The model runs in one worker thread and
tokenization in another, so the event loop never blocks on either.

Safe by default: binds 127.0.0.1. With ``--api-key`` (or ``RMCLIENT_API_KEY``)
every route but ``/health`` needs ``Authorization: Bearer KEY`` (401 otherwise);
binding any non-loopback address needs a key unless ``--insecure``. Bodies over
``--max-body-mb`` get 413, as do requests with more than ``--max-samples``
inputs; malformed JSON and bad inputs get 400 with a JSON error that names the
sample ``index`` and ``field``. A bad request fails alone: the server keeps
serving everyone else.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hmac
import ipaddress
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from . import jsonsafe
from .batcher import BatcherClosed, DynamicBatcher
from .data import check_text
from .errors import ConfigurationError, InvalidSampleError, ResponseError, RMClientError
from .logs import ENV as LOG_LEVEL_ENV
from .logs import LEVELS, configure, level_of

logger = logging.getLogger("rmclient.serve")  # not __name__: "__main__" under python -m

__all__ = [
    "RewardServer",
    "ServerThread",
    "RequestError",
    "add_serve_arguments",
    "run_serve",
    "main",
    "is_loopback",
    "API_KEY_ENV",
]

DESCRIPTION = """\
Serve a reward model over HTTP with transformers, no inference engine needed. Concurrent
requests are merged into shared forward passes (dynamic batching). Routes:

  POST /classify     sglang's: {"text": [...]} or {"input_ids": [[...]]} -> [{"embedding": [r]}]
  POST /get_reward   OpenRLHF's: {"query": [whole texts]} -> {"rewards": [...]}
  POST /v1/rewards   native: {"samples": [POLAR or outcome-RM samples]} -> {"rewards": [...]}
  GET  /health, /v1/models, /server_info, /metrics (Prometheus), /stats (JSON)

It binds 127.0.0.1 by default; another address needs --api-key (or RMCLIENT_API_KEY)
unless forced with --insecure. Bad requests get a 4xx naming the sample and field."""

EPILOG = """\
examples:
  rmclient serve /models/POLAR-7B --trust-remote-code --port 8000
  rmclient serve /models/rm --host 0.0.0.0 --api-key "$KEY" --max-batch-size 64
  RMCLIENT_API_KEY=secret rmclient serve /models/rm --host 0.0.0.0

exit codes: 0 stopped cleanly; 1 it could not bind; 2 a bad option or model, or an unsafe bind"""

#: Environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "RMCLIENT_API_KEY"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_MB = 32.0
DEFAULT_MAX_SAMPLES = 1024
#: Requests with bodies larger than this are parsed and tokenized in a lane of their own (a
#: thread apart from the small requests'), so one huge request never stalls the others.
_BIG_BODY = 256 * 1024
#: A connection that has not sent a whole request head in this long is closed; a body must
#: arrive within ``DEFAULT_BODY_TIMEOUT`` of its head.
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_BODY_TIMEOUT = 60.0
#: Routes that need no API key (liveness probes, the supervisor's readiness check).
_OPEN_ROUTES = frozenset({"/health", "/metrics"})


class RequestError(RMClientError):
    """A request the server rejects: an HTTP ``status`` and a JSON error body."""

    def __init__(
        self, status: int, message: str, *, kind: str = "invalid_request",
        index: Optional[int] = None, field: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.index = index
        self.field = field

    def body(self) -> Dict[str, Any]:
        err: Dict[str, Any] = {"message": self.message, "type": self.kind, "code": self.status}
        if self.index is not None:
            err["index"] = self.index
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _invalid(index: int, field: str, message: str) -> RequestError:
    return RequestError(
        400, f"sample {index}, field {field!r}: {message}", kind="invalid_sample", index=index, field=field
    )


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
            padding stays under this fraction of their tokens (``None``: 0.1 on CPU, where
            a forward costs the same per token at any batch size, so padding is pure waste;
            no cut on GPUs, where wide batches pay). Set on the client's backend.
        max_samples: most inputs per request (413 over it).
        max_body_bytes: largest request body (413 over it).
        header_timeout: a connection that has not sent a whole request head in this many seconds
            is closed (stalled or idle connections hold no file descriptor for long).
        body_timeout: seconds for a request's body to arrive once its head has (408 after).
        client: a ready in-process (``server_type="transformers"``)
            :class:`~rmclient.RewardModelClient` to serve instead of building one; its
            recipe, when ``None``, is fixed to the server's, and its backend's
            ``max_padding`` is set.
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
        from .client import RewardModelClient
        from .modelinfo import context_length, load_config
        from .recipes import select_recipe

        require_serve()

        if max_samples < 1 or max_body_bytes < 1:
            raise ConfigurationError("max_samples and max_body_bytes must be >= 1")
        if client is not None and getattr(client, "server_type", None) != "transformers":
            raise ConfigurationError(
                f"client= must be an in-process client (server_type='transformers'), got server_type="
                f"{getattr(client, 'server_type', None)!r}: the server scores with the client's local model"
            )
        self.model = str(model)
        self.served_model_name = served_model_name or self.model
        self.api_key = api_key or None
        self.max_samples = max_samples
        self.max_body_bytes = max_body_bytes
        config = client.config if client is not None else load_config(self.model)
        self.max_model_len = max_model_len or context_length(config) or 16384
        if client is not None and recipe is not None and client.recipe not in (None, recipe):
            raise ConfigurationError(f"recipe={recipe!r} but the given client's recipe is {client.recipe!r}")
        # One recipe for every request, fixed now: chosen from a request's data, a client sending
        # 'reference' would get a chat RM's samples POLAR-encoded.
        recipe = recipe or (client.recipe if client is not None else None)
        self.recipe = select_recipe(recipe, client.path if client is not None else self.model, config, [])
        if client is None:
            client = RewardModelClient(
                self.model,
                max_length=max_length or min(16384, self.max_model_len),
                max_response_length=max_response_length,
                response_cut_side=response_cut_side,
                recipe=self.recipe,
                system_prompt=system_prompt,
                trust_remote_code=trust_remote_code,
                device=device,
                dtype=dtype,
                batch_size=max_batch_size,
                max_tokens_per_batch=max_batch_tokens,
            )
        elif client.recipe is None:
            client.recipe = self.recipe
        self.client = client
        self.tokenizer = client.tokenizer
        self.backend = client.local_backend
        self.backend.max_padding = max_padding  # None: 0.1 on CPU, no cut elsewhere (the backend decides)
        self.vocab_size = client.config.get("vocab_size")
        self.max_padding = max_padding
        self._model_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rmclient-model")
        self._token_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rmclient-tokenize")
        self._big_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rmclient-big-requests")
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        #: No token is longer than this many characters: a text longer than ``max_model_len`` times
        #: it is certainly over the limit, known without tokenizing it.
        self.max_token_chars = max((len(t) for t in self.tokenizer.get_vocab()), default=1) or 1
        from .metrics import ServerMetrics

        self.metrics = ServerMetrics(self.stats)
        self.batcher = DynamicBatcher(
            self.backend.score,
            max_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
            max_wait=max_wait_ms / 1000.0,
            executor=self._model_pool,
            on_batch=self.metrics.batch_size.observe,
        )
        self.started = time.time()
        self.http_requests = 0
        self.http_errors: Dict[int, int] = {}

    # -- lifecycle ------------------------------------------------------------------

    def load(self) -> None:
        """Load the model and run one tiny forward pass (blocking)."""
        t0 = time.perf_counter()
        model = self.backend.model
        bos = self.tokenizer.bos_token_id
        self.backend.score([[bos if bos is not None else 0]])
        logger.info("%s loaded (%s) in %.1f s", self.model, type(model).__name__, time.perf_counter() - t0)

    async def _on_startup(self, app: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._model_pool, self.load)

    async def _on_cleanup(self, app: Any) -> None:
        await self.batcher.close()
        self._model_pool.shutdown(wait=False)
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

        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._middleware()])
        app.router.add_post("/classify", self.classify)
        app.router.add_post("/get_reward", self.get_reward)
        app.router.add_post("/v1/rewards", self.rewards)
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

    def _middleware(self) -> Callable[..., Awaitable[Any]]:
        from aiohttp import web

        @web.middleware
        async def middleware(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            started = time.perf_counter()
            response = await answer(request, handler)
            resource = getattr(request.match_info.route, "resource", None)
            route = resource.canonical if resource is not None else "unmatched"
            self.metrics.requests.labels(route, str(response.status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            return response

        async def answer(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            self.http_requests += 1
            try:
                if self.api_key and request.path not in _OPEN_ROUTES:
                    self._check_key(request)
                return await handler(request)
            except RequestError as exc:
                return self._error(exc)
            except InvalidSampleError as exc:
                return self._error(RequestError(400, str(exc), kind="invalid_sample", index=exc.index, field=exc.field))
            except ConfigurationError as exc:
                return self._error(RequestError(400, str(exc)))
            except ResponseError as exc:  # the model gave NaN/inf: never sent on as a reward
                return self._error(RequestError(500, str(exc), kind="model_error"))
            except BatcherClosed as exc:
                return self._error(RequestError(503, str(exc), kind="unavailable"))
            except web.HTTPRequestEntityTooLarge:
                limit = f"the body exceeds the server's limit of {self.max_body_bytes} bytes"
                return self._error(RequestError(413, limit, kind="too_large"))
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                return self._error(RequestError(exc.status, exc.reason or "error", kind="http_error"))
            except asyncio.CancelledError:
                raise
            except ConnectionError:  # the client hung up while its request was read: nobody to answer
                return self._error(RequestError(400, "the client disconnected before its request arrived",
                                                kind="disconnected"))
            except Exception:  # noqa: BLE001 - one request's failure never stops the server
                logger.exception("%s %s failed", request.method, request.path)
                return self._error(RequestError(500, "internal error (see the server log)", kind="internal"))

        return middleware

    def _error(self, exc: RequestError) -> Any:
        from aiohttp import web

        self.http_errors[exc.status] = self.http_errors.get(exc.status, 0) + 1
        if exc.status >= 500:
            logger.error("%d: %s", exc.status, exc.message)
        else:
            logger.info("%d: %s", exc.status, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return web.json_response(exc.body(), status=exc.status, headers=headers)

    def _check_key(self, request: Any) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
        assert self.api_key is not None
        if not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", kind="unauthorized")

    def _lane(self, request: Any) -> concurrent.futures.Executor:
        """Where a request's parsing and tokenizing run: big bodies apart from small ones."""
        return self._big_pool if (request.content_length or 0) > _BIG_BODY else self._token_pool

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
            if len(raw) > _BIG_BODY:
                body = await asyncio.get_running_loop().run_in_executor(self._lane(request), jsonsafe.loads, raw)
            else:
                body = jsonsafe.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"malformed JSON: {exc}", kind="invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError(400, f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def _check_count(self, n: int) -> None:
        if n == 0:
            raise RequestError(400, "no inputs to score")
        if n > self.max_samples:
            raise RequestError(
                413, f"{n} inputs exceed the server's limit of {self.max_samples} per request; split the request",
                kind="too_many_samples",
            )

    def _check_ids(self, ids: Sequence[Sequence[int]], field: str) -> None:
        for i, x in enumerate(ids):
            if not x:
                raise _invalid(i, field, "empty: nothing to score")
            if len(x) > self.max_model_len:
                raise _invalid(i, field, f"{len(x)} tokens exceed the server's max_model_len of {self.max_model_len}")

    async def _tokenize(self, request: Any, texts: List[str], special: bool) -> List[List[int]]:
        def run() -> List[List[int]]:
            return [list(x) for x in self.tokenizer(texts, add_special_tokens=special)["input_ids"]]

        return await asyncio.get_running_loop().run_in_executor(self._lane(request), run)

    def _texts(self, value: Any, field: str) -> Tuple[List[str], bool]:
        if isinstance(value, str):
            return self._texts([value], field)[0], True
        if not isinstance(value, list):
            raise RequestError(400, f"{field!r} must be a string or a list of strings, got {type(value).__name__}",
                               field=field)
        self._check_count(len(value))
        longest = self.max_model_len * self.max_token_chars
        for i, t in enumerate(value):
            if not isinstance(t, str):
                raise _invalid(i, field, f"expected a string, got {type(t).__name__}")
            check_text(i, field, t)
            if len(t) > longest:  # certainly over max_model_len tokens: refused before tokenizing
                raise _invalid(i, field, f"{len(t)} characters are certainly more than the server's "
                                         f"max_model_len of {self.max_model_len} tokens")
        return value, False

    def _ids(self, value: Any, field: str) -> Tuple[List[List[int]], bool]:
        if not isinstance(value, list):
            raise RequestError(400, f"{field!r} must be a list of token ids or a list of such lists", field=field)
        single = bool(value) and not isinstance(value[0], list)
        seqs = [value] if single else value
        self._check_count(len(seqs))
        vocab = self.vocab_size
        for i, seq in enumerate(seqs):
            if not isinstance(seq, list):
                raise _invalid(i, field, f"expected a list of token ids, got {type(seq).__name__}")
            for t in seq:
                if isinstance(t, bool) or not isinstance(t, int):
                    raise _invalid(i, field, f"token ids must be integers, got {t!r}")
                if t < 0 or (vocab and t >= vocab):
                    raise _invalid(i, field, f"token id {t} is outside the vocabulary [0, {vocab})")
        return seqs, single

    async def _score(self, ids: List[List[int]], route: str) -> List[float]:
        rewards = await self.batcher.score(ids)
        self.metrics.samples.labels(route).inc(len(ids))
        return rewards

    # -- scoring routes -------------------------------------------------------------

    async def classify(self, request: Any) -> Any:
        """sglang ``POST /classify``."""
        from aiohttp import web

        t0 = time.perf_counter()
        body = await self._json(request)
        has_text, has_ids = body.get("text") is not None, body.get("input_ids") is not None
        if has_text == has_ids:
            raise RequestError(400, "Either text or input_ids should be provided.", field="text")
        if has_text:
            texts, single = self._texts(body["text"], "text")
            ids, field = await self._tokenize(request, texts, True), "text"
        else:
            if (request.content_length or 0) > _BIG_BODY:  # a big body: check it off the loop
                ids, single = await asyncio.get_running_loop().run_in_executor(
                    self._lane(request), self._ids, body["input_ids"], "input_ids"
                )
            else:
                ids, single = self._ids(body["input_ids"], "input_ids")
            field = "input_ids"
        self._check_ids(ids, field)
        rewards = await self._score(ids, "/classify")
        latency = round(time.perf_counter() - t0, 6)
        results = [
            {"embedding": [r], "meta_info": {"id": uuid.uuid4().hex, "prompt_tokens": len(x), "e2e_latency": latency}}
            for r, x in zip(rewards, ids)
        ]
        return web.json_response(results[0] if single else results)

    async def get_reward(self, request: Any) -> Any:
        """OpenRLHF ``POST /get_reward``: whole texts, tokenized without adding special tokens."""
        from aiohttp import web

        body = await self._json(request)
        if body.get("query") is None:
            raise RequestError(400, "missing 'query': a list of the whole texts to score", field="query")
        texts, _ = self._texts(body["query"], "query")
        ids = await self._tokenize(request, texts, False)
        self._check_ids(ids, "query")
        rewards = await self._score(ids, "/get_reward")
        return web.json_response({"rewards": rewards, "scores": rewards})

    async def rewards(self, request: Any) -> Any:
        """Native ``POST /v1/rewards``: raw samples, encoded here with the client's recipes."""
        from aiohttp import web

        body = await self._json(request)
        samples = body.get("samples")
        if samples is None:
            raise RequestError(400, "missing 'samples': a list of samples (or one sample dict)", field="samples")
        if isinstance(samples, dict):
            samples = [samples]
        if not isinstance(samples, list):
            raise RequestError(400, f"'samples' must be a list of dicts, got {type(samples).__name__}", field="samples")
        self._check_count(len(samples))
        client = self.client

        def encode() -> List[Any]:
            return client.encode_samples(samples)

        encoded = await asyncio.get_running_loop().run_in_executor(self._lane(request), encode)
        ids = [e.ids for e in encoded]
        self._check_ids(ids, "<sample>")
        rewards = await self._score(ids, "/v1/rewards")
        out: Dict[str, Any] = {
            "model": self.served_model_name,
            "rewards": rewards,
            "num_tokens": [len(x) for x in ids],
        }
        if body.get("return_encodings"):
            out["encodings"] = [{"text": e.text, "input_ids": e.ids} for e in encoded]
        return web.json_response(out)

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

        from .metrics import CONTENT_TYPE

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

        from . import __version__

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


class ServerThread:
    """Serve a :class:`RewardServer` from a background thread (tests, notebooks).

        with ServerThread(RewardServer(path)) as s:
            RewardModelClient(path, server_type="sglang", server_address=s.url)(samples)

    ``port=0`` takes a free port; ``url`` is ``http://host:port``.
    """

    def __init__(self, server: RewardServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rmclient-serve", daemon=True)
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        from aiohttp import web

        async def up() -> None:
            self._runner = self.server.runner(access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = int(self._runner.addresses[0][1])

        self._thread.start()
        asyncio.run_coroutine_threadsafe(up(), self._loop).result()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- command line ---------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``rmclient serve``'s arguments to ``parser`` (then call :func:`run_serve`)."""
    parser.add_argument("model", help="model folder or hub id")
    net = parser.add_argument_group("network and safety")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s; 0: a free port)")
    net.add_argument(
        "--api-key", default=None,
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_ENV} if set)",
    )
    net.add_argument(
        "--insecure", action="store_true",
        help="allow binding a non-loopback address without an API key (anyone who can reach it can use it)",
    )
    net.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                     help="largest request body in MiB; larger ones get 413 (default: %(default)s)")
    net.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
                     help="most inputs per request; more get 413 (default: %(default)s)")
    net.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                     help="close a connection that sends no whole request head for this many seconds "
                          "(default: %(default)s)")
    net.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                     help="seconds for a request body to arrive, then 408 (default: %(default)s)")
    model = parser.add_argument_group("model")
    model.add_argument("--served-model-name", default=None, help="name in /v1/models (default: MODEL)")
    model.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code (POLAR)")
    model.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    model.add_argument("--dtype", default=None, help="torch dtype (default: bfloat16 on CUDA, float32 on CPU)")
    model.add_argument("--max-model-len", type=int, default=None,
                       help="longest input in tokens (default: the config's max_position_embeddings)")
    enc = parser.add_argument_group("encoding of raw samples (POST /v1/rewards)")
    enc.add_argument("--recipe", choices=("polar", "chat_template"), default=None,
                     help="default: the model's own (polar for a POLAR model, else chat_template), fixed at startup")
    enc.add_argument("--system-prompt", default=None, help="system turn for the chat-template recipe")
    enc.add_argument("--max-length", type=int, default=None, help="default: min(16384, max_model_len)")
    enc.add_argument("--max-response-length", type=int, default=4096, help="POLAR's response budget")
    enc.add_argument("--response-cut-side", choices=("right", "left"), default="right",
                     help="POLAR: over --max-response-length, right keeps the head (training), left the tail")
    bat = parser.add_argument_group("dynamic batching")
    bat.add_argument("--max-batch-size", type=int, default=32, help="sequences per forward pass (default: %(default)s)")
    bat.add_argument("--max-batch-tokens", type=int, default=16384,
                     help="padded tokens (rows x longest) per forward pass (default: %(default)s)")
    bat.add_argument("--max-wait-ms", type=float, default=5.0,
                     help="how long a request waits for others to share its forward pass (default: %(default)s)")
    bat.add_argument("--max-padding", type=float, default=None,
                     help="cut a merged batch, sorted by length, into forward passes padded by at most this "
                     "fraction (default: 0.1 on CPU, no cut on GPU)")
    parser.add_argument("--log-level", default=None, choices=LEVELS, type=str.lower,
                        help=f"the server's log level (default: ${LOG_LEVEL_ENV} or info)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def require_serve() -> None:
    """What ``rmclient serve`` imports beyond the base install, or a one-line ``MissingDependency``."""
    from .extras import require

    require("aiohttp", "serve", "rmclient serve")
    require("prometheus_client", "serve", "rmclient serve")
    require("torch", "serve", "rmclient serve")


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. Returns the exit code (2 for an unsafe or invalid configuration)."""
    from .extras import MissingDependency

    try:
        require_serve()
    except MissingDependency as exc:
        print(f"rmclient serve: error: {exc}", file=sys.stderr)
        return 2

    level = level_of(args.log_level, "info")
    for name in ("rmclient", "aiohttp.access"):
        logging.getLogger(name).setLevel(level)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and not api_key and not args.insecure:
        logger.error(
            "refusing to bind %s without an API key: anyone who can reach it could use the model. "
            "Pass --api-key (or set %s), bind 127.0.0.1, or force it with --insecure.",
            args.host, API_KEY_ENV,
        )
        return 2
    if not is_loopback(args.host) and not api_key:
        logger.warning("serving on %s with NO API key (--insecure)", args.host)
    try:
        server = RewardServer(
            args.model,
            served_model_name=args.served_model_name,
            api_key=api_key,
            trust_remote_code=args.trust_remote_code,
            device=args.device,
            dtype=args.dtype,
            recipe=args.recipe,
            system_prompt=args.system_prompt,
            max_length=args.max_length,
            max_response_length=args.max_response_length,
            response_cut_side=args.response_cut_side,
            max_model_len=args.max_model_len,
            max_batch_size=args.max_batch_size,
            max_batch_tokens=args.max_batch_tokens,
            max_wait_ms=args.max_wait_ms,
            max_padding=args.max_padding,
            max_samples=args.max_samples,
            max_body_bytes=int(args.max_body_mb * 2**20),
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
        )
    except (RMClientError, OSError, ValueError) as exc:
        logger.error("cannot serve %s: %s", args.model, exc)
        return 2
    access = logging.getLogger("aiohttp.access") if args.access_log else None
    try:
        asyncio.run(_serve(server, args.host, args.port, access))
    except OSError as exc:
        logger.error("cannot serve on %s:%d: %s", args.host, args.port, exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(server: RewardServer, host: str, port: int, access_log: Optional[logging.Logger]) -> None:
    """Load the model, bind, serve until SIGINT/SIGTERM, then drain and clean up."""
    import signal

    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    runner = server.runner(access_log=access_log, handle_signals=False)
    await runner.setup()  # runs on_startup: the model loads before the port is bound
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = ", ".join(f"http://{a[0]}:{a[1]}" if len(a) == 2 else str(a) for a in runner.addresses)
        logger.info(
            "serving %s as %r on %s (max_model_len %d; forward passes of <= %d sequences / %d padded tokens; "
            "wait <= %g ms; API key %s)",
            server.model, server.served_model_name, bound, server.max_model_len, server.batcher.max_batch_size,
            server.batcher.max_tokens, server.batcher.max_wait * 1000.0, "required" if server.api_key else "off",
        )
        await stop.wait()
        logger.info("stopping")
    finally:
        await runner.cleanup()


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m rmclient.serve MODEL [...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m rmclient.serve", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    configure(level_of(args.log_level, "info"))
    return run_serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
