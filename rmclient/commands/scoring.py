"""Scoring a chunk of samples: errors named by input line and field, what was scored before a fault."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

from rmclient.errors import InvalidSampleError, ScoringError

from .exits import Failure, InputError

__all__ = ["PartialScore", "Where", "score_samples", "describe_failures", "line_ranges", "renamed"]

class PartialScore(Exception):
    """Scoring stopped: the first ``len(scored)`` samples were scored, then ``error`` (InputError or Failure)."""

    def __init__(self, scored: List[Any], error: Exception) -> None:
        super().__init__(str(error))
        self.scored = scored
        self.error = error


#: ``where(sample index, field) -> (line number, field name in the input)``.
Where = Callable[[int, str], Tuple[int, str]]


def score_samples(
    client: Any, samples: Sequence[Dict[str, Any]], where: Where, *, hint: str = "", progress: Any = None
) -> List[Any]:
    """Each sample's :class:`~rmclient.client.Scored` (reward, tokens, cut) in order, or :class:`PartialScore`
    with those of the samples before the fault. ``progress(scored, total)``: as requests finish.

    A malformed sample becomes an :class:`InputError` naming its line and field;
    samples that could not be scored become a :class:`Failure` listing their
    lines and reasons (then ``hint``).
    """
    from rmclient.client import Scored

    if not samples:
        return []
    try:
        return client.score_details(list(samples), progress=progress)
    except InvalidSampleError as exc:
        line, field = where(exc.index, exc.field)
        error = InputError(f"line {line}, field {field!r}: {exc.reason}")
        prefix = score_samples(client, samples[: exc.index], where, hint=hint) if exc.index > 0 else []
        raise PartialScore(prefix, error) from None
    except ScoringError as exc:
        first = min(exc.failures)
        message = describe_failures(exc.failures, where) + (f". {hint}" if hint else "")
        encoded = client.encode_samples(list(samples[:first])) if first else []
        prefix = [Scored(float(r), len(e.ids), e.truncated) for r, e in zip(exc.rewards[:first], encoded)]
        raise PartialScore(prefix, Failure(message)) from None


def describe_failures(failures: Dict[int, str], where: Where) -> str:
    """``"3 samples could not be scored (input lines 4-6): REASON (lines 4-6)"``, grouped by reason."""
    by_reason: Dict[str, List[int]] = {}
    all_lines: List[int] = []
    for index, why in sorted(failures.items()):
        line = where(index, "")[0]
        if not all_lines or all_lines[-1] != line:
            all_lines.append(line)
        lines = by_reason.setdefault(why, [])
        if not lines or lines[-1] != line:
            lines.append(line)
    reasons = list(by_reason.items())
    shown = "; ".join(
        f"{why} ({'all' if len(reasons) == 1 else 'lines ' + line_ranges(lines)})" for why, lines in reasons[:3]
    )
    more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    n = len(failures)
    return f"{n} sample{'s' if n != 1 else ''} could not be scored (input lines {line_ranges(all_lines)}): {shown}{more}"


def line_ranges(values: List[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (at most 20 ranges shown)."""
    out: List[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out[:20]) + (", ..." if len(out) > 20 else "")


def renamed(field_name: str, new: str, prefixes: Sequence[str] = ("output",)) -> str:
    """``field_name`` with a leading ``prefix`` (``output``, ``output[1].content``, ...) replaced by ``new``."""
    for prefix in prefixes:
        if field_name == prefix or field_name.startswith(prefix + "[") or field_name.startswith(prefix + "."):
            return new + field_name[len(prefix):]
    return field_name
