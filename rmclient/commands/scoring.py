"""Scoring a chunk of samples: errors named by input line and field, what was scored before a fault."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rmclient.errors import InvalidSampleError, ScoringError

from .exits import Failure, InputError

__all__ = ["KindScored", "PartialScore", "Where", "score_samples", "describe_failures", "line_ranges", "renamed"]

class PartialScore(Exception):
    """Scoring stopped: the first ``len(scored)`` samples were scored, then ``error`` (InputError or Failure)."""

    def __init__(self, scored: List[Any], error: Exception) -> None:
        super().__init__(str(error))
        self.scored = scored
        self.error = error


#: ``where(sample index, field) -> (line number, field name in the input)``.
Where = Callable[[int, str], Tuple[int, str]]


@dataclass(frozen=True)
class KindScored:
    """A sample scored as a kind other than one reward: ``reward`` is what goes in the reward field
    (the steps' aggregate, the per-token values, ``{label: value}``), ``extra`` the other fields."""

    reward: Any
    num_tokens: Optional[int]  # None: a judge (it reads text)
    truncated: bool
    extra: Dict[str, Any]


def _kind_scored(kind: str, result: Any, labels: List[str], encoded: Any = None) -> KindScored:
    """One line's fields from a result of ``score_steps`` / ``score_tokens`` / ``score_vector``."""
    if kind == "steps":
        return KindScored(result.aggregate, result.num_tokens, result.truncated, {
            "step_rewards": result.rewards, "step_spans": [list(x) for x in result.spans], "cut_steps": result.cut})
    if kind == "tokens":
        return KindScored(result.values, result.num_tokens, result.truncated,
                          {"token_spans": [list(x) for x in result.spans]})
    vector = dict(zip(labels, result)) if isinstance(result, list) else result  # NaN: failed (--on-error nan)
    return KindScored(vector, len(encoded.ids), encoded.truncated, {})


def _judged(verdict: Any) -> KindScored:
    """One line's fields from a judge's :class:`~rmclient.judge.Verdict`: the score, the replies, their spread
    (and, pairwise, how far the two orders disagreed)."""
    if math.isnan(verdict.score):  # a failure under --on-error nan: the reward is null, nothing else is written
        return KindScored(verdict.score, None, False, {})
    extra = {"judge_replies": list(verdict.replies), "judge_spread": verdict.spread}
    if verdict.disagreement is not None:
        extra["judge_disagreement"] = verdict.disagreement
    return KindScored(verdict.score, None, False, extra)


def _score_kind(client: Any, samples: List[Dict[str, Any]], kind: str, aggregate: str, progress: Any) -> List[Any]:
    if kind == "steps":
        results = client.score_steps(samples, aggregate=aggregate, progress=progress)
    elif kind == "tokens":
        results = client.score_tokens(samples, progress=progress)
    else:
        results = client.score_vector(samples, progress=progress)
    return _kinds_scored(client, samples, kind, results)


def _kinds_scored(client: Any, samples: List[Dict[str, Any]], kind: str, results: List[Any]) -> List[KindScored]:
    encoded = client.encode_samples(samples) if kind == "vector" else [None] * len(results)
    return [_kind_scored(kind, r, client.labels, e) for r, e in zip(results, encoded)]


def score_samples(
    client: Any, samples: Sequence[Dict[str, Any]], where: Where, *, hint: str = "", progress: Any = None,
    kind: str = "reward", aggregate: str = "min",
) -> List[Any]:
    """Each sample's :class:`~rmclient.client.Scored` (reward, tokens, cut) in order, or :class:`PartialScore`
    with those of the samples before the fault. ``progress(scored, total)``: as requests finish.
    ``kind`` other than ``"reward"``: :class:`KindScored` (``aggregate`` for steps).

    A malformed sample becomes an :class:`InputError` naming its line and field;
    samples that could not be scored become a :class:`Failure` listing their
    lines and reasons (then ``hint``).
    """
    from rmclient.client import Scored

    if not samples:
        return []
    judge = getattr(client, "server_type", None) == "openai"
    if judge and kind != "reward":
        raise InputError(f"--kind {kind}: an LLM judge gives one score per sample")
    try:
        if judge:
            return [_judged(v) for v in client.score_details(list(samples), progress=progress)]
        if kind != "reward":
            return _score_kind(client, list(samples), kind, aggregate, progress)
        return client.score_details(list(samples), progress=progress)
    except InvalidSampleError as exc:
        line, field = where(exc.index, exc.field)
        error = InputError(f"line {line}, field {field!r}: {exc.reason}")
        prefix = (score_samples(client, samples[: exc.index], where, hint=hint, kind=kind, aggregate=aggregate)
                  if exc.index > 0 else [])
        raise PartialScore(prefix, error) from None
    except ScoringError as exc:
        first = min(exc.failures)
        message = describe_failures(exc.failures, where) + (f". {hint}" if hint else "")
        if judge:
            raise PartialScore([KindScored(r, None, False, {}) for r in exc.rewards[:first]], Failure(message)) from None
        if kind != "reward":  # the results before the first failure are kept (the client finished them)
            done = list(samples[:first])
            raise PartialScore(_kinds_scored(client, done, kind, exc.rewards[:first]) if first else [],
                               Failure(message)) from None
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
