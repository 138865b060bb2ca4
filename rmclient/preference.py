"""Pairwise and listwise preference from rewards (Bradley-Terry), and how well rewards predict preferences.

Under the Bradley-Terry model a reward model is trained with, output A beats B
with probability ``sigmoid(r_A - r_B)``; a list of outputs ranks by reward, and
the chance each one is the best is the softmax of the rewards (Plackett-Luce's
first choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple


def softmax(values: Sequence[float]) -> List[float]:
    """``exp(v) / sum(exp)`` of each value, without overflow."""
    top = max(values)
    exp = [math.exp(v - top) for v in values]
    total = sum(exp)
    return [e / total for e in exp]


def sigmoid(x: float) -> float:
    """``1 / (1 + exp(-x))`` without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def log_sigmoid(x: float) -> float:
    """``log(sigmoid(x))`` without overflow or log(0)."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


@dataclass(frozen=True)
class Comparison:
    """``P(a > b)`` under Bradley-Terry, and both rewards."""

    p_a: float
    reward_a: float
    reward_b: float

    @property
    def p_b(self) -> float:
        """``P(b > a) = 1 - P(a > b)``."""
        return sigmoid(self.reward_b - self.reward_a)


@dataclass(frozen=True)
class Ranking:
    """A list of outputs ranked by reward."""

    rewards: List[float]
    #: Indices of the outputs, best first (ties keep input order).
    order: List[int]

    @property
    def p_best(self) -> List[float]:
        """Each output's probability of being the best: the softmax of the rewards."""
        return softmax(self.rewards)

    def p(self, i: int, j: int) -> float:
        """``P(output i > output j)``."""
        return sigmoid(self.rewards[i] - self.rewards[j])


def compare(reward_a: float, reward_b: float) -> Comparison:
    return Comparison(sigmoid(reward_a - reward_b), reward_a, reward_b)


def rank(rewards: Sequence[float]) -> Ranking:
    """Best first; a NaN (a failed output under ``on_error="nan"``) ranks last."""
    values = list(rewards)
    return Ranking(values, sorted(range(len(values)), key=lambda i: (math.isnan(values[i]), -values[i])))


def bradley_terry(
    n: int, games: Sequence[Tuple[int, int, float]], prior: float = 1.0, tol: float = 1e-10, max_iter: int = 100
) -> List[float]:
    """Bradley-Terry log-strengths (mean 0) of ``n`` items from ``games`` ``(i, j, P(i beats j))``.

    The maximum-likelihood fit on soft wins, by Newton's method (the log-likelihood is concave; a
    step that does not raise it is halved). ``prior``: each item also plays that many games against
    a virtual opponent of log-strength 0 and wins half of them, so an item that never wins still
    gets a finite strength (``prior`` must be > 0). An item in no game gets NaN.
    """
    if not prior > 0:
        raise ValueError(f"prior must be > 0 (an item that never wins has no finite strength), got {prior}")
    played = [0] * n
    for i, j, _ in games:
        played[i] += 1
        played[j] += 1

    def loglik(theta: List[float]) -> float:
        total = sum(prior * (0.5 * log_sigmoid(t) + 0.5 * log_sigmoid(-t)) for t in theta)
        for i, j, p in games:
            d = theta[i] - theta[j]
            total += p * log_sigmoid(d) + (1.0 - p) * log_sigmoid(-d)
        return total

    theta = [0.0] * n
    current = loglik(theta)
    for _ in range(max_iter):
        grad = [prior * (0.5 - sigmoid(t)) for t in theta]
        hess = [[0.0] * n for _ in range(n)]  # minus the Hessian: positive definite
        for k, t in enumerate(theta):
            hess[k][k] = prior * sigmoid(t) * sigmoid(-t)
        for i, j, p in games:
            q = sigmoid(theta[i] - theta[j])
            w = q * (1.0 - q)
            grad[i] += p - q
            grad[j] -= p - q
            hess[i][i] += w
            hess[j][j] += w
            hess[i][j] -= w
            hess[j][i] -= w
        step = _solve(hess, grad)
        scale = 1.0
        while True:
            trial = [t + scale * s for t, s in zip(theta, step)]
            value = loglik(trial)
            if value >= current or scale < 1e-6:
                break
            scale /= 2
        theta, current = trial, value
        if max(abs(scale * s) for s in step) < tol:
            break
    seen = [k for k in range(n) if played[k]]
    centre = sum(theta[k] for k in seen) / len(seen) if seen else 0.0
    return [theta[k] - centre if played[k] else math.nan for k in range(n)]


def _solve(a: List[List[float]], b: List[float]) -> List[float]:
    """``x`` with ``a x = b`` for a symmetric positive definite ``a`` (Gaussian elimination; small ``n``)."""
    n = len(b)
    m = [row[:] + [v] for row, v in zip(a, b)]
    for c in range(n):
        pivot = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[pivot] = m[pivot], m[c]
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            if f:
                for k in range(c, n + 1):
                    m[r][k] -= f * m[c][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][k] * x[k] for k in range(r + 1, n))) / m[r][r]
    return x


class PreferenceStats:
    """How well margins (reward(chosen) - reward(rejected), one per pair) predict the preferences,
    accumulated pair by pair in constant memory (``bins`` calibration bins).

    ``bt_log_likelihood``: the mean ``log sigmoid(margin)`` (0 is perfect; ``log 0.5`` a coin);
    ``calibration_error``: the expected calibration error of ``P(chosen > rejected) = sigmoid(margin)``
    (each pair counted with the side the model favours, binned by that probability into ``bins``
    equal bins over [0.5, 1]: the weighted mean of |accuracy - confidence|; a tie is half right);
    ``brier``: the mean ``(1 - sigmoid(margin))^2``.
    """

    def __init__(self, bins: int = 10) -> None:
        self.n = 0
        #: Margins that were not finite (a failed sample): not counted.
        self.skipped = 0
        self._ll = self._brier = 0.0
        self._counts = [0] * bins
        self._right = [0.0] * bins
        self._confidence = [0.0] * bins

    def add(self, margin: float) -> None:
        if not math.isfinite(margin):
            self.skipped += 1
            return
        bins = len(self._counts)
        self.n += 1
        self._ll += log_sigmoid(margin)
        self._brier += (1.0 - sigmoid(margin)) ** 2
        p = sigmoid(abs(margin))
        b = min(bins - 1, int((p - 0.5) * 2 * bins))
        self._counts[b] += 1
        self._confidence[b] += p
        self._right[b] += 1.0 if margin > 0 else (0.5 if margin == 0 else 0.0)

    def as_dict(self) -> Dict[str, Optional[float]]:
        if not self.n:
            return {"bt_log_likelihood": None, "calibration_error": None, "brier": None}
        ece = sum(abs(r - c) for r, c in zip(self._right, self._confidence)) / self.n
        return {"bt_log_likelihood": self._ll / self.n, "calibration_error": ece, "brier": self._brier / self.n}


def preference_metrics(margins: Sequence[float], bins: int = 10) -> Dict[str, Optional[float]]:
    """:class:`PreferenceStats` of ``margins``."""
    stats = PreferenceStats(bins)
    for m in margins:
        stats.add(m)
    return stats.as_dict()
