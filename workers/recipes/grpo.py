"""GRPO: group-relative policy optimisation against the learned reward model."""

from __future__ import annotations

from dataclasses import dataclass

from trl import GRPOConfig, GRPOTrainer

from workers.recipes.base import RecipeInputs, build_config
from workers.recipes.group_rl import GroupRLConfig, train_group_rl

KIND = "policy"


@dataclass
class GRPORecipeConfig(GroupRLConfig):
    """GRPO knobs: the shared group-sampling ones; names match trl's GRPOConfig."""


CONFIG = GRPORecipeConfig


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Optimise the policy on inputs.prompts with the reward model at inputs.reward_dir."""
    return train_group_rl(inputs, build_config(CONFIG, inputs), GRPOTrainer, GRPOConfig)
