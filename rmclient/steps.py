"""Process reward models: the step formats they were trained on, their encoding, and step rewards.

A process reward model (PRM) scores every step of a solution: the sample's steps
are laid out in the model's training format with a separator token after each
step, and the step's reward is read at that token. Two formats exist:

* ``qwen_prm`` (Qwen2.5-Math-PRM, ``Qwen2ForProcessRewardModel``): the chat
  template over a system prompt, the user turn and the assistant turn
  ``"<extra_0>".join(steps) + "<extra_0>"``; a two-label head, and the step
  reward is ``softmax(logits)[1]`` at each ``<extra_0>``.
* ``math_shepherd`` (Math-Shepherd-style ``*ForCausalLM`` PRMs): plain text
  ``prompt + " " + " ки\\n".join(steps) + " ки"`` with BOS; the step reward is
  the softmax over the LM logits of ``"+"`` and ``"-"`` at each ``ки``, ``P("+")``.

:class:`StepRecipe` encodes :class:`~rmclient.data.StepSample` s into exact ids and
the positions of their step tokens; a chain longer than ``max_length`` keeps its
prompt and the steps that fit, and says which steps were cut (their reward is
``None``, never a made-up number). :func:`step_rewards` turns per-token head
outputs into :class:`StepRewards`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .batch_tokenizer import BatchTokenizer
from .data import StepSample, to_steps
from .errors import ConfigurationError, InvalidSampleError, ResponseError
from .preference import softmax
from .recipes import adds_bos

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class StepFormat:
    """How one family of process reward models sees a chain of steps."""

    name: str
    #: The text after each step; it must be one token, whose head output is the step's reward.
    separator: str
    #: The column of "good" among the head's labels (or among ``returned_tokens``).
    positive: int
    #: Rendered with the chat template (with ``system_prompt``), else as plain text.
    chat: bool = True
    system_prompt: Optional[str] = None
    #: What goes between a step and the next one's separator-free text in plain-text formats.
    joiner: str = ""
    #: LM-head PRMs: the tokens whose logits are the classes (``("+", "-")``); ``None``: a classifier head.
    returned_tokens: Optional[Tuple[str, ...]] = None


FORMATS: Dict[str, StepFormat] = {
    "qwen_prm": StepFormat("qwen_prm", "<extra_0>", positive=1, system_prompt=QWEN_PRM_SYSTEM),
    "math_shepherd": StepFormat(
        "math_shepherd", " ки", positive=0, chat=False, joiner="\n", returned_tokens=("+", "-"),
    ),
}
#: Architectures whose checkpoints are PRMs of a known format.
ARCHITECTURES = {"Qwen2ForProcessRewardModel": "qwen_prm"}


def step_format(name: Optional[str], path: str, config: Mapping[str, Any]) -> Optional[StepFormat]:
    """The step format of a model: ``name`` if given (a key of :data:`FORMATS`), else from its
    architecture, else ``math_shepherd`` for a checkpoint named so; ``None``: not a PRM."""
    if name is not None:
        if name not in FORMATS:
            raise ConfigurationError(f"unknown step format {name!r}; choose one of {sorted(FORMATS)}")
        return FORMATS[name]
    archs = config.get("architectures") or []
    for arch in archs:
        if arch in ARCHITECTURES:
            return FORMATS[ARCHITECTURES[arch]]
    names = f"{path} {config.get('_name_or_path', '')}".lower()
    if "shepherd" in names and any(a.endswith("ForCausalLM") for a in archs):
        return FORMATS["math_shepherd"]
    return None


@dataclass(frozen=True)
class StepEncoded:
    """One encoded process-reward sample."""

    #: The exact ids the model sees; ``text`` is their string form (without a leading BOS).
    ids: List[int]
    text: str
    sample: StepSample
    #: The position in ``ids`` of each step's separator token; only the steps that fit (the first ones).
    positions: List[int]

    @property
    def cut_steps(self) -> List[int]:
        """The steps that did not fit in ``max_length`` (the last ones)."""
        return list(range(len(self.positions), len(self.sample.steps)))

    @property
    def truncated(self) -> bool:
        return len(self.positions) < len(self.sample.steps)


class StepRecipe:
    """Encoding of process-reward samples in a :class:`StepFormat` (see the module docstring)."""

    name = "steps"

    def __init__(self, tokenizer: Any, fmt: StepFormat, *, max_length: int = 16384,
                 system_prompt: Optional[str] = None) -> None:
        self.tokenizer = tokenizer
        self.format = fmt
        self.max_length = max_length
        self.system_prompt = system_prompt if system_prompt is not None else fmt.system_prompt
        self._tok = BatchTokenizer(tokenizer)
        self._bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
        self.separator_id = _one_token(tokenizer, fmt.separator.strip(), "separator")
        #: The vocabulary ids of ``returned_tokens`` (LM-head PRMs), in order.
        self.token_columns: Optional[List[int]] = (
            [_one_token(tokenizer, t, "returned token") for t in fmt.returned_tokens] if fmt.returned_tokens else None
        )
        if fmt.chat and not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError(f"the {fmt.name} step format needs the tokenizer's chat template; it has none")

    def validate(self, samples: Sequence[Any], start: int = 0) -> List[StepSample]:
        out = []
        mark = self.format.separator.strip()
        for i, sample in enumerate(samples):
            s = to_steps(start + i, sample)
            for m in s.prompt:
                if mark in m["content"]:
                    raise InvalidSampleError(start + i, "prompt", f"contains the step separator {mark!r}")
            for k, step in enumerate(s.steps):
                if mark in step:
                    raise InvalidSampleError(start + i, f"steps[{k}]", f"contains the step separator {mark!r}")
            out.append(s)
        return out

    def encode(self, samples: Sequence[Any], start: int = 0) -> List[StepEncoded]:
        """Validate and encode ``samples``; error indices count from ``start``."""
        valid = self.validate(samples, start)
        texts = [self._render(start + i, s) for i, s in enumerate(valid)]
        out = []
        for i, (s, text, ids) in enumerate(zip(valid, texts, self._tok.encode(texts, False))):
            ids = self._bos + ids if self._bos and ids[:1] != self._bos else ids
            out.append(self._fit(start + i, s, text, ids))
        return out

    def _render(self, index: int, s: StepSample) -> str:
        fmt = self.format
        if not fmt.chat:
            user = "\n".join(m["content"] for m in s.prompt)
            return f"{user} " + (fmt.separator + fmt.joiner).join(s.steps) + fmt.separator
        messages = [dict(m) for m in s.prompt]
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        messages.append({"role": "assistant", "content": fmt.separator.join(s.steps) + fmt.separator})
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        except Exception as exc:  # jinja2 errors, raise_exception() in templates
            raise InvalidSampleError(index, "prompt", f"the chat template rejected it: {exc}") from exc

    def _fit(self, index: int, s: StepSample, text: str, ids: List[int]) -> StepEncoded:
        positions = [k for k, t in enumerate(ids) if t == self.separator_id]
        if len(positions) != len(s.steps):
            raise InvalidSampleError(
                index, "steps", f"{len(s.steps)} steps but {len(positions)} {self.format.separator.strip()!r} tokens "
                "after encoding (the chat template or the tokenizer merged or dropped a separator)",
            )
        kept = [p for p in positions if p < self.max_length]
        if not kept:
            raise InvalidSampleError(
                index, "steps[0]", f"the prompt and the first step take {positions[0] + 1} tokens, more than "
                f"max_length={self.max_length}: no step can be scored",
            )
        if len(ids) > self.max_length:  # keep the prompt and the steps that fit, whole; the template's tail
            ids = ids[: kept[-1] + 1]     # after the last step cannot change the logits at the step tokens
            text = self.tokenizer.decode(ids[len(self._bos):], skip_special_tokens=False)
        bos = self.tokenizer.bos_token
        if self._bos and bos and text.startswith(bos):  # the text form is for a server that adds BOS itself
            text = text[len(bos):]
        return StepEncoded(ids, text, s, kept)


def _one_token(tokenizer: Any, text: str, what: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigurationError(f"the step format's {what} {text!r} is {len(ids)} tokens in this tokenizer, not one")
    return int(ids[0])


# -- rewards -----------------------------------------------------------------------------

#: One float from a chain's step rewards, for trainers that take one.
AGGREGATES: Dict[str, Callable[[List[float]], float]] = {
    "min": min,
    "last": lambda r: r[-1],
    "mean": lambda r: sum(r) / len(r),
    "prod": math.prod,
}


@dataclass(frozen=True)
class StepRewards:
    """One chain's process rewards: one entry per step, always.

    ``rewards[k]`` is step ``k``'s probability of being correct, or ``None`` for a step in
    ``cut`` (it did not fit in ``max_length``); ``spans[k]`` is its ``(start, end)`` in the
    output text; ``aggregate`` combines the scored steps (see :data:`AGGREGATES`).
    """

    rewards: List[Optional[float]]
    spans: List[Tuple[int, int]]
    aggregate: float
    cut: List[int]
    num_tokens: int

    @property
    def truncated(self) -> bool:
        return bool(self.cut)


def check_aggregate(aggregate: str) -> Callable[[List[float]], float]:
    if aggregate not in AGGREGATES:
        raise ConfigurationError(f"aggregate must be one of {sorted(AGGREGATES)}, got {aggregate!r}")
    return AGGREGATES[aggregate]


def step_rewards(
    encoded: StepEncoded, rows: Sequence[Sequence[float]], positive: int, aggregate: str, where: str = "",
) -> StepRewards:
    """The :class:`StepRewards` of one sample from its raw head outputs ``rows``: one row of class
    logits per id, or one per step token (an engine pooling the step tokens only, as vLLM's STEP
    pooling before 0.10); the softmax's ``positive`` column at each step."""
    if len(rows) == len(encoded.positions) != len(encoded.ids):
        rows = {p: r for p, r in zip(encoded.positions, rows)}  # type: ignore[assignment]
    elif len(rows) != len(encoded.ids):
        raise ResponseError(where, f"{len(rows)} rows of values for {len(encoded.ids)} tokens and "
                            f"{len(encoded.positions)} steps", None)
    width = len(rows[encoded.positions[0]])
    if width < 2 or positive >= width:
        raise ResponseError(where, f"the head gives {width} value(s) per token; a PRM gives one per class (2)", None)
    scored = [softmax(rows[p])[positive] for p in encoded.positions]
    rewards: List[Optional[float]] = list(scored) + [None] * len(encoded.cut_steps)
    return StepRewards(rewards, encoded.sample.spans, check_aggregate(aggregate)(scored), encoded.cut_steps,
                       len(encoded.ids))


def failed_steps(encoded: StepEncoded) -> StepRewards:
    """The :class:`StepRewards` of a sample that failed under ``on_error="nan"`` (the caller's choice):
    NaN for every step that was sent, ``None`` for the cut ones."""
    kept = len(encoded.positions)
    rewards: List[Optional[float]] = [math.nan] * kept + [None] * len(encoded.cut_steps)
    return StepRewards(rewards, encoded.sample.spans, math.nan, encoded.cut_steps, len(encoded.ids))


def step_results(encoded: Sequence[StepEncoded], rows: Sequence[Any], positive: int, aggregate: str,
                 where: str = "") -> List[Optional[StepRewards]]:
    """:func:`step_rewards` of each sample; a NaN row (``on_error="nan"``) gives :func:`failed_steps`,
    a missing one (``None``: a failure inside :class:`~rmclient.errors.ScoringError`) ``None``."""
    out: List[Optional[StepRewards]] = []
    for e, r in zip(encoded, rows):
        if r is None:
            out.append(None)
        elif isinstance(r, float):
            out.append(failed_steps(e))
        else:
            out.append(step_rewards(e, r, positive, aggregate, where))
    return out
