"""Synthetic mixed-language text: the benchmark's samples and the corpus the test tokenizers learn from."""

from __future__ import annotations

import random
from typing import List

#: English, Chinese, code and math words, numbers, accents, an emoji and punctuation.
WORDS = (
    "the of and to in is that for it as with was on be by this are from at an or have not which but all "
    "what capital China Beijing Shanghai city country please reason step by step put your final answer "
    "within boxed quick brown fox jumps over lazy dog hello how are you fine thank user assistant system "
    "def score sample return reward code math x^2 + y^2 = z^2 derivative integral matrix vector proof "
    "therefore because function value result equals compute solve first second third finally 1 2 3 4 5 "
    "6 7 8 9 10 42 3.14 100 2024 北京是中国的首都。 上海是一座城市。 Ünïcödé émojis 🙂 (a) [b] {c} -> => ; : ,"
).split()


def words(rng: random.Random, n_words: int) -> str:
    """``n_words`` words joined by spaces, with a "\\n" or "." after every 12-30 words."""
    picked = rng.choices(WORDS, k=max(1, n_words))
    for i in range(12, len(picked), rng.randint(12, 30)):
        picked[i] = picked[i] + ("\n" if rng.random() < 0.3 else ".")
    return " ".join(picked)


def corpus(n: int = 2000, seed: int = 7) -> List[str]:
    """``n`` texts of 5-400 words (deterministic)."""
    rng = random.Random(seed)
    return [words(rng, rng.randint(5, 400)) for _ in range(n)]
