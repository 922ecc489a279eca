"""The recipe registry: a new algorithm is one module plus one line here."""
from __future__ import annotations

from types import ModuleType

from workers.recipes import dpo, grpo, ppo, reward, rloo, sft

RECIPES: dict[str, ModuleType] = {
    "reward": reward,
    "ppo": ppo,
    "dpo": dpo,
    "grpo": grpo,
    "rloo": rloo,
    "sft": sft,
}
