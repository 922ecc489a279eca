"""PPO's arithmetic against hand-computed cases: GAE, whitening, the per-token reward, the clipped losses."""

from __future__ import annotations

import math

import pytest
import torch

from workers.recipes.ppo.maths import (
    gae,
    kl_estimate,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_by_hand() -> None:
    """gamma 1, lambda 0.5: deltas r_t + V_{t+1} - V_t, folded from the end."""
    rewards, values, mask = t([0, 0, 1]), t([0.5, 0.2, 0.1]), torch.ones(1, 3, dtype=torch.bool)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=2: 1 - 0.1 = 0.9; t=1: 0 + 0.1 - 0.2 + 0.5 × 0.9 = 0.35; t=0: 0.2 - 0.5 + 0.5 × 0.35 = -0.125
    assert advantages.tolist()[0] == pytest.approx([-0.125, 0.35, 0.9])
    assert returns.tolist()[0] == pytest.approx([0.375, 0.55, 1.0])


def test_gae_ignores_what_lies_after_the_answer() -> None:
    """A padded position's reward and value leak nothing back: the answer's last value bootstraps from 0."""
    mask = torch.tensor([[True, True, False]])
    advantages, returns = gae(t([0, 1, 5]), t([0.5, 0.2, 9.0]), mask, gamma=0.9, lam=1.0)
    # t=1: 1 - 0.2 = 0.8; t=0: 0.9 × 0.2 - 0.5 + 0.9 × 0.8 = 0.4
    assert advantages.tolist()[0] == pytest.approx([0.4, 0.8, 0.0])
    assert returns.tolist()[0] == pytest.approx([0.9, 1.0, 0.0])


def test_the_score_lands_on_the_answers_last_token_and_the_kl_penalty_on_every_token() -> None:
    kl, mask = t([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]), torch.tensor([[True, True, True], [True, False, False]])
    rewards = token_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.5)
    assert rewards.tolist()[0] == pytest.approx([-0.05, -0.1, 2.0 - 0.15])
    assert rewards.tolist()[1] == pytest.approx([-1.0 - 0.05, 0.0, 0.0])


def test_whitening_over_the_answer_tokens_only() -> None:
    mask = torch.tensor([[True, True, False], [True, True, False]])
    whitened = masked_whiten(t([1, 2, 100], [3, 4, -100]), mask)
    inside = whitened[mask]
    assert float(inside.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(inside.std(unbiased=True)) == pytest.approx(1.0, abs=1e-4)
    assert whitened[~mask].tolist() == [0.0, 0.0]
    kept = masked_whiten(t([1, 2, 100], [3, 4, -100]), mask, shift_mean=False)[mask]
    assert float(kept.mean()) == pytest.approx(2.5, abs=1e-5)


@pytest.mark.parametrize(
    "ratio, advantage, loss, clipped",
    [
        (1.1, 1.0, -1.1, 0.0),  # inside the clip range: the plain surrogate
        (1.2, 1.0, -1.2, 0.0),  # at the clip: both agree
        (1.5, 1.0, -1.2, 1.0),  # beyond, in the advantage's direction: no more credit than 1 + clip
        (1.5, -1.0, 1.5, 0.0),  # beyond, against it: the pessimistic unclipped loss stands
        (0.5, -1.0, 0.8, 1.0),  # below 1 - clip with a negative advantage: clipped
    ],
)
def test_clipped_policy_loss(ratio: float, advantage: float, loss: float, clipped: float) -> None:
    mask = torch.ones(1, 1, dtype=torch.bool)
    got, share = policy_loss(t([math.log(ratio)]), t([0.0]), t([advantage]), mask, cliprange=0.2)
    assert float(got) == pytest.approx(loss, abs=1e-6) and float(share) == clipped


@pytest.mark.parametrize(
    "new_value, loss, clipped",
    [
        (0.1, 0.5 * 0.81, 0.0),  # within cliprange_value of the rollout's value
        (0.5, 0.5 * 0.64, 1.0),  # moved 0.5 toward the return: the clipped (0.2) error, 0.8², counts
    ],
)
def test_clipped_value_loss(new_value: float, loss: float, clipped: float) -> None:
    mask = torch.ones(1, 1, dtype=torch.bool)
    got, share = value_loss(t([new_value]), t([0.0]), t([1.0]), mask, cliprange_value=0.2)
    assert float(got) == pytest.approx(loss, abs=1e-6) and float(share) == clipped


def test_kl_estimators() -> None:
    logprobs, reference = t([-1.0, -2.0]), t([-1.5, -1.0])
    assert kl_estimate(logprobs, logprobs, "k1").abs().sum() == 0 == kl_estimate(logprobs, logprobs, "k3").abs().sum()
    assert kl_estimate(logprobs, reference, "k1").tolist()[0] == pytest.approx([0.5, -1.0])
    k3 = kl_estimate(logprobs, reference, "k3")
    assert (k3 >= 0).all() and k3.tolist()[0] == pytest.approx([math.exp(-0.5) - 1 + 0.5, math.exp(1) - 1 - 1])
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(logprobs, reference, "k2")  # type: ignore[arg-type]
