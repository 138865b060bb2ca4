"""Where a tokenizer's ids compose: word boundaries at which the ids of a text are the ids of its parts.

POLAR's final text holds the prompt twice (``prompt + "\\n" + reference + "<|reward|>" + prompt +
"\\n" + output``). Tokenizing it costs about twice the prompt's tokens; tokenizing the pieces once
and joining their ids costs one prompt, if the join is exact. It is not at the "\\n" (a
SentencePiece vocabulary merges ``▁quick\\n``), but it is at a *word boundary*: a space whose
previous character is neither whitespace nor "▁". Such a position ``k`` of a text ``s`` satisfies
``ids(s) == ids(s[:k]) + ids(s[k:])`` in every context, for the two structures proved below, so a
join needs only the words around it tokenized again (the *window*: the prompt's last word, the
joiner, the next piece's first word).

* **Byte-level BPE** (no normaliser, the ``ByteLevel`` pre-tokenizer with its GPT-2 regex alone):
  the BPE runs on each regex match on its own. Every match is either whitespace only, or
  non-whitespace with at most one leading space, so no match holds both ``s[k-1]`` and ``s[k]``;
  the regex has no look-behind and its one look-ahead (``\\s+(?!\\S)``) only ends whitespace runs,
  so the matches on either side of ``k`` are those of each side alone.
* **SentencePiece-style BPE** (a ``Prepend("▁")`` + ``Replace(" ", "▁")`` normaliser, no
  pre-tokenizer): the BPE runs on the whole text, but no merge can cross ``k`` when no vocabulary
  token holds a character other than "▁" followed by "▁" (checked on the vocabulary when built:
  a token is the result of a merge). The space at ``k`` becomes the "▁" the normaliser would
  prepend, so a part that starts at ``k`` is tokenized without that space (:attr:`WordJoins.lead`).

Added tokens split a text before both; none may hold whitespace (then none can span a boundary or
a "\\n" join). Anything else gives ``None``, and the composition is checked on probes when built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .token_bound import read_spec, spec_steps

logger = logging.getLogger(__name__)

_SPACE = " "
_META = "\u2581"
_PROBES = [
    ("The quick brown fox", "jumps over the lazy dog"), ("one", "two words"), ("a b ", " c  d"), ("x  y", "z"),
    ("", "only the piece"), ("tail ", ""), ("中文 词语", "émoji 🙂 end"), ("word.", "\tnext one"),
]


@dataclass(frozen=True)
class WordJoins:
    """Word-boundary splits of one tokenizer (see the module docs)."""

    #: Characters a part starting at a boundary leaves out (the space the normaliser's "▁" stands for).
    lead: int

    def last_split(self, text: str) -> Tuple[str, str]:
        """``(head, tail)`` at the text's last word boundary: ``ids(text) == ids(head) + ids(tail)``, and
        ``tail`` starts the window of a join after the text (``("", text)`` without a boundary)."""
        k = text.rfind(_SPACE, 0, len(text) - 1)
        while k > 0 and not _boundary(text, k):
            k = text.rfind(_SPACE, 0, k)
        return (text[:k], text[k + self.lead:]) if k > 0 else ("", text)

    def first_split(self, text: str) -> Tuple[str, str]:
        """``(head, tail)`` at the text's first word boundary: ``ids(text) == ids(head) + ids(tail)``, and
        ``head`` ends the window of a join before the text (``(text, "")`` without a boundary)."""
        end = len(text) - 1
        k = text.find(_SPACE, 1, end)
        while k > 0 and not _boundary(text, k):
            k = text.find(_SPACE, k + 1, end)
        return (text[:k], text[k + self.lead:]) if k > 0 else (text, "")


def _boundary(text: str, k: int) -> bool:
    before = text[k - 1]
    return before != _META and not before.isspace()


def word_joins(
    backend: Any, encode: Callable[[Sequence[str], bool], List[List[int]]]
) -> Optional[WordJoins]:
    """The :class:`WordJoins` of a ``tokenizers.Tokenizer``, or ``None`` when its structure proves none.

    ``encode`` is the caller's own (transformers-equivalent) batch encode, used on the probes.
    """
    spec = read_spec(backend)
    if spec is None:
        return None
    reason, joins = _analyse(spec)
    if joins is None:
        logger.debug("no word-boundary joins for this tokenizer: %s", reason)
        return None
    for a, b in _PROBES:
        a_head, a_tail = joins.last_split(a)
        b_head, b_tail = joins.first_split(b)
        texts = [a, b, a + "\n" + b, a_head, a_tail, b_head, b_tail, a_tail + "\n" + b_head]
        ids = dict(zip(texts, encode(texts, False)))
        if ids[a] != ids[a_head] + ids[a_tail] or ids[b] != ids[b_head] + ids[b_tail] \
                or ids[a + "\n" + b] != ids[a_head] + ids[a_tail + "\n" + b_head] + ids[b_tail]:
            logger.info("no word-boundary joins for this tokenizer: the probe %r does not compose", (a, b))
            return None
    return joins


def _analyse(spec: dict) -> "tuple[str, Optional[WordJoins]]":
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout"):
        return "not a plain BPE model", None
    if any(any(c.isspace() for c in t.get("content", "")) for t in spec.get("added_tokens") or []):
        return "an added token holds whitespace", None
    steps, pres = spec_steps(spec, "normalizer"), spec_steps(spec, "pre_tokenizer")
    if spec.get("normalizer") is None and len(pres) == 1 and pres[0].get("type") == "ByteLevel" \
            and not pres[0].get("add_prefix_space") and pres[0].get("use_regex", True):
        return "", WordJoins(lead=0)
    sentencepiece = [{"type": "Prepend", "prepend": _META},
                     {"type": "Replace", "pattern": {"String": _SPACE}, "content": _META}]
    if pres or steps != sentencepiece:
        return "neither byte-level with the GPT-2 regex nor a SentencePiece-style normaliser", None
    for token in model.get("vocab") or {}:
        if any(token[k] == _META and token[k - 1] != _META for k in range(1, len(token))):
            return f"the vocabulary token {token!r} merges across a word boundary", None
    return "", WordJoins(lead=1)
