"""RLOO: REINFORCE with a leave-one-out baseline against the learned reward model."""
from __future__ import annotations

from dataclasses import dataclass, field

from trl import RLOOConfig, RLOOTrainer

from workers.recipes.base import GroupRLConfig, RecipeInputs, build_config, train_group_rl


@dataclass
class RLOORecipeConfig(GroupRLConfig):
    """RLOO knobs: the shared group-sampling ones; names match trl's RLOOConfig."""

    beta: float = field(default=0.05, metadata={"help": "KL coefficient to the starting policy (0 disables it)."})


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Optimise the policy on inputs.prompts with the reward model at inputs.reward_dir."""
    return train_group_rl(inputs, build_config(RLOORecipeConfig, inputs), RLOOTrainer, RLOOConfig)
