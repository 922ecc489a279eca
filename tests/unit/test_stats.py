"""backend.core.stats.clustered_difference: the paired cluster bootstrap bench/loop.py's verdict rests on."""

from __future__ import annotations

import pytest

from backend.core.stats import clustered_difference, difference, rate


def test_clustered_difference_is_seeded_and_centred_on_the_change() -> None:
    before = [[0, 0]] * 30 + [[1, 0]] * 10
    after = [[1, 1]] * 12 + [[1, 0]] * 8 + [[0, 0]] * 20
    d, low, high = clustered_difference(before, after, resamples=2000, seed=3)
    assert d == pytest.approx(32 / 80 - 10 / 80)
    assert low < d < high
    assert clustered_difference(before, after, resamples=2000, seed=3) == (d, low, high)


def test_correlated_samples_widen_the_interval() -> None:
    """Two identical samples per prompt carry one prompt's worth of evidence: the interval must be wider than
    when the same 80 outcomes are 80 independent prompts (and wider than Newcombe's, which assumes that)."""
    before_flat, after_flat = [0] * 78 + [1] * 2, [1] * 16 + [0] * 64
    _, low_flat, high_flat = clustered_difference([[x] for x in before_flat], [[x] for x in after_flat], seed=0)
    _, low, high = clustered_difference(_pairs(before_flat), _pairs(after_flat), seed=0)
    assert high - low > 1.3 * (high_flat - low_flat)
    _, n_low, n_high = difference(rate(2, 80), rate(16, 80))
    assert high - low > n_high - n_low


def _pairs(outcomes: list[int]) -> list[list[int]]:
    """The same outcomes as prompts of two equal samples each."""
    return [[x, x] for x in outcomes[::2]]


def test_no_change_and_no_data() -> None:
    same = [[1, 0], [0, 0], [1, 1]]
    assert clustered_difference(same, same, resamples=500) == (0.0, 0.0, 0.0)
    assert clustered_difference([], []) is None
    with pytest.raises(ValueError):
        clustered_difference([[1]], [[1], [0]])
