"""Selection strategies (workers.ml.choice): what each shows and in which order, on heads whose answers are known."""

from __future__ import annotations

import pytest
import torch

from backend.core.settings import SELECTIONS as STRATEGIES
from workers.ml.choice import plan
from workers.ml.head import BayesianHead, HeadConfig


def fitted(dim: int = 3, seed: int = 0) -> BayesianHead:
    """A head that has learnt the first feature matters (the first is preferred along it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, dim, generator=g, dtype=torch.float64) * 0.3
    x[:, 0] = x[:, 0].abs() + 1.0
    return BayesianHead(dim, HeadConfig(prior_precision=1.0)).fit(x)


def tasks(n: int, k: int = 4, dim: int = 3, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(k, dim, generator=g, dtype=torch.float64) for _ in range(n)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_shows_two_distinct_of_k_and_weighs_every_task(strategy: str) -> None:
    chosen = plan(fitted(), tasks(12), strategy, shown=2)
    assert len(chosen.shown) == len(chosen.worth) == 12
    assert all(len(set(s)) == 2 and all(0 <= c < 4 for c in s) for s in chosen.shown)
    assert all(w == w for w in chosen.worth)  # no NaN


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_ranker_shows_all_k_in_an_order_that_varies(strategy: str) -> None:
    chosen = plan(fitted(), tasks(30), strategy, shown=4)
    assert all(sorted(s) == [0, 1, 2, 3] for s in chosen.shown)
    assert len({tuple(s) for s in chosen.shown}) > 5  # shuffled against position bias, not always 0..3


def test_fisher_shows_the_pair_the_head_is_least_sure_of() -> None:
    head = fitted()
    features = torch.tensor([[3.0, 0, 0], [-3.0, 0, 0], [0, 2.0, 0], [0, -2.0, 0]], dtype=torch.float64)
    # 0 vs 1 is settled by the learnt first feature; 2 vs 3 differ only along an unlearnt one
    assert sorted(plan(head, [features], "fisher").shown[0]) == [2, 3]


def test_d_optimal_does_not_ask_the_same_question_twice() -> None:
    head = fitted()
    twin = torch.tensor([[0, 2.0, 0], [0, -2.0, 0], [0, 0, 0.5], [0, 0, -0.5]], dtype=torch.float64)
    other = torch.tensor([[0, 0, 1.5], [0, 0, -1.5], [0.1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    fisher = plan(head, [twin, twin.clone(), other], "fisher").worth
    joint = plan(head, [twin, twin.clone(), other], "d-optimal").worth
    assert fisher[0] == pytest.approx(fisher[1]) and fisher[1] > fisher[2]  # per item: both twins first
    first = max(range(2), key=lambda i: joint[i])
    # jointly: once one twin is queued its question is answered, so the other direction comes next
    assert joint[first] >= joint[2] > joint[1 - first]


def test_the_joint_update_is_the_posterior_given_the_queued_label() -> None:
    """After queueing one comparison x, the covariance the strategy conditions on is (S^-1 + p(1-p) x x')^-1."""
    head = fitted()
    features = torch.tensor([[0, 2.0, 0], [0, -2.0, 0]], dtype=torch.float64)
    probe = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    worth = plan(head, [features, probe], "d-optimal", shown=2).worth
    x = features[0] - features[1]
    p = torch.sigmoid(head.mean(x[None]))[0]
    conditioned = torch.linalg.inv(torch.linalg.inv(head.cov) + p * (1 - p) * torch.outer(x, x))
    d = probe[0] - probe[1]
    q = torch.sigmoid(head.mean(d[None]))[0]
    assert worth[1] == pytest.approx(float(q * (1 - q) * d @ conditioned @ d), rel=1e-9)


def test_double_thompson_pits_the_likely_winner_against_a_plausible_rival() -> None:
    head = fitted()
    features = torch.tensor([[4.0, 0, 0], [-4.0, 0, 0], [-4.5, 0, 0], [-5.0, 0, 0]], dtype=torch.float64)
    shown = [sorted(s) for s in plan(head, [features] * 50, "dts").shown]
    assert all(0 in s for s in shown)  # the clear winner is always the first draw's best


def test_random_is_random_and_an_unknown_strategy_says_so() -> None:
    chosen = plan(fitted(), tasks(60), "random")
    assert len({tuple(sorted(s)) for s in chosen.shown}) == 6  # every pair of 4 turns up
    with pytest.raises(ValueError, match="d-optimal"):
        plan(fitted(), tasks(2), "nonsense")


def test_v_optimal_prefers_the_question_many_others_share_to_an_outlier() -> None:
    """Two directions the head knows nothing about: one shared by many offered pairs, one by a single pair
    whose difference is larger. D-optimal asks the larger (its own variance is higher); V-optimal asks the
    shared one, which lowers the predictive variance of every pair like it."""
    head = BayesianHead(3, HeadConfig(prior_precision=1.0)).fit(torch.zeros(0, 3, dtype=torch.float64))
    common = [torch.tensor([[0, 1.0, 0], [0, -1.0, 0]], dtype=torch.float64) for _ in range(8)]
    outlier = torch.tensor([[0, 0, 1.6], [0, 0, -1.6]], dtype=torch.float64)
    chosen = {s: plan(head, [*common, outlier], s, shown=2, first=1).worth for s in ("d-optimal", "v-optimal")}
    assert max(range(9), key=lambda i: chosen["d-optimal"][i]) == 8
    assert max(range(9), key=lambda i: chosen["v-optimal"][i]) < 8


def test_the_v_optimal_update_matches_the_conditioned_covariance() -> None:
    """The incremental x'SHSx after queueing one comparison equals it recomputed from (S^-1 + l x x')^-1."""
    head = fitted()
    offered = tasks(3, k=2, seed=4)
    worth = plan(head, offered, "v-optimal", shown=2).worth
    x = torch.stack([t[0] - t[1] for t in offered])
    weight = torch.sigmoid(head.mean(x)) * (1 - torch.sigmoid(head.mean(x)))
    order = sorted(range(3), key=lambda i: -worth[i])
    first, second = order[0], order[1]
    cov = torch.linalg.inv(torch.linalg.inv(head.cov) + weight[first] * torch.outer(x[first], x[first]))
    spread = (x.T * weight) @ x
    r = x[second]
    expected = weight[second] * (r @ cov @ spread @ cov @ r) / (1 + weight[second] * (r @ cov @ r))
    assert worth[second] == pytest.approx(float(expected), rel=1e-9)
