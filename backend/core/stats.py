"""Counts with their uncertainty: Wilson intervals for rates, one-sided sign tests for paired comparisons, and a
cluster bootstrap for a change measured on samples that come in groups (several answers to one prompt).

Every rate the backend shows (reward accuracy, win-rate, agreement) is a count out of n; showing it without n
and an interval made one held-out prompt read as "accuracy 1.0". Torch-free: the backend, jobs and benches
all use it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054  # two-sided 95 %


@dataclass(frozen=True)
class Rate:
    """k successes out of n, with the 95 % Wilson score interval (sensible at n = 1 and at k = 0 or n)."""

    k: float
    n: int
    value: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.value is None:
            return "n=0"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] n={self.n}"


def rate(k: float, n: int, z: float = Z95) -> Rate:
    """The rate k/n and its Wilson interval; ties counted as half a success are allowed (k need not be whole)."""
    if n <= 0:
        return Rate(k, 0, None, None, None)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Rate(k, n, p, max(0.0, centre - half), min(1.0, centre + half))


def sign_test(better: int, worse: int) -> float:
    """One-sided p-value that the second of two paired things is better than the first: P(X <= better) for
    X ~ Binomial(better + worse, 1/2). Ties are left out before calling. 1.0 when nothing differs."""
    n = better + worse
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) for i in range(better + 1)) / 2**n)


def difference(a: Rate, b: Rate, z: float = Z95) -> tuple[float, float, float] | None:
    """b - a with Newcombe's hybrid-score 95 % interval (two independent rates), or None without data."""
    if a.value is None or b.value is None:
        return None
    d = b.value - a.value
    low = d - math.sqrt((b.value - b.low) ** 2 + (a.high - a.value) ** 2)
    high = d + math.sqrt((b.high - b.value) ** 2 + (a.value - a.low) ** 2)
    return d, low, high


def clustered_difference(
    before: Sequence[Sequence[float]],
    after: Sequence[Sequence[float]],
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float] | None:
    """mean(after) - mean(before) with a paired percentile bootstrap over clusters, or None without data.

    `before[i]` and `after[i]` are the outcomes (1/0 for a rate) of cluster i (say, the samples of one prompt) under
    each condition. Samples of one cluster are not independent draws; resampling whole clusters, the same ones
    for both conditions, keeps their correlation in the interval, which Newcombe's (`difference`) leaves out.
    Each mean pools the chosen clusters' samples, so clusters of unequal size weigh by their size. Seeded: the
    same data give the same interval."""
    if len(before) != len(after):
        raise ValueError(f"clustered_difference needs the same clusters on both sides: {len(before)} != {len(after)}")
    sums = [(sum(a), len(a), sum(b), len(b)) for a, b in zip(before, after, strict=True)]
    n_a, n_b = sum(s[1] for s in sums), sum(s[3] for s in sums)
    if not n_a or not n_b:
        return None
    d = sum(s[2] for s in sums) / n_b - sum(s[0] for s in sums) / n_a
    rng, draws = random.Random(seed), []
    for _ in range(resamples):
        k_a = m_a = k_b = m_b = 0.0
        for s in rng.choices(sums, k=len(sums)):
            k_a, m_a, k_b, m_b = k_a + s[0], m_a + s[1], k_b + s[2], m_b + s[3]
        if m_a and m_b:
            draws.append(k_b / m_b - k_a / m_a)
    draws.sort()
    tail = (1 - level) / 2
    return d, draws[math.floor(tail * (len(draws) - 1))], draws[math.ceil((1 - tail) * (len(draws) - 1))]
