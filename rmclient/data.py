"""Validate and normalise input samples.

Two shapes are accepted:

* POLAR: ``{"prompt", "reference", "output"[, "wrapper": "sft" | "pretrain"]}``
* outcome RM: ``{"prompt", "output"}`` or ``{"messages": [...]}``

``prompt``, ``reference`` and ``output`` are each a string or a list of
``{"role", "content"}`` messages. Keys other than these are ignored, so a
dataset row can be passed as it is. Every problem raises
:class:`~rmclient.errors.InvalidSampleError` naming the sample index and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from .errors import InvalidSampleError

Message = Dict[str, str]
Content = Union[str, Sequence[Mapping[str, Any]]]
WRAPPERS = ("sft", "pretrain")


@dataclass(frozen=True)
class PolarSample:
    """A POLAR sample, each piece already flattened to text."""

    prompt: str
    reference: str
    output: str
    wrapper: str = "sft"


@dataclass(frozen=True)
class ChatSample:
    """An outcome-RM sample: the whole conversation, ending with the scored assistant turn."""

    messages: Tuple[Message, ...]


def as_list(data: Any) -> Tuple[List[Any], bool]:
    """``(samples, single)``: a dict becomes a one-item list with ``single=True``."""
    if isinstance(data, (list, tuple)):  # plain types first: an ABC check costs more than the rest of a call
        return list(data), False
    if isinstance(data, (dict, Mapping)):
        return [data], True
    raise InvalidSampleError(0, "<sample>", f"expected a dict or a list of dicts, got {type(data).__name__}")


def check_text(index: int, field: str, value: str) -> str:
    """``value`` if it is text a tokenizer can encode (no lone surrogate such as ``"\\ud800"``, which
    JSON allows); :class:`InvalidSampleError` naming the field otherwise."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidSampleError(
            index, field, f"not valid Unicode text: {value[exc.start]!r} at position {exc.start} is a lone surrogate"
        ) from None
    return value


def _messages(
    index: int, field: str, value: Any, *, need_role: bool, default_role: str = "user"
) -> List[Message]:
    if isinstance(value, str):
        return [{"role": default_role, "content": check_text(index, field, value)}]
    if not isinstance(value, (list, tuple)):
        raise InvalidSampleError(
            index, field, f"expected a string or a list of messages, got {type(value).__name__}"
        )
    out: List[Message] = []
    for j, m in enumerate(value):
        where = f"{field}[{j}]"
        if not isinstance(m, Mapping):
            raise InvalidSampleError(index, where, f"a message must be a dict, got {type(m).__name__}")
        if "content" not in m:
            raise InvalidSampleError(index, f"{where}.content", "missing")
        if not isinstance(m["content"], str):
            raise InvalidSampleError(
                index, f"{where}.content", f"expected a string, got {type(m['content']).__name__}"
            )
        check_text(index, f"{where}.content", m["content"])
        role = m.get("role")
        if role is None and need_role:
            raise InvalidSampleError(index, f"{where}.role", "missing")
        if role is not None and not isinstance(role, str):
            raise InvalidSampleError(index, f"{where}.role", f"expected a string, got {type(role).__name__}")
        if role is not None:
            check_text(index, f"{where}.role", role)
        out.append({"role": role or default_role, "content": m["content"]})
    return out


def _text(index: int, field: str, value: Any) -> str:
    """POLAR's flattening: contents joined with "\\n", roles dropped."""
    if isinstance(value, str):
        return check_text(index, field, value)
    return "\n".join(m["content"] for m in _messages(index, field, value, need_role=False))


def _check_mapping(index: int, sample: Any) -> Mapping[str, Any]:
    if not isinstance(sample, Mapping):
        raise InvalidSampleError(index, "<sample>", f"expected a dict, got {type(sample).__name__}")
    return sample


#: Keys other datasets use for a field: named in the error when the field is missing.
_ALIASES = {
    "output": ("response", "completion", "answer", "generation"),
    "prompt": ("question", "query", "instruction", "input"),
    "reference": ("ground_truth", "label", "gold", "target"),
}


def _require(index: int, sample: Mapping[str, Any], field: str, why: str = "missing") -> Any:
    if field not in sample or sample[field] is None:
        alias = next((a for a in _ALIASES.get(field, ()) if a in sample), None)
        raise InvalidSampleError(index, field, why + (f" (the sample has {alias!r}: did you mean {field!r}?)" if alias else ""))
    return sample[field]


def to_polar(index: int, sample: Any) -> PolarSample:
    """Validate one POLAR sample."""
    s = _check_mapping(index, sample)
    if "messages" in s and "prompt" not in s:
        raise InvalidSampleError(index, "messages", "POLAR samples take prompt/reference/output, not messages")
    prompt = _text(index, "prompt", _require(index, s, "prompt"))
    reference = _text(
        index, "reference", _require(index, s, "reference", "missing: a POLAR model scores an output against a reference")
    )
    output = _text(index, "output", _require(index, s, "output"))
    wrapper = s.get("wrapper", "sft")
    if wrapper not in WRAPPERS:
        raise InvalidSampleError(index, "wrapper", f"must be one of {WRAPPERS}, got {wrapper!r}")
    return PolarSample(prompt, reference, output, wrapper)


def to_chat(index: int, sample: Any) -> ChatSample:
    """Validate one outcome-RM sample into the full conversation to score."""
    s = _check_mapping(index, sample)
    if s.get("reference") is not None:
        raise InvalidSampleError(
            index, "reference", "this model's recipe takes no reference; use recipe='polar' for POLAR models"
        )
    if "messages" in s:
        if "output" in s or "prompt" in s:
            raise InvalidSampleError(index, "messages", "give either messages or prompt + output, not both")
        if isinstance(s["messages"], str):
            raise InvalidSampleError(index, "messages", "expected a list of messages, got a string")
        msgs = _messages(index, "messages", _require(index, s, "messages"), need_role=True)
        if not msgs:
            raise InvalidSampleError(index, "messages", "empty conversation")
        if msgs[-1]["role"] != "assistant":
            raise InvalidSampleError(
                index, f"messages[{len(msgs) - 1}].role", "the last message must be the assistant output to score"
            )
        return ChatSample(tuple(msgs))
    msgs = _messages(index, "prompt", _require(index, s, "prompt"), need_role=True)
    output = _messages(index, "output", _require(index, s, "output"), need_role=False, default_role="assistant")
    if not output:  # an empty *string* is a real, empty answer; an empty list is no answer at all
        raise InvalidSampleError(index, "output", "empty: the assistant turn to score is missing")
    if output[-1]["role"] != "assistant":
        raise InvalidSampleError(
            index, f"output[{len(output) - 1}].role",
            f"the output must end with the assistant turn to score, got {output[-1]['role']!r}",
        )
    msgs.extend(output)
    return ChatSample(tuple(msgs))


@dataclass(frozen=True)
class StepSample:
    """A process-reward sample: the prompt (a user turn), the steps, and the output text they tile.

    ``starts[k]`` is where step ``k`` begins in ``output`` (the spans of :func:`to_steps`).
    """

    prompt: Tuple[Message, ...]
    steps: Tuple[str, ...]
    output: str
    starts: Tuple[int, ...]

    @property
    def spans(self) -> List[Tuple[int, int]]:
        """Each step's ``(start, end)`` characters in :attr:`output`."""
        return [(a, a + len(step)) for a, step in zip(self.starts, self.steps)]


#: The separator between steps of an ``output`` when a sample gives none (Qwen2.5-Math-PRM's usage).
STEP_SEPARATOR = "\n\n"


def to_steps(index: int, sample: Any) -> StepSample:
    """Validate one process-reward sample: ``{prompt, steps: [str, ...][, step_separator]}`` or
    ``{prompt, output, step_separator}``.

    With ``steps``, the output is ``step_separator.join(steps)`` (default ``"\n\n"``); with
    ``output``, the steps are its non-empty pieces between separators. Either way each step's span
    is exactly its text in the output.
    """
    s = _check_mapping(index, sample)
    prompt = _messages(index, "prompt", _require(index, s, "prompt"), need_role=True)
    if not prompt:
        raise InvalidSampleError(index, "prompt", "empty: a process-reward sample needs the question")
    separator = s.get("step_separator", STEP_SEPARATOR)
    if not isinstance(separator, str) or not separator:
        raise InvalidSampleError(index, "step_separator", f"expected a non-empty string, got {separator!r}")
    if s.get("steps") is not None:
        if s.get("output") is not None:
            raise InvalidSampleError(index, "steps", "give either steps or output + step_separator, not both")
        steps = s["steps"]
        if isinstance(steps, str) or not isinstance(steps, (list, tuple)):
            raise InvalidSampleError(index, "steps", f"expected a list of strings, got {type(steps).__name__}")
        starts, at = [], 0
        for k, step in enumerate(steps):
            if not isinstance(step, str):
                raise InvalidSampleError(index, f"steps[{k}]", f"expected a string, got {type(step).__name__}")
            if not step.strip():
                raise InvalidSampleError(index, f"steps[{k}]", "empty: every step is scored, so each needs text")
            check_text(index, f"steps[{k}]", step)
            starts.append(at)
            at += len(step) + len(separator)
        output = separator.join(steps)
    else:
        output = _require(index, s, "output", "missing: a process-reward sample has steps or an output")
        if not isinstance(output, str):
            raise InvalidSampleError(index, "output", f"expected a string, got {type(output).__name__}")
        check_text(index, "output", output)
        steps, starts, at = [], [], 0
        for piece in output.split(separator):
            if piece.strip():
                steps.append(piece)
                starts.append(at)
            at += len(piece) + len(separator)
    if not steps:
        raise InvalidSampleError(index, "steps", "no steps: a process-reward sample needs at least one")
    return StepSample(tuple(prompt), tuple(steps), output, tuple(starts))


def has_reference(samples: Sequence[Any]) -> bool:
    """Whether any sample carries a ``reference`` (which means POLAR)."""
    return any(isinstance(s, Mapping) and s.get("reference") is not None for s in samples)
