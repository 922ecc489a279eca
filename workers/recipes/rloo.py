"""RLOO: REINFORCE with a leave-one-out baseline against the learned reward model."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RLOOConfig, RLOOTrainer

from workers.recipes.base import RecipeInputs, build_config
from workers.recipes.group_rl import GroupRLConfig, train_group_rl

KIND = "policy"


@dataclass
class RLOORecipeConfig(GroupRLConfig):
    """RLOO knobs: the shared group-sampling ones; names match trl's RLOOConfig."""

    beta: float = field(default=0.05, metadata={"help": "KL coefficient to the starting policy (0 disables it)."})


CONFIG = RLOORecipeConfig


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Optimise the policy on inputs.prompts with the reward model at inputs.reward_dir."""
    return train_group_rl(inputs, build_config(CONFIG, inputs), RLOOTrainer, RLOOConfig)
