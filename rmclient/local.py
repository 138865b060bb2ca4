"""In-process scoring with transformers (the local scorer of the client and of `rmclient serve`): token ids in, raw rewards out."""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from .errors import ConfigurationError, InvalidSampleError, ResponseError
from .extras import require
from .modelinfo import context_length

logger = logging.getLogger(__name__)

#: Device -> the one thread that runs forward passes on it (:attr:`TransformersBackend.thread`).
_THREADS: Dict[str, concurrent.futures.Executor] = {}
_THREADS_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads: its models get threads of their own."""
    global _THREADS_LOCK
    _THREADS.clear()
    _THREADS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
#: Attribute names of per-token score heads (Llama/Qwen2/Gemma seq-cls, InternLM2 reward).
_HEAD_NAMES = ("score", "v_head", "classifier")


def plan_batches(
    lengths: Sequence[int], max_tokens: int, batch_size: int, max_padding: float = 1.0
) -> List[List[int]]:
    """Group indices into batches, longest first, so ``rows * longest <= max_tokens``.

    A single sample longer than ``max_tokens`` still gets a batch of its own.
    With ``max_padding < 1`` a batch is also cut where the next sequence would
    make its padding (``rows * longest - real tokens``) exceed ``max_padding``
    of its padded size ``rows * longest`` (on CPU a forward costs the same per
    token at any batch size, so padding is pure waste).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: List[List[int]] = []
    current: List[int] = []
    real = 0
    for i in order:
        if current:
            padded = (len(current) + 1) * lengths[current[0]]
            if (
                len(current) >= batch_size
                or padded > max_tokens
                or padded - (real + lengths[i]) > max_padding * padded
            ):
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


class TransformersBackend:
    """Loads a reward model on first use and scores token ids.

    ``*ForSequenceClassification`` checkpoints load with
    ``AutoModelForSequenceClassification``; remote-code reward models
    (``InternLM2ForRewardModel``, POLAR) with ``AutoModel`` and
    ``trust_remote_code``. CUDA (bf16) is used when present, else CPU (fp32).
    The score is read at the last real token whatever the padding side.

    ``max_padding``: cut batches whose padding would exceed this fraction of
    their padded size (see :func:`plan_batches`; ``1.0``: no cut; ``None``:
    no padding at all on CPU, where a padded batch takes the masked attention path
    (measured: 2% padding halves the throughput of the benchmark's tiny model; equal
    lengths still share a pass), no cut elsewhere). Forward passes called through
    :attr:`thread` run on one thread per device: PyTorch's CPU thread pool (OpenMP)
    belongs to the thread that calls it, and passes from changing threads ran 1.6x
    slower. ``batch_invariant``: one sequence per forward
    pass, so that a reward does not depend on which other samples are scored with
    it (padding and even the batch size move float32 results by ~1e-5); on a CPU
    that costs next to nothing, on a GPU it is slow (``None``: on CPU only). A reward
    that is not finite (NaN, inf) raises :class:`~rmclient.errors.ResponseError`
    naming the samples.
    """

    def __init__(
        self,
        path: str,
        config: Dict[str, Any],
        *,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        trust_remote_code: bool = False,
        batch_size: int = 32,
        max_tokens: int = 16384,
        padding_side: str = "right",
        pad_token_id: int = 0,
        max_padding: Optional[float] = 1.0,
        batch_invariant: Optional[bool] = False,
        token_columns: Optional[Sequence[int]] = None,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ConfigurationError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.path = path
        self.config = config
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.padding_side = padding_side
        self.pad_token_id = pad_token_id
        self.max_padding = max_padding
        self.batch_invariant = batch_invariant
        #: A ``*ForCausalLM`` scored by the LM head's logits of these token ids (Math-Shepherd PRMs).
        self.token_columns = list(token_columns) if token_columns is not None else None
        self.forward_passes = 0  # forward passes run (batches of plan_batches)
        self._device: Optional[str] = None
        self._model: Any = None
        self._captured: List[Any] = []
        self._lock = threading.Lock()  # one forward pass at a time: the head hook's capture is shared

    @property
    def thread(self) -> concurrent.futures.Executor:
        """The thread for scoring off an event loop: one per device for the whole process (see the class
        docstring; a second model on the same CPU with a thread of its own ran 1.7x slower)."""
        device = self._device or self.device or self._default_device()
        with _THREADS_LOCK:
            if device not in _THREADS:
                _THREADS[device] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"rmclient-{device}")
            return _THREADS[device]

    @staticmethod
    def _default_device() -> str:
        torch = require("torch", "transformers", "in-process scoring (server_type='transformers')")
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def model(self) -> Any:
        """The loaded model (loaded on first access)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        torch = require("torch", "transformers", "in-process scoring (server_type='transformers')")
        import transformers

        device = self.device or self._default_device()
        dtype = self.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        archs = self.config.get("architectures") or []
        kwargs = {"dtype": getattr(torch, dtype), "trust_remote_code": self.trust_remote_code}
        if any(a.endswith("ForSequenceClassification") for a in archs):
            model = transformers.AutoModelForSequenceClassification.from_pretrained(self.path, **kwargs)
        elif self.token_columns is not None:
            model = transformers.AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
        else:
            if not self.trust_remote_code and "auto_map" in self.config:
                raise ConfigurationError(
                    f"{self.path} ({', '.join(archs)}) needs its own modeling code: pass trust_remote_code=True"
                )
            model = transformers.AutoModel.from_pretrained(self.path, **kwargs)
        model.to(device).eval()
        self._device = device
        names = ("lm_head",) if self.token_columns is not None else _HEAD_NAMES
        head = next((getattr(model, n) for n in names if hasattr(model, n)), None)
        if head is not None:
            head.register_forward_hook(lambda _m, _i, out: self._captured.append(out))
        elif archs and type(model).__name__ not in archs:
            raise ConfigurationError(
                f"{self.path} declares {', '.join(archs)} but transformers loaded {type(model).__name__}, "
                "which has no reward head: the checkpoint ships no modeling code for it (no auto_map "
                "AutoModel entry). Serve it with an engine that implements the architecture (vLLM, lmdeploy)"
            )
        else:
            logger.warning("no score head found on %s; reading the model's pooled output", type(model).__name__)
        logger.info("loaded %s on %s (%s)", type(model).__name__, device, dtype)
        return model

    def score(
        self, ids: Sequence[Sequence[int]], on_batch: Optional[Callable[[List[int], List[Any]], None]] = None,
        names: Optional[Sequence[int]] = None, output: str = "reward",
    ) -> List[Any]:
        """Raw rewards for each id sequence, in input order; ``on_batch(positions, values)`` after each
        forward pass with the finite values it gave (positions in ``ids``), so a caller can use them at once.
        ``names``: the samples' indices in the caller's input, for error messages (default: positions).
        ``output`` (``adapters.base.OUTPUTS``): ``"reward"`` a float each, ``"vector"`` every label at the
        last token, ``"tokens"`` every label at every token."""
        if not ids:
            return []
        vocab = self.config.get("vocab_size")
        longest = context_length(self.config)
        for i, x in enumerate(ids):
            if not x:
                raise InvalidSampleError(i, "input_ids", "empty")
            if longest and len(x) > longest:
                raise InvalidSampleError(i, "input_ids", f"{len(x)} tokens exceed the model's context of {longest}")
            if vocab and (min(x) < 0 or max(x) >= vocab):
                raise InvalidSampleError(i, "input_ids", f"ids must be in [0, {vocab}), got {min(x)}..{max(x)}")
        lengths = [len(x) for x in ids]
        rewards: List[Any] = [0.0] * len(ids)
        with self._lock:
            self.model  # noqa: B018 - load first: the padding limit depends on the device
            if self._invariant():
                batches = [[i] for i in sorted(range(len(ids)), key=lambda i: -lengths[i])]
            else:
                batches = plan_batches(lengths, self.max_tokens, self.batch_size, self._padding_limit())
        for batch in batches:
            with self._lock:  # one forward pass at a time; concurrent calls take turns between passes
                self.forward_passes += 1
                out = self._forward([ids[i] for i in batch], output)
            for i, r in zip(batch, out):
                rewards[i] = r
            if on_batch is not None:  # outside the lock: a slow callback holds up no one else
                done = [i for i in batch if _finite(rewards[i])]
                on_batch(done, [rewards[i] for i in done])
        bad = [i for i, r in enumerate(rewards) if not _finite(r)]
        if bad:
            shown = ", ".join(f"{names[i] if names is not None else i} ({_nonfinite(rewards[i])})" for i in bad)
            raise ResponseError(
                f"transformers:{self.path}", f"the model gave a non-finite reward for sample(s) {shown}",
                [rewards[i] for i in bad],
            )
        return rewards

    def _invariant(self) -> bool:
        if self.batch_invariant is not None:
            return self.batch_invariant
        return str(self._device or "cpu").startswith("cpu")

    def _padding_limit(self) -> float:
        if self.max_padding is not None:
            return self.max_padding
        return 0.0 if str(self._device or "cpu").startswith("cpu") else 1.0

    def _forward(self, seqs: Sequence[Sequence[int]], output: str = "reward") -> List[Any]:
        import torch

        model = self.model
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        last = torch.empty(len(seqs), dtype=torch.long)
        for row, s in enumerate(seqs):
            lo = 0 if self.padding_side == "right" else width - len(s)
            input_ids[row, lo : lo + len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, lo : lo + len(s)] = 1
            last[row] = lo + len(s) - 1
        self._captured.clear()
        with torch.inference_mode():
            out = model(input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device))
        per_token = self._captured[-1] if self._captured else None
        if per_token is not None and per_token.dim() == 3:  # [batch, seq, labels]
            if self.token_columns is not None:
                per_token = per_token[:, :, self.token_columns]
            if output == "tokens":
                rows = per_token.float().cpu()
                return [rows[r, int(last[r]) - len(s) + 1 : int(last[r]) + 1].tolist() for r, s in enumerate(seqs)]
            values = per_token[torch.arange(len(seqs)), last.to(per_token.device)]  # the last real token
        else:
            if output == "tokens":
                raise ConfigurationError(f"{type(model).__name__} gives one value per sequence, not per token")
            pooled = per_token if per_token is not None else _pooled_output(out)
            values = pooled.reshape(len(seqs), -1)
        values = values.float().cpu()
        if output == "reward" and values.shape[-1] != 1:  # the head's real width, not the config's claim
            raise ConfigurationError(
                f"{self.path}'s head gives {values.shape[-1]} values per sample: score it with score_vector() (or "
                "client(data, reduce=..., weights=...)) for one float"
            )
        return values.tolist() if output == "vector" else values[:, 0].tolist()


def _nonfinite(value: Any) -> Any:
    """The first value that is not finite (a whole per-token matrix would flood the message)."""
    if isinstance(value, list):
        return next(_nonfinite(v) for v in value if not _finite(v))
    return value


def _finite(value: Any) -> bool:
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return math.isfinite(value)


def _pooled_output(out: Any) -> Any:
    for name in ("logits", "rewards", "scores"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "reshape"):
        return out
    raise ConfigurationError(
        f"the model returned {type(out).__name__} with no logits, rewards or scores: cannot read a reward from it"
    )
