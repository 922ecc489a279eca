"""The project's own PPO (trl removed its PPOTrainer in 1.13) on tiny local models: it starts with no KL to its
reference, and a round raises the reward of a trivial rule with bounded KL."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.workers.test_recipes import OVERRIDES, PROMPTS, make_inputs, weights_changed
from workers.ml.evaluate import policy_metrics
from workers.recipes import RECIPES

ONE_STEP = OVERRIDES["ppo"] | {"max_steps": 1, "per_device_train_batch_size": 8}


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-mixed"])
def test_kl_to_the_reference_is_zero_at_step_0_and_only_then(
    bf16: bool, models: SimpleNamespace, tmp_path: Path
) -> None:
    """The first rollouts are read before any update: from v0 itself the KL is exactly 0 (the same weights, the
    same computation); from another policy against v0, it is there from the start."""
    same = RECIPES["ppo"].train(make_inputs(models, tmp_path / "same", bf16=bf16, overrides=ONE_STEP))
    assert same["objective/kl"] == 0.0 and same["objective/non_score_reward"] == 0.0
    other = RECIPES["ppo"].train(
        make_inputs(models, tmp_path / "other", policy_dir=models.other, bf16=bf16, overrides=ONE_STEP)
    )
    assert other["objective/kl"] > 0.1, other["objective/kl"]


def test_a_round_raises_the_reward_of_a_trivial_rule_with_bounded_kl(models: SimpleNamespace, tmp_path: Path) -> None:
    """The rule is the untrained reward model's: a fixed random readout of the answer's last hidden state (dense:
    every answer scores differently), and MISSING_EOS_PENALTY on answers cut at 16 tokens, which a random tiny
    policy almost always is (seeds 0-2 gained 0.11-0.21 here). Judged afterwards on fresh samples, as the
    job's gate judges a policy: the reward rises while KL to v0 stays small."""
    overrides = OVERRIDES["ppo"] | {"max_steps": 20, "per_device_train_batch_size": 8, "num_ppo_epochs": 4}
    overrides["response_length"] = 16
    inputs = make_inputs(models, tmp_path / "out", missing_eos_penalty=1.0, overrides=overrides)
    metrics = RECIPES["ppo"].train(inputs)
    judged = policy_metrics(
        tmp_path / "out", models.policy, models.policy, models.reward, models.reward, PROMPTS * 8, 16, 1.0
    )
    assert judged["own_reward_after"] > judged["own_reward_before"] + 0.05, judged
    assert judged["kl"] < 0.5 and metrics["objective/kl"] < 10, (judged["kl"], metrics["objective/kl"])


def test_ppo_trains_through_accelerate_launch(models: SimpleNamespace, tmp_path: Path) -> None:
    """TRAIN_PROCESSES > 1 runs PPO as every recipe runs: `accelerate launch -m workers.runtime.launch` (one CPU
    process here; on GPUs its Accelerator wraps policy and value in one DDP module)."""
    from workers.runtime.launch import run_recipe

    inputs = make_inputs(models, tmp_path / "out", overrides=ONE_STEP)
    metrics = run_recipe("ppo", inputs, processes=2)
    assert {"objective/kl", "objective/scores", "loss/policy_avg"} <= set(metrics)
    assert weights_changed(models.policy, inputs.out_dir)
    assert not list(inputs.out_dir.glob("launch*.json"))


@pytest.mark.parametrize("name", ["ppo", "sft"])
def test_max_train_minutes_stops_at_the_first_step_past_the_deadline(
    name: str, models: SimpleNamespace, tmp_path: Path
) -> None:
    """A time cap (TRAIN_ARGS' max_train_minutes), for our PPO and trl's trainers alike: the step that ends
    past it is the last, and the model is saved."""
    overrides = OVERRIDES[name] | {"max_steps": 3, "max_train_minutes": 1e-6}
    metrics = RECIPES[name].train(make_inputs(models, tmp_path / "out", overrides=overrides))
    assert metrics["step"] == 1 and (tmp_path / "out" / "model.safetensors").is_file()
