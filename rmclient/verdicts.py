"""Reading a judge's verdict: the final JSON object of its reply, or its probabilities over the allowed tokens.

Nothing here ever guesses. A verdict is read from the judge's own final JSON
object (the one the reply ends with) and nowhere else, so a score written in
prose, or inside the quoted answer the judge discusses, is never read; a value
of the wrong type or out of range, an empty reply, a reply cut at
``max_tokens`` or one that ends with anything but the verdict raises
:class:`VerdictError`, which the client retries and then reports as a failure
(never 0.0). A probability verdict is the expectation of the allowed tokens'
values under the judge's next-token distribution, renormalised over them; it
fails when the judge puts too little of its probability on them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from rmclient.adapters.openai import Choice

__all__ = ["Choice", "VerdictError", "check_finished", "choice_field", "final_object", "integer_field",
           "token_probabilities"]

#: The most ``{`` of a reply tried as the start of its final object, and the most characters read from
#: its end: they bound the work on any reply.
MAX_OBJECT_STARTS = 4096
MAX_VERDICT_CHARS = 65536
#: A reply may end with a closing code fence after its JSON (```` ``` ```` or ```` ```json ... ``` ````).
_TRAILER = re.compile(r"\s*(```+|~~~+)?\s*\Z")


class VerdictError(ValueError):
    """A reply that holds no valid verdict (the reason says why)."""


def final_object(text: str) -> Dict[str, Any]:
    """The JSON object ``text`` ends with (after it: whitespace or a closing code fence only).

    The outermost such object counts, so ``{"a": {"b": 1}}`` is read whole; an earlier object
    (a draft, or one quoted from the answer being judged) is never read.
    """
    if not isinstance(text, str) or not text.strip():
        raise VerdictError("the reply is empty")
    body = _TRAILER.sub("", text)
    if not body.endswith("}"):
        tail = text.strip()[-60:]
        raise VerdictError(f"the reply does not end with a JSON object (it ends with {tail!r})")
    body = body[-MAX_VERDICT_CHARS:]
    decoder = json.JSONDecoder(strict=False)  # a raw newline inside a critique is still the judge's text
    starts = [m.start() for m in re.finditer(r"\{", body)][-MAX_OBJECT_STARTS:]
    skip_to = 0
    for start in starts:  # left to right: the first that reaches the end is the outermost
        if start < skip_to:
            continue  # inside an object already read whole: its inner braces start nothing that ends later
        try:
            value, end = decoder.raw_decode(body, start)
        except (ValueError, RecursionError):  # nested too deep to be a verdict
            continue
        if end == len(body) and isinstance(value, dict):
            return value
        skip_to = end
    raise VerdictError("the reply ends with '}' but no JSON object ends there (truncated or malformed JSON)")


def integer_field(obj: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    """``obj[name]`` as an integer in ``[lo, hi]``; a bool, a string, a fraction or a value out of range fails."""
    if name not in obj:
        raise VerdictError(f"the verdict has no {name!r} field: {json.dumps(obj)[:200]}")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VerdictError(f"{name!r} is not a number: {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise VerdictError(f"{name!r} is not a whole number: {value!r}")
    if not lo <= value <= hi:
        raise VerdictError(f"{name!r} is {value!r}, outside {lo}-{hi}")
    return int(value)


def choice_field(obj: Mapping[str, Any], name: str, allowed: Mapping[str, float]) -> float:
    """The value of ``obj[name]``, which must be one of ``allowed``'s keys exactly."""
    if name not in obj:
        raise VerdictError(f"the verdict has no {name!r} field: {json.dumps(obj)[:200]}")
    value = obj[name]
    if not isinstance(value, str) or value not in allowed:
        raise VerdictError(f"{name!r} is {value!r}, not one of {sorted(allowed)}")
    return float(allowed[value])


def token_probabilities(
    top_logprobs: Optional[Mapping[str, float]], allowed: Sequence[str], min_mass: float
) -> Tuple[List[float], float]:
    """``(probabilities of allowed, mass)``: the judge's next-token probabilities of the allowed
    tokens, renormalised over them, and the share of its probability they had.

    A token matches a choice when it equals it up to surrounding whitespace (``" A"`` is ``"A"``);
    a choice not among the top tokens has probability 0 (its true one is below the last shown).
    Under a choice constraint the server's own distribution covers the choices only (mass 1).
    """
    if not top_logprobs:
        raise VerdictError("the reply carries no top_logprobs for its first token")
    mass = [0.0] * len(allowed)
    index = {c: k for k, c in enumerate(allowed)}
    for token, logprob in top_logprobs.items():
        k = index.get(token.strip())
        if k is not None and logprob is not None and math.isfinite(logprob):
            mass[k] += math.exp(logprob)
    total = sum(mass)
    if not total > 0 or total < min_mass:
        shown = ", ".join(f"{t!r}: {math.exp(lp):.3g}" for t, lp in list(top_logprobs.items())[:5])
        raise VerdictError(
            f"the judge put {total:.3g} of its probability on the allowed verdicts {list(allowed)} "
            f"(less than {min_mass}); its top tokens: {shown}"
        )
    return [m / total for m in mass], min(total, 1.0)


def check_finished(choice: Choice) -> None:
    """A reply cut at ``max_tokens`` holds no verdict: it never counts, however it parses."""
    if choice.finish_reason == "length":
        raise VerdictError("the reply was cut at max_tokens before its verdict was complete")
