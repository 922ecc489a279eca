"""PPO's knobs: the names of trl's old PPOConfig (trl removed PPO in 1.13), so TRAIN_ARGS written for it work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from backend.core.defaults import MAX_NEW_TOKENS, MAX_PROMPT_LENGTH
from workers.recipes.base import TrainConfig
from workers.recipes.ppo.maths import KLEstimator


@dataclass
class PPORecipeConfig(TrainConfig):
    """PPO knobs; names and defaults match trl 1.12's PPOConfig, plus max_prompt_length, top_p and top_k (trl's
    PPO always drew from the whole vocabulary, as these defaults do) and max_grad_norm (trl never clipped)."""

    learning_rate: float = field(default=3e-6, metadata={"help": "Peak learning rate of AdamW (policy and value)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the prompts (sizes total_episodes)."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Prompts to roll out in all; None = num_train_epochs × prompts (or max_steps)."}
    )
    response_length: int = field(
        default=MAX_NEW_TOKENS,
        metadata={"help": "Tokens sampled per response; default: MAX_NEW_TOKENS (shorter is faster)."},
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the rollouts."})
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "Nucleus sampling of the rollouts; 1.0: the whole tempered distribution, whose log-probabilities "
            "PPO optimises (a truncated draw lets probability drift to tokens rollouts never sample)."
        },
    )
    top_k: int = field(default=0, metadata={"help": "Top-k sampling of the rollouts (0: the whole vocabulary)."})
    kl_coef: float = field(default=0.05, metadata={"help": "Per-token KL penalty to the reference policy (v0)."})
    kl_estimator: KLEstimator = field(
        default="k1", metadata={"help": "Per-token KL estimator in the reward: 'k1' (log p - log q) or 'k3'."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Optimisation passes over each rollout batch."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches each rollout batch is split into."})
    cliprange: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value update."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss beside the policy loss."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of GAE."})
    lam: float = field(default=0.95, metadata={"help": "Lambda of GAE (bias against variance)."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the per-token rewards of each batch."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradients' global norm (0: no clipping)."})
    stop_token: Literal["eos"] | None = field(
        default="eos", metadata={"help": "End responses at EOS ('eos'), or None: sample all response_length tokens."}
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={
            "help": "Subtracted from the score of responses cut before their EOS; filled from "
            "MISSING_EOS_PENALTY, the one penalty every stage applies (workers.ml.scoring)."
        },
    )
    local_rollout_forward_batch_size: int = field(
        default=16, metadata={"help": "Rollouts per generate() and per no-grad forward."}
    )
    num_sample_generations: int = field(
        default=0, metadata={"help": "Times a rollout sample (prompt, answer, score) is logged during training."}
    )
    max_prompt_length: int = field(
        default=MAX_PROMPT_LENGTH, metadata={"help": "Prompts with more tokens are left out."}
    )
