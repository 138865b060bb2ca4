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

from .app import RewardServer
from ..transport import API_KEY_ENV
from .auth import is_loopback
from .cli import DESCRIPTION, EPILOG, add_serve_arguments, main, run_serve
from .deps import require_serve
from .errors import RequestError
from .thread import ServerThread

__all__ = [
    "RewardServer",
    "ServerThread",
    "RequestError",
    "add_serve_arguments",
    "run_serve",
    "main",
    "is_loopback",
    "API_KEY_ENV",
    "require_serve",
    "DESCRIPTION",
    "EPILOG",
]
