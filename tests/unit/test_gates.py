"""Promotion gates and the statistics behind them, from counts (the integration with real training is in
test_training_loop.py)."""

from __future__ import annotations

import pytest

from backend.core.gates import enforced, policy_verdict, reward_verdict
from backend.core.settings import Settings
from backend.core.stats import difference, rate, sign_test
from backend.labels.quality import agreement, human_win_rates

SETTINGS = Settings(gate_min_held_out=10, gate_alpha=0.05, kl_budget=0.5)


def test_wilson_interval_is_honest_about_small_samples() -> None:
    one = rate(1, 1)
    assert one.value == 1.0 and one.low < 0.25 and one.high == 1.0  # one held-out prompt is not "accuracy 1.0"
    many = rate(800, 1000)
    assert many.low == pytest.approx(0.7741, abs=1e-3) and many.high == pytest.approx(0.8233, abs=1e-3)
    assert rate(0, 0).value is None


def test_sign_test_and_difference() -> None:
    assert sign_test(0, 5) == pytest.approx(1 / 32)
    assert sign_test(5, 5) > 0.5 and sign_test(0, 0) == 1.0
    d, low, high = difference(rate(20, 100), rate(50, 100))
    assert d == pytest.approx(0.3) and 0.16 < low < 0.3 < high < 0.43


def test_reward_gate() -> None:
    worse = reward_verdict([False] * 12 + [True] * 8, [True] * 20, current=1, settings=SETTINGS)
    assert worse.status == "rejected" and "McNemar" in worse.reason and worse.p_value < 0.05
    noise = reward_verdict([True] * 14 + [False] * 6, [True] * 16 + [False] * 4, current=1, settings=SETTINGS)
    assert noise.status == "promoted"
    assert reward_verdict([True], [False], current=1, settings=SETTINGS).status == "unassessed"
    assert reward_verdict([True] * 30, None, current=None, settings=SETTINGS).status == "unassessed"


def test_policy_gate() -> None:
    loses = policy_verdict(wins=3, losses=17, ties=0, kl=0.1, judge="reward v1", previous=1, settings=SETTINGS)
    assert loses.status == "rejected" and loses.judge == "reward v1"
    assert policy_verdict(9, 11, 0, 0.1, "reward v1", 1, SETTINGS).status == "inconclusive"  # 0.5 in its interval
    assert policy_verdict(16, 4, 0, 0.1, "reward v1", 1, SETTINGS).status == "promoted"  # [0.58, 0.92]
    assert policy_verdict(18, 2, 0, 0.9, "reward v1", 1, SETTINGS).status == "rejected"  # over the KL budget
    assert policy_verdict(1, 3, 0, 0.1, "reward v1", 1, SETTINGS).status == "unassessed"  # 4 prompts
    assert policy_verdict(0, 20, 0, 0.1, None, 1, SETTINGS).status == "unassessed"  # no fair judge
    unheld = policy_verdict(20, 0, 0, 0.1, "reward v1", 1, SETTINGS, held_out=False)  # assessed on training prompts
    assert unheld.status == "unassessed" and "no held-out prompt" in unheld.reason
    assert reward_verdict([], None, None, SETTINGS).reason.startswith("unassessed (no held-out prompt)")
    # its own objective: a policy that maximised a reward model and lowered its mean reward failed, held out or not
    own = policy_verdict(20, 0, 0, 0.1, "reward v1", 1, SETTINGS, own=(0.0017, -0.861))
    assert own.status == "rejected" and "its own objective" in own.reason
    assert policy_verdict(1, 0, 0, 0.1, None, None, SETTINGS, held_out=False, own=(0.2, 0.2)).status == "rejected"
    assert policy_verdict(16, 4, 0, 0.1, "reward v1", 1, SETTINGS, own=(0.1, 0.3)).status == "promoted"
    flattering = policy_verdict(16, 4, 0, 0.1, "reward v1", 1, SETTINGS, judge_favours_baseline=True)
    assert "favours the previous policy" in flattering.reason
    off = enforced(loses, Settings(gates=False))
    assert off.status == "promoted" and "would have rejected" in off.reason
    assert enforced(loses, SETTINGS) is loses


def test_agreement_counts_only_comparisons_two_annotators_made() -> None:
    rows = [
        (1, "g", 7, "a", "b"),
        (1, "g", 8, "a", "b"),  # agree
        (2, "g", 7, "c", "d"),
        (2, "g", 8, "d", "c"),  # disagree
        (3, "g", 7, "e", "f"),
    ]  # one annotator: not a comparison
    result = agreement(rows)
    assert (result["k"], result["n"], result["tasks"]) == (1, 2, 2)


def test_human_win_rates_by_version_pair() -> None:
    rows = [([3, 2], ["new", "old"], "new"), ([2, 3], ["old2", "new2"], "new2"), ([3, 2], ["n", "o"], "o")]
    result = human_win_rates(rows)
    assert result["policy v3 vs v2"]["k"] == 2 and result["policy v3 vs v2"]["n"] == 3
