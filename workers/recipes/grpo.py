"""GRPO: group-relative policy optimisation against the learned reward model."""
from __future__ import annotations

from dataclasses import dataclass

from trl import GRPOConfig, GRPOTrainer

from workers.recipes.base import GroupRLConfig, RecipeInputs, build_config, train_group_rl


@dataclass
class GRPORecipeConfig(GroupRLConfig):
    """GRPO knobs: the shared group-sampling ones; names match trl's GRPOConfig."""


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Optimise the policy on inputs.prompts with the reward model at inputs.reward_dir."""
    return train_group_rl(inputs, build_config(GRPORecipeConfig, inputs), GRPOTrainer, GRPOConfig)
