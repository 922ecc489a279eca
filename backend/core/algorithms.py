"""The training recipes by name and kind, torch-free, so settings and the CLI know them without importing
trl. Each name is a module `workers/recipes/<name>.py` declaring the same KIND (a test ties the two).
Adding a recipe: its file, plus one line here."""
from __future__ import annotations

from typing import Literal

RecipeKind = Literal["reward", "policy", "sft"]

RECIPE_KINDS: dict[str, RecipeKind] = {
    "reward": "reward",
    "ppo": "policy",
    "dpo": "policy",
    "grpo": "policy",
    "rloo": "policy",
    "sft": "sft",
}
POLICY_ALGORITHMS: tuple[str, ...] = tuple(name for name, kind in RECIPE_KINDS.items() if kind == "policy")
# Recipes that maximise a reward model's score: that reward model cannot judge their policy fairly (it flatters).
REWARD_OPTIMISERS: tuple[str, ...] = ("ppo", "grpo", "rloo")
