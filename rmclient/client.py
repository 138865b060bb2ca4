"""``RewardModelClient``: encode samples exactly, score them on any backend."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Union

from .data import as_list
from .errors import ConfigurationError
from rmclient.adapters.base import EncodedInput

from .engine_backend import EngineBackend
from .recipes import ChatTemplateRecipe, Encoded, PolarRecipe, select_recipe
from .transport import RetryPolicy

logger = logging.getLogger(__name__)

SERVER_TYPES = ("transformers", "sglang", "vllm", "lmdeploy")
Sample = Dict[str, Any]
Data = Union[Sample, Sequence[Sample]]


def load_config(path: str) -> Dict[str, Any]:
    """The model's raw config.json as a dict (no remote code is run)."""
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(path)
    return config


class RewardModelClient:
    """Score samples with a reward model, in-process or on an inference server.

    Drop-in compatible with xtuner's ``RewardModelClient``: the first six
    arguments keep their names and meaning (``response_cut_side`` defaults to
    ``"right"``, the training rule). Constructing the client loads only the
    tokenizer; the model, or the connection, is opened on first use.

    Args:
        path: model folder or hub id (its tokenizer and config are read).
        max_length: the most token ids one encoded sample may have.
        max_response_length: POLAR's budget for the reference and the output.
        response_cut_side: ``"right"`` keeps a long response's head, ``"left"`` its tail.
        server_type: ``"transformers"`` (in-process), ``"sglang"``, ``"vllm"`` or ``"lmdeploy"``.
        server_address: ``host:port`` or URL of the server (engine backends).
        recipe: ``"polar"`` or ``"chat_template"``; chosen from the model and data when ``None``.
        system_prompt: a system turn for the chat-template recipe (Qwen2.5-Math-RM needs one).
        reward_token_id: override the reward token (default: the config's ``reward_token_id``).
        device, dtype: for the transformers backend (default: CUDA/bf16 when present, else CPU/fp32).
        trust_remote_code: allow the checkpoint's own code (POLAR, InternLM2-Reward).
        batch_size: samples per forward pass (transformers) or per request (engines).
        max_tokens_per_batch: the transformers backend's padded-token budget per forward pass.
        tokenizer: a tokenizer object to use instead of loading the one at ``path``.
        api_key: bearer token for the server.
        connect_timeout, read_timeout: seconds to open a connection / to wait for an answer.
        max_attempts, deadline: retry budget of one request (attempts, seconds).
        engine_version: skip asking the server its version.
        served_model: the served model name (default: read from ``/v1/models``).
    """

    def __init__(
        self,
        path: str,
        max_length: int = 16384,
        max_response_length: int = 4096,
        response_cut_side: str = "right",
        server_type: str = "transformers",
        server_address: Optional[str] = None,
        *,
        recipe: Optional[str] = None,
        system_prompt: Optional[str] = None,
        reward_token_id: Optional[int] = None,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        trust_remote_code: bool = False,
        batch_size: int = 32,
        max_tokens_per_batch: int = 16384,
        tokenizer: Any = None,
        api_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_attempts: int = 5,
        deadline: Optional[float] = 600.0,
        engine_version: Optional[str] = None,
        served_model: Optional[str] = None,
    ) -> None:
        if server_type not in SERVER_TYPES:
            raise ConfigurationError(f"unknown server_type {server_type!r}; choose one of {SERVER_TYPES}")
        from transformers import AutoTokenizer

        self.path = str(path)
        self.max_length = max_length
        self.max_response_length = max_response_length
        self.response_cut_side = response_cut_side
        self.server_type = server_type
        self.server_address = server_address
        self.recipe = recipe
        self.system_prompt = system_prompt
        self.config = load_config(self.path)
        self.reward_token_id = reward_token_id if reward_token_id is not None else self.config.get("reward_token_id")
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
        self._recipes: Dict[Any, Any] = {}
        self._backend_options = dict(
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            batch_size=batch_size,
            max_tokens=max_tokens_per_batch,
        )
        self._engine_options: Dict[str, Any] = dict(
            api_key=api_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=RetryPolicy(attempts=max_attempts, deadline=deadline),
            batch_size=batch_size,
            served_model=served_model,
        )
        self.engine_version = engine_version
        self._engines: Dict[str, Any] = {}
        self._backend: Any = None
        if server_type != "transformers" and not server_address:
            raise ConfigurationError(f"server_type={server_type!r} needs a server_address")

    # -- encoding -----------------------------------------------------------

    def effective_max_length(self) -> int:
        """``max_length``, lowered to the server's ``max_model_len`` once that is known."""
        engine = self._engines.get(self.server_type)
        limit = engine.max_model_len if engine is not None and engine._adapter is not None else None
        return min(self.max_length, limit) if limit else self.max_length

    def _recipe(self, samples: Sequence[Any]) -> Any:
        name = select_recipe(self.recipe, self.path, self.config, samples)
        max_length = self.effective_max_length()
        key = (name, max_length)
        if key not in self._recipes:
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

    def encode_samples(self, data: Data) -> List[Encoded]:
        """Text and exact ids of every sample (always a list)."""
        samples, _ = as_list(data)
        return self._recipe(samples).encode(samples)

    def encode(self, data: Data) -> Union[str, List[str]]:
        """The text form (xtuner's ``encode``): a string for one sample, a list for a list."""
        samples, single = as_list(data)
        texts = [e.text for e in self._recipe(samples).encode(samples)]
        return texts[0] if single else texts

    def encode_ids(self, data: Data) -> Union[List[int], List[List[int]]]:
        """The exact token ids: one list for one sample, a list of lists for a list."""
        samples, single = as_list(data)
        ids = [e.ids for e in self._recipe(samples).encode(samples)]
        return ids[0] if single else ids

    # -- scoring ------------------------------------------------------------

    def engine(self, server_type: str) -> EngineBackend:
        """The connection to ``server_address`` as a ``server_type`` server (created once)."""
        if server_type not in self._engines:
            if not self.server_address:
                raise ConfigurationError(f"{server_type} requests need a server_address")
            version = self.engine_version if server_type == self.server_type else None
            self._engines[server_type] = EngineBackend(
                server_type, self.server_address, engine_version=version, **self._engine_options
            )
        return self._engines[server_type]

    @property
    def backend(self) -> Any:
        """The scoring backend, created on first use (an engine connection asks the server its version)."""
        if self._backend is None:
            if self.server_type == "transformers":
                from .transformers_backend import TransformersBackend

                pad = self.tokenizer.pad_token_id
                self._backend = TransformersBackend(
                    self.path, self.config, pad_token_id=pad if pad is not None else 0, **self._backend_options
                )
            else:
                backend = self.engine(self.server_type)
                backend.adapter  # noqa: B018 - first contact: version, model name, max_model_len
                self._backend = backend
        return self._backend

    def score_ids(self, ids: Sequence[Sequence[int]]) -> List[float]:
        """Raw rewards for already encoded token ids, in input order."""
        return self.backend.score(ids)

    def __call__(self, data: Data) -> Union[float, List[float]]:
        """Raw reward of one sample (a float) or of a list of samples (a list, in input order).

        Samples are sent as exact token ids. Any failure raises; no reward is
        ever replaced by ``None`` or a default.
        """
        samples, single = as_list(data)
        backend = self.backend  # connect first, so the server's max_model_len bounds the encoding
        rewards = backend.score([e.ids for e in self._recipe(samples).encode(samples)])
        return rewards[0] if single else rewards

    score = __call__

    # -- xtuner-compatible engine requests ------------------------------------

    def _request(self, server_type: str, encoded: Union[EncodedInput, Sequence[EncodedInput]]) -> List[float]:
        if isinstance(encoded, (list, tuple)) and not encoded:
            return []
        inputs = [encoded] if isinstance(encoded, str) or _is_ids(encoded) else list(encoded)
        return self.engine(server_type).score(inputs)

    def sglang_request_reward(self, data: Any, **_ignored: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on an sglang server."""
        return self._request("sglang", data)

    def vllm_request_reward(self, data: Any, **_ignored: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on a vLLM server."""
        return self._request("vllm", data)

    def lmdeploy_request_reward(self, data: Any, **_ignored: Any) -> List[float]:
        """Score what :meth:`encode` (text) or :meth:`encode_ids` returned on an lmdeploy server."""
        return self._request("lmdeploy", data)

    def close(self) -> None:
        """Close server connections (the in-process model stays loaded until the client is dropped)."""
        for engine in self._engines.values():
            engine.close()

    def __enter__(self) -> "RewardModelClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and (not x or isinstance(x[0], int))
