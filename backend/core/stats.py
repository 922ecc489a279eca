"""Counts with their uncertainty: Wilson intervals for rates, and one-sided sign tests for paired comparisons.

Every rate the backend shows (reward accuracy, win-rate, agreement) is a count out of n; showing it without n
and an interval made one held-out prompt read as "accuracy 1.0". Torch-free: the backend, jobs and benches
all use it.
"""
from __future__ import annotations

import math
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
