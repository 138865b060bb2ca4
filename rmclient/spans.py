"""Where each reward belongs in the output text, and spreading rewards onto another tokenizer's tokens.

Process and dense rewards come per reward-model token (or per step), but a
trainer needs them per POLICY token, and the two tokenizers differ (trl#2577).
Both sides agree on the output's characters: each value carries the
``(start, end)`` character span of the output it belongs to, and :func:`spread`
gives every token of any tokenizer (its character offsets in the same output)
the value of the span it ends in.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from .errors import ConfigurationError, InvalidSampleError, ResponseError

Span = Tuple[int, int]
#: ``rule(token_span, spans, values) -> value``: a caller's own way to spread.
Rule = Callable[[Span, Sequence[Span], Sequence[float]], float]


def output_token_spans(
    tokenizer: Any, text: str, ids: Sequence[int], output: str, suffix: str = "",
) -> Tuple[List[int], List[Span]]:
    """The positions in ``ids`` of the tokens that carry ``output`` in ``text`` (the encoded text of
    ``ids``, where the output is followed by the template's ``suffix``) and each one's span in
    ``output``, clipped to it.

    ``ids`` may have a BOS more than ``text`` gives. :class:`ConfigurationError` when ``text`` does not
    tokenize back to ``ids`` (no exact offsets) or does not hold ``output`` whole before ``suffix``.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    got, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    shift = len(ids) - len(got)
    if shift not in (0, 1) or list(ids[shift:]) != got:
        raise ConfigurationError("the encoded text does not tokenize back to its ids: no exact spans")
    start = text.rfind(output + suffix) if output else -1
    if start < 0:
        raise ConfigurationError("the output is not whole in its encoding (cut by the length limit, or changed "
                                 "by the chat template)")
    end = start + len(output)
    positions, spans = [], []
    for k, (a, b) in enumerate(offsets):
        if a < end and b > start and b > a:
            positions.append(k + shift)
            spans.append((max(a, start) - start, min(b, end) - start))
    return positions, spans


def dense_inputs(recipe: Any, chats: Sequence[Any], encoded: Sequence[Any]) -> List[Tuple[List[int], List[Span]]]:
    """Each chat-template sample's output tokens (positions in its ids) and their spans, found before
    anything is sent; a sample whose output cannot be located exactly is an
    :class:`~rmclient.errors.InvalidSampleError` naming it."""
    out = []
    for chat, e in zip(chats, encoded):
        try:
            out.append(output_token_spans(recipe.tokenizer, e.text, e.ids, chat.messages[-1]["content"],
                                          recipe.output_suffix(chat)))
        except ConfigurationError as exc:
            raise InvalidSampleError(chat.index, "output", f"no per-token values: {exc}") from None
    return out


def token_offsets(tokenizer: Any, output: str) -> List[Span]:
    """The character spans of ``tokenizer``'s tokens of ``output`` (no special tokens)."""
    return [tuple(o) for o in tokenizer(output, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


def spread(
    values: Sequence[Optional[float]],
    spans: Sequence[Span],
    tokens: Union[Sequence[Span], Any],
    output: Optional[str] = None,
    *,
    rule: Union[str, Rule] = "containing",
    fill: Optional[float] = None,
) -> List[Optional[float]]:
    """``values`` (one per span of the output) onto tokens: one value per token.

    ``tokens`` are the tokens' character spans in the same output, or a tokenizer (then
    ``output`` is the text). Rules:

    * ``"containing"`` (default): a token gets the value of the span its last character falls in;
      a token between spans (a separator) the previous span's, one before the first the first's.
    * ``"end"``: only the token where a span ends gets its value, every other token ``fill``
      (which must be given: no default number is made up).
    * a callable ``rule(token_span, spans, values)``.
    """
    if not isinstance(tokens, (list, tuple)):
        if output is None:
            raise ConfigurationError("spread() with a tokenizer needs the output text")
        tokens = token_offsets(tokens, output)
    if len(values) != len(spans):
        raise ConfigurationError(f"{len(values)} values for {len(spans)} spans")
    if callable(rule):
        return [rule(t, spans, values) for t in tokens]
    if rule == "end":
        if fill is None:
            raise ConfigurationError("rule='end' needs fill= (the value of tokens where no span ends)")
        out: List[Optional[float]] = [fill] * len(tokens)
        ends = [b for _, b in tokens]
        for v, (_, b) in zip(values, spans):
            k = next((j for j, e in enumerate(ends) if e >= b), len(ends) - 1)  # the token holding the span's end
            if ends:
                out[k] = v
        return out
    if rule != "containing":
        raise ConfigurationError(f"rule must be 'containing', 'end' or a callable, got {rule!r}")
    starts = [a for a, _ in spans]
    out = []
    for a, b in tokens:
        last = max(a, b - 1)
        k = bisect.bisect_right(starts, last) - 1  # the last span starting at or before the token's last char
        out.append(values[max(k, 0)] if spans else None)
    return out


@dataclass(frozen=True)
class TokenRewards:
    """One output's dense rewards: the head's value at each reward-model token of the output.

    ``spans[k]`` is token ``k``'s ``(start, end)`` in the output (clipped to it); spread them onto
    a policy tokenizer with :func:`spread`.
    """

    values: List[float]
    spans: List[Span]
    #: The ids scored in all (prompt and template included).
    num_tokens: int
    truncated: bool


def dense_rewards(
    where: Sequence[Tuple[List[int], List[Span]]], encoded: Sequence[Any], rows: Sequence[Any],
) -> List[Optional[TokenRewards]]:
    """:class:`TokenRewards` from per-token head outputs ``rows`` (label 0 at each output token of
    :func:`dense_inputs`); a NaN row (``on_error="nan"``) gives NaN values, a missing one (``None``,
    a failure) ``None``."""
    out: List[Optional[TokenRewards]] = []
    for i, ((positions, spans), e, r) in enumerate(zip(where, encoded, rows)):
        if r is None:
            out.append(None)
            continue
        if isinstance(r, float):
            values = [r] * len(positions)
        elif len(r) != len(e.ids):
            raise ResponseError("per-token output", f"sample {i}: {len(r)} per-token values for {len(e.ids)} tokens", None)
        else:
            values = [r[p][0] for p in positions]
        out.append(TokenRewards(values, spans, len(e.ids), e.truncated))
    return out
