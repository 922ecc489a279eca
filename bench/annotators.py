"""Simulated annotators for bench/label_efficiency.py --setting loop. An annotator is FUNC(prompt, a, b) -> the
probability that answer a is preferred to answer b; `--annotator FILE.py:FUNC` loads anyone's.

Built in:
  gold     a gold reward model's Bradley-Terry preference sigmoid(r_a - r_b): the product's reward recipe
           trained here on real human preferences (HH-RLHF harmless-base, ../shared/data), cached
  short    the demo's rule: an answer that ends properly within 60 words beats one that does not
  no-list  an answer without a bulleted or numbered list beats one with a list
  shorter  graded: the shorter answer, sigmoid((words_b - words_a) / 10)
A rule that cannot tell two answers apart says 0.5 (an annotator flips a coin). `--noise` flips a share of
labels on top, as careless clicks would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import HH_DATA, MODEL_CACHE, embedded_policy, hh_pairs
from bench.everyday import RULES

Annotator = Callable[[str, str, str], float]
GOLD_PAIRS = 320  # HH pairs the gold reward model trains on (64 more held out): about 10 minutes on 2 cores
GOLD_HELD_OUT = 64
GOLD_ARGS = {"learning_rate": 2e-5, "num_train_epochs": 1, "max_length": 256, "per_device_train_batch_size": 8}


def rule_annotator(rule: Callable[[str], bool]) -> Annotator:
    """A single-answer rule as a preference: the passing answer wins; a tie is a coin flip."""

    def prefers(prompt: str, a: str, b: str) -> float:
        return 0.5 + 0.5 * (rule(a) - rule(b))

    prefers.__doc__ = rule.__doc__
    return prefers


def shorter(prompt: str, a: str, b: str) -> float:
    """The shorter answer, graded: sigmoid((words_b - words_a) / 10)."""
    return 1.0 / (1.0 + math.exp((len(a.split()) - len(b.split())) / 10))


class GoldAnnotator:
    """Bradley-Terry preference of a reward model trained on human preferences: sigmoid(r_a - r_b), with the
    product's reading of each answer (workers.ml.scoring: a cut answer read where it was cut, penalised)."""

    def __init__(self) -> None:
        self.rewards: dict[tuple[str, str], float] = {}

    def prepare(self, items: list[tuple[str, str, bool | None]]) -> None:
        """Score every (prompt, answer, finished) the bench will ask about, in batches; cached on disk."""
        from backend.core.settings import Settings
        from workers.ml.loading import load_reward
        from workers.ml.scoring import score

        cache = MODEL_CACHE / f"label-efficiency-gold-rewards-{GOLD_PAIRS}.json"
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        todo = [(p, a, f) for p, a, f in items if _key(p, a, f) not in known]
        if todo:
            model, tokenizer = load_reward(gold_reward_model())
            penalty = Settings.model_fields["missing_eos_penalty"].default
            started = time.monotonic()
            rewards = score(model, tokenizer, *zip(*todo, strict=True), missing_eos_penalty=penalty)
            print(f"  gold rewards of {len(todo)} answers in {time.monotonic() - started:.0f} s", flush=True)
            known.update({_key(*item): r for item, r in zip(todo, rewards, strict=True)})
            cache.write_text(json.dumps(known))
        self.rewards.update({(p, a): known[_key(p, a, f)] for p, a, f in items})

    def __call__(self, prompt: str, a: str, b: str) -> float:
        return 1.0 / (1.0 + math.exp(self.rewards[prompt, b] - self.rewards[prompt, a]))


def _key(prompt: str, answer: str, finished: bool | None) -> str:
    return hashlib.sha256(repr((prompt, answer, finished)).encode("utf-8", "surrogatepass")).hexdigest()


def gold_reward_model() -> Path:
    """The gold reward model: the reward recipe on GOLD_PAIRS HH-RLHF pairs from the embedded v0, trained once."""
    from workers.recipes import RECIPES
    from workers.recipes.base import RecipeInputs

    out = MODEL_CACHE / f"label-efficiency-gold-reward-{GOLD_PAIRS}"
    if (out / "config.json").is_file():
        return out
    pairs, _ = hh_pairs(HH_DATA)
    held = GOLD_HELD_OUT
    pairs = pairs[-(GOLD_PAIRS + held) :]  # the file's end: the pool's prompts are drawn from all of it
    started = time.perf_counter()
    metrics = RECIPES["reward"].train(
        RecipeInputs(
            policy_dir=embedded_policy(),
            reference_dir=embedded_policy(),
            out_dir=out,
            pairs=pairs[held:],
            eval_pairs=pairs[:held],
            overrides=GOLD_ARGS,
        )
    )
    print(
        f"gold reward model: {GOLD_PAIRS} HH pairs, held-out accuracy against the human labels "
        f"{metrics.get('eval_accuracy', float('nan')):.2f} on {held}, {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return out


def built_in() -> dict[str, Annotator]:
    return {
        "gold": GoldAnnotator(),
        "short": rule_annotator(RULES["short"]),
        "no-list": rule_annotator(RULES["no-list"]),
        "shorter": shorter,
    }


def load(spec: str) -> tuple[str, Annotator]:
    """A built-in annotator's name, or FILE.py:FUNC with FUNC(prompt, a, b) -> P(a preferred to b)."""
    if spec in built_in():
        return spec, built_in()[spec]
    path, _, name = spec.rpartition(":")
    if not path or not Path(path).is_file():
        raise SystemExit(f"--annotator {spec!r}: one of {sorted(built_in())} or FILE.py:FUNC (an existing file)")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, name, None)):
        raise SystemExit(f"--annotator {spec!r}: {path} has no function {name!r}")
    return spec, getattr(module, name)
