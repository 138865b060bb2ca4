"""What a tokenizer's structure proves without tokenizing: a bound on a text's token count, and the
texts that ``decode(encode(text))`` gives back unchanged.

POLAR's training rule tokenizes every piece only to learn whether a budget cuts it, then decodes
it back to text. When the bound proves that no piece is cut and each piece round-trips, the final
text is simply the pieces joined, and one tokenization of it gives the rule's ids.

The bound: a BPE starts from one symbol per character it knows and one per UTF-8 byte of a
character it does not (byte fallback) -- or one per byte after a byte-level pre-tokenizer -- and
merges only shorten that; so a text has at most ``len(text.encode())`` tokens, plus one per
prepended "▁", plus the post-processor's special tokens. It is proved only for the components
listed below (anything else, an NFKC normaliser that can expand text included, gives no bound),
and is checked on probe strings when it is built.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

_PROBES = [
    "plain words", " leading space", "trailing space ", "two  spaces", "line\nbreak\n", "\n", " ", "",
    "tabs\tand\r\nreturns", "中文，标点。", "émoji 🙂 and \U0001f9ea", "x^2 + y^2 = z^2", "\u00a0nbsp", "a\u200bb",
]


@dataclass(frozen=True)
class TokenBound:
    """An upper bound on token counts and a round-trip test for one tokenizer."""

    #: Symbols a normaliser or pre-tokenizer adds to a text (a prepended "▁").
    per_text: int
    #: Ids the post-processor adds when special tokens are asked for (BOS).
    specials: int
    #: Substrings that break the round trip: added tokens, the "▁" that decodes to " ".
    forbidden: Tuple[str, ...]
    #: Whether a leading space is lost in the round trip (Metaspace with a prepend scheme).
    strips_leading_space: bool = False

    def upper(self, text: str, special: bool = True) -> int:
        """At least the number of ids ``encode(text, add_special_tokens=special)`` gives (``sys.maxsize``
        for a text no tokenizer can take: lone surrogates)."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            return sys.maxsize
        return size + self.per_text + (self.specials if special else 0)

    def round_trips(self, text: str) -> bool:
        """Whether ``decode(encode(text))`` (special tokens skipped) is certainly ``text``."""
        if self.strips_leading_space and text[:1] == " ":
            return False
        return not self.holds_forbidden(text)

    def holds_forbidden(self, text: str) -> bool:
        """Whether ``text`` holds an added token's string (or the "▁" that decodes to a space)."""
        # a scan per first character ("<", "[", "▁"), then per string only where one of them occurs
        return any(c in text for c in self._starts) and any(f in text for f in self.forbidden)

    @cached_property
    def _starts(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(f[0] for f in self.forbidden))


def token_bound(
    backend: Any,
    encode: Callable[[Sequence[str], bool], List[List[int]]],
    decode: Callable[[Sequence[List[int]]], List[str]],
) -> Optional[TokenBound]:
    """The :class:`TokenBound` of a ``tokenizers.Tokenizer``, or ``None`` when its structure proves none.

    ``encode``/``decode`` are the caller's own (transformers-equivalent) calls, used to check the
    bound on probe strings.
    """
    spec = read_spec(backend)
    if spec is None:
        return None
    reason, bound = _analyse(spec, backend)
    if bound is None:
        logger.debug("no token bound for this tokenizer: %s", reason)
        return None
    probes = [p for p in _PROBES if bound.round_trips(p)]
    ids = encode(probes, True)
    for text, x, back in zip(probes, ids, decode(ids)):
        if len(x) > bound.upper(text) or back != text:
            logger.info("no token bound for this tokenizer: the probe %r gives %d ids, decodes to %r",
                        text, len(x), back)
            return None
    return bound


_SEQUENCE_KEYS = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers"}


def read_spec(backend: Any) -> Optional[Dict[str, Any]]:
    """A ``tokenizers.Tokenizer``'s own JSON, parsed (``None`` for a backend that cannot give it)."""
    try:
        return json.loads(backend.to_str())
    except Exception:  # noqa: BLE001 - a backend we cannot read proves nothing
        return None


def spec_steps(spec: Dict[str, Any], component: str) -> List[Dict[str, Any]]:
    """The steps of the spec's ``"normalizer"`` or ``"pre_tokenizer"``: none, the one, or a ``Sequence``'s."""
    step = spec.get(component)
    if step is None:
        return []
    return step.get(_SEQUENCE_KEYS[component], [step]) if step.get("type") == "Sequence" else [step]


def _analyse(spec: Dict[str, Any], backend: Any) -> "tuple[str, Optional[TokenBound]]":
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        return "not a plain BPE model", None
    vocab = model.get("vocab") or {}
    forbidden = [t["content"] for t in spec.get("added_tokens") or [] if t.get("content")]
    per_text, strips = 0, False
    byte_level = False

    steps = spec_steps(spec, "normalizer")
    for step in steps:
        kind = step.get("type")
        if kind == "Prepend" and step.get("prepend") in vocab:
            per_text += 1
            forbidden.append(step["prepend"])
        elif kind == "Replace" and step.get("pattern") == {"String": " "} and step.get("content") in vocab:
            forbidden.append(step["content"])
        else:
            return f"normaliser {kind}", None
    if steps and any(t.get("normalized") for t in spec.get("added_tokens") or []):
        return "added tokens matched after normalisation", None

    for step in spec_steps(spec, "pre_tokenizer"):
        kind = step.get("type")
        if kind == "ByteLevel" and not step.get("add_prefix_space"):
            byte_level = True
        elif kind == "Split" and step.get("behavior") != "Removed":
            pass
        elif kind == "Digits":
            pass
        elif kind == "Metaspace" and step.get("replacement") in vocab:
            forbidden.append(step["replacement"])
            if step.get("prepend_scheme", "always") != "never":
                per_text += 1
                strips = True
        else:
            return f"pre-tokenizer {kind}", None
    if not (byte_level or model.get("byte_fallback")):
        return "neither byte-level nor byte fallback (unknown characters decode to nothing)", None
    if byte_level and not all(c in vocab for c in _byte_level_alphabet()):
        return "a byte-level vocabulary without every byte", None
    if not byte_level and not all(f"<0x{b:02X}>" in vocab for b in range(256)):
        return "byte fallback without every byte token", None
    decoder = spec.get("decoder") or {}
    decoders = {d.get("type") for d in decoder.get("decoders", [decoder])} if decoder.get("type") == "Sequence" \
        else {decoder.get("type")}
    allowed = {"ByteLevel"} if byte_level else {"Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"}
    if not decoders <= allowed or (not byte_level and "ByteFallback" not in decoders):
        return f"decoder {sorted(map(str, decoders))}", None
    ordered = tuple(sorted(set(forbidden), key=len))  # "▁" first: the most frequent
    return "", TokenBound(per_text, backend.num_special_tokens_to_add(False), ordered, strips)


def _byte_level_alphabet() -> List[str]:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel.alphabet()
