"""Batch tokenization for the recipes: straight on the Rust backend, each distinct input once.

A transformers fast tokenizer spends most of a batch call converting
``BatchEncoding`` objects in Python; the recipes only need id lists and
strings. :class:`BatchTokenizer` calls the ``tokenizers`` backend directly
when that gives exactly what the transformers API gives (checked on probe
strings when it is built) and falls back to the transformers API otherwise.
Identical strings in a batch (a GRPO group shares its prompt and reference)
are tokenized once.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

logger = logging.getLogger(__name__)

_PROBES = [
    "Hello, world! It's a test: don't split ; here .",
    "  leading and trailing spaces  ",
    "line one\nline two\n\n tab\there",
    "中文，标点。 émoji 🙂 mixed",
    "",
]


class BatchTokenizer:
    """``encode(texts, special)`` and ``decode(ids_lists)`` with the semantics of the transformers tokenizer.

    Returned id lists may be shared between equal inputs: do not mutate them.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self.backend = backend if backend is not None and self._backend_matches(tokenizer, backend) else None
        if self.backend is None:
            logger.info("tokenizing through the transformers API (no matching fast backend)")

    @staticmethod
    def _backend_matches(tokenizer: Any, backend: Any) -> bool:
        try:
            for special in (True, False):
                fast = [e.ids for e in backend.encode_batch(_PROBES, add_special_tokens=special)]
                if fast != tokenizer(_PROBES, add_special_tokens=special)["input_ids"]:
                    return False
            ids = tokenizer(_PROBES, add_special_tokens=True)["input_ids"]
            return backend.decode_batch(ids, skip_special_tokens=True) == [
                tokenizer.decode(x, skip_special_tokens=True) for x in ids
            ]
        except Exception:  # noqa: BLE001 - any mismatch in API means: use the safe path
            return False

    def encode(self, texts: Sequence[str], special: bool) -> List[List[int]]:
        """Token ids of each text (with the tokenizer's special tokens when ``special``)."""
        unique = list(dict.fromkeys(texts))
        if not unique:
            return []
        if self.backend is not None:
            encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
            ids = [e.ids for e in encode(unique, add_special_tokens=special)]
        else:
            ids = self.tokenizer(unique, add_special_tokens=special)["input_ids"]
        table: Dict[str, List[int]] = dict(zip(unique, ids))
        return [table[t] for t in texts]

    def decode(self, ids_lists: Sequence[List[int]]) -> List[str]:
        """Text of each id list, special tokens skipped (as ``tokenizer.decode(..., skip_special_tokens=True)``)."""
        # Equal inputs are usually the same list object (see encode): decode each object once.
        unique: Dict[int, List[int]] = {}
        for ids in ids_lists:
            unique.setdefault(id(ids), ids)
        lists = list(unique.values())
        if self.backend is not None:
            texts = self.backend.decode_batch(lists, skip_special_tokens=True)
        else:
            texts = self.tokenizer.batch_decode(lists, skip_special_tokens=True)
        table = dict(zip(unique, texts))
        return [table[id(ids)] for ids in ids_lists]
