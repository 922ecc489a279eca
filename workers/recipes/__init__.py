"""The recipes, one trl-style module each (a Config beside its train function), and the registry that loads every
name in backend.core.algorithms from its module (KIND, CONFIG, train). Recipes may import workers.ml, trl,
transformers, peft, backend.core and the progress callbacks of workers.runtime.progress; never the jobs, Redis
or the store."""

from __future__ import annotations

from dataclasses import asdict
from importlib import import_module
from types import ModuleType
from typing import Any

from backend.core.algorithms import RECIPE_KINDS
from workers.recipes.base import RecipeInputs, build_config

RECIPES: dict[str, ModuleType] = {name: import_module(f"workers.recipes.{name}") for name in RECIPE_KINDS}


def hyperparameters(name: str, inputs: RecipeInputs) -> dict[str, Any]:
    """The recipe's config as it trains with these inputs (defaults, settings, TRAIN_ARGS), for meta.json."""
    return asdict(build_config(RECIPES[name].CONFIG, inputs))
