"""What the trainer hooks share: the sample shapes trainers hand us, and settings by name.

Scorers (clients, compositions, functions) are called through :class:`rmclient.scorer.Target`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..errors import ConfigurationError, InvalidSampleError
from ..scorer import Target

Sample = Dict[str, Any]

def strip_think(text: str) -> str:
    """The answer after the reasoning: what follows the last ``</think>``, stripped of surrounding whitespace.

    Text without ``</think>`` is returned unchanged. The opening ``<think>`` is not
    needed: chat templates that end the prompt with ``<think>\\n`` leave only
    ``...</think>answer`` in the completion. For a full ``<think>...</think>answer``
    this is what POLAR's verl recipe extracts.
    """
    _, sep, answer = text.rpartition("</think>")
    return answer.strip() if sep else text


def plain(value: Any) -> Any:
    """numpy arrays (verl's parquet columns) and tuples become lists, recursively; mappings become dicts."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def text_content(index: int, field: str, value: Any) -> Any:
    """A string, or a list of messages whose ``content`` is a string.

    Content given as parts (``[{"type": "text", "text": ...}]``, as TRL and
    OpenAI-style VLM data carry it) is joined into one string; a part that is
    not text cannot be scored by a text reward model and is an error.
    """
    value = plain(value)
    if not isinstance(value, list):
        return value
    out = []
    for j, message in enumerate(value):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            texts = []
            for k, part in enumerate(message["content"]):
                if isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif isinstance(part, str):
                    texts.append(part)
                else:
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise InvalidSampleError(
                        index, f"{field}[{j}].content[{k}]", f"a {kind!r} part cannot be scored by a text reward model"
                    )
            message = {**message, "content": "".join(texts)}
        out.append(message)
    return out


def strip_think_in(value: Any) -> Any:
    """:func:`strip_think` on a string, or on every assistant message of a list of messages."""
    if isinstance(value, str):
        return strip_think(value)
    if isinstance(value, list):
        return [
            {**m, "content": strip_think(m["content"])}
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant" and isinstance(m.get("content"), str)
            else m
            for m in value
        ]
    return value


def group_ids_by_prompt(prompts: Sequence[Any]) -> List[int]:
    """Samples with the same prompt share a group id (first appearance order)."""
    ids: Dict[str, int] = {}
    return [ids.setdefault(repr(plain(p)), len(ids)) for p in prompts]


def missing_reference(column: Optional[str], available: Sequence[str], where: str) -> ConfigurationError:
    cols = ", ".join(sorted(available)) or "none"
    if column is None:
        return ConfigurationError(f"this reward model is POLAR and needs a reference, but {where} was set to None")
    return ConfigurationError(
        f"this reward model is POLAR and scores each output against a reference, but there is no {column!r} "
        f"column (columns: {cols}); name the column that holds it with {where}="
    )


def resolve_references(
    target: Target, columns: Mapping[str, Any], column: Optional[str], n: int, *, setting: str
) -> Optional[List[Any]]:
    """The reference of each of ``n`` samples, from ``columns[column]``; ``None`` when the scorer takes none.

    The column must hold one value per sample. A scorer that needs references (a POLAR
    client) without the column is a :class:`~rmclient.ConfigurationError` naming
    ``setting``, the option that names the column; see :meth:`Target.wants_reference`
    for a client that cannot tell.
    """
    values = columns.get(column) if column is not None else None
    if values is None:
        if target.needs_reference():
            raise missing_reference(column, list(columns), setting)
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ConfigurationError(
            f"the reference column {column!r} holds a {type(values).__name__}, not one value per completion"
        )
    if len(values) != n:
        raise ConfigurationError(
            f"the reference column {column!r} has {len(values)} values for {n} completions: it needs one per "
            f"completion (name another column with {setting}=)"
        )
    values = list(values)
    return values if target.wants_reference(any(v is not None for v in values)) else None


def build_samples(
    prompts: Sequence[Any],
    outputs: Sequence[Any],
    references: Optional[Sequence[Any]] = None,
    *,
    strip_think: bool = False,
) -> List[Sample]:
    """rmclient samples ``{prompt, output[, reference]}``, one per output, in order.

    Prompts, outputs and references are strings or lists of messages (content given as
    text parts is joined); ``strip_think`` keeps only what follows the reasoning of each
    output (:func:`strip_think`).
    """
    if len(prompts) != len(outputs):
        raise ConfigurationError(f"{len(prompts)} prompts for {len(outputs)} completions")
    out = []
    for i, (prompt, completion) in enumerate(zip(prompts, outputs)):
        output = text_content(i, "output", completion)
        if strip_think:
            output = strip_think_in(output)
        sample: Sample = {"prompt": text_content(i, "prompt", prompt), "output": output}
        if references is not None:
            sample["reference"] = text_content(i, "reference", references[i])
        out.append(sample)
    return out


#: The hooks' ``kind=``: one reward per completion, or a process reward model's steps (aggregated).
HOOK_KINDS = ("reward", "steps")


def as_step_samples(samples: Sequence[Sample], step_separator: str) -> List[Sample]:
    """``{prompt, output}`` samples as process-reward samples: the output split at ``step_separator``."""
    return [{"prompt": s["prompt"], "output": s["output"], "step_separator": step_separator} for s in samples]


def check_kind(kind: str) -> None:
    if kind not in HOOK_KINDS:
        raise ConfigurationError(f"kind must be one of {HOOK_KINDS}, got {kind!r}")
