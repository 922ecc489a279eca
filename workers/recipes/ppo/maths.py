"""PPO's arithmetic on [batch, response tokens] tensors, free of models: the per-token reward with its KL
penalty, GAE, whitening, and the clipped losses. `mask` is True on the tokens an answer holds (up to and
including its EOS); every function leaves the other positions out."""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over the masked-in positions."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked-in positions (unbiased variance); shift_mean=False keeps the mean."""
    count = mask.sum()
    if count < 2:
        raise ValueError("whitening needs at least two answer tokens in the batch; raise the batch size")
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask) * count / (count - 1)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token KL(policy || reference) from the sampled tokens' log-probabilities (Schulman's estimators):
    k1 = log p - log q, unbiased, the classic penalty in the reward; k3 = (r - 1) - log r with r = q / p,
    unbiased and never negative."""
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return log_ratio.exp() - 1 - log_ratio
    raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {estimator!r}")


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """The position of each answer's last token (its EOS, or where it was cut)."""
    return (mask.long().sum(1) - 1).clamp_min(0)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """-kl_coef × KL on every answer token, plus the reward model's score on the answer's last token: the
    token the reward contract reads it at."""
    rewards = -kl_coef * kl * mask
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last_index(mask)] += scores
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, (advantages, returns); after an answer's last token the value is 0,
    so nothing leaks back from padding."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, (loss, share of tokens where the clip bound)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return masked_mean(torch.max(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The value model's clipped squared error, (loss, share of tokens where the clip bound): a new value
    may move at most cliprange_value from the rollout's."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    return 0.5 * masked_mean(torch.max(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)
