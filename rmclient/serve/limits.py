"""The server's own limits on what it scores: inputs per request, tokens per input, the vocabulary.

The protocol's shape is checked by the adapters' server halves; these checks need the
server's configuration, so they stay here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..data import check_text
from .errors import RequestError, invalid


@dataclass(frozen=True)
class Limits:
    """``max_samples`` inputs per request, ``max_model_len`` tokens per input, ids in ``[0, vocab_size)``.

    ``max_token_chars``: no token is longer than this many characters, so a text longer
    than ``max_model_len * max_token_chars`` is certainly too long, known without tokenizing it.
    """

    max_samples: int
    max_model_len: int
    vocab_size: Optional[int] = None
    max_token_chars: int = 1

    def count(self, n: int) -> None:
        """400 for no inputs, 413 for more than ``max_samples``."""
        if n == 0:
            raise RequestError(400, "no inputs to score")
        if n > self.max_samples:
            raise RequestError(
                413, f"{n} inputs exceed the server's limit of {self.max_samples} per request; split the request",
                kind="too_many_samples",
            )

    def texts(self, texts: Sequence[str], field: str) -> None:
        """Each text valid (no lone surrogates, ...) and not certainly over ``max_model_len`` tokens."""
        longest = self.max_model_len * self.max_token_chars
        for i, t in enumerate(texts):
            check_text(i, field, t)
            if len(t) > longest:  # certainly over max_model_len tokens: refused before tokenizing
                raise invalid(i, field, f"{len(t)} characters are certainly more than the server's "
                                        f"max_model_len of {self.max_model_len} tokens")

    def vocabulary(self, seqs: Sequence[Sequence[int]], field: str) -> None:
        """Every token id inside ``[0, vocab_size)``."""
        vocab = self.vocab_size
        for i, seq in enumerate(seqs):
            if seq and (min(seq) < 0 or (vocab and max(seq) >= vocab)):
                bad = next(t for t in seq if t < 0 or (vocab and t >= vocab))
                raise invalid(i, field, f"token id {bad} is outside the vocabulary [0, {vocab})")

    def lengths(self, seqs: Sequence[Sequence[int]], field: str) -> None:
        """Every input non-empty and at most ``max_model_len`` tokens."""
        for i, x in enumerate(seqs):
            if not x:
                raise invalid(i, field, "empty: nothing to score")
            if len(x) > self.max_model_len:
                raise invalid(i, field, f"{len(x)} tokens exceed the server's max_model_len of {self.max_model_len}")
