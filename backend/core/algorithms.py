"""The training recipes by name and their traits, torch-free, so settings, the CLI and the gates know them
without importing trl. Each name is a module `workers/recipes/<name>.py` declaring the same KIND (a test ties
the two). Adding a recipe: its file, plus one line in RECIPES."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RecipeKind = Literal["reward", "policy", "sft"]


@dataclass(frozen=True)
class Traits:
    """What the rest of the system needs to know about a recipe."""

    kind: RecipeKind
    # Maximises a reward model's score: that reward model would flatter its policy, so the policy's gate is judged
    # by another reward model (the newest other servable one), and the policy must raise the score it maximised.
    optimises_reward: bool = False


RECIPES: dict[str, Traits] = {
    "reward": Traits("reward"),
    "ppo": Traits("policy", optimises_reward=True),
    "dpo": Traits("policy"),
    "grpo": Traits("policy", optimises_reward=True),
    "rloo": Traits("policy", optimises_reward=True),
    "sft": Traits("sft"),
}
RECIPE_KINDS: dict[str, RecipeKind] = {name: traits.kind for name, traits in RECIPES.items()}
POLICY_ALGORITHMS: tuple[str, ...] = tuple(name for name, kind in RECIPE_KINDS.items() if kind == "policy")
REWARD_OPTIMISERS: tuple[str, ...] = tuple(name for name, traits in RECIPES.items() if traits.optimises_reward)
