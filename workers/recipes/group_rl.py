"""The group-sampling family (GRPO, RLOO): shared knobs, and one trainer run rewarded by the learned model."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.loading import load_reward, load_tokenizer
from workers.recipes.base import (
    RecipeInputs, TrainConfig, lora_config, prompt_dataset, require, scratch_dir, train_and_save, trl_args,
)
from workers.scoring import score


@dataclass
class GroupRLConfig(TrainConfig):
    """Knobs shared by the group-sampling trainers (GRPO, RLOO); names match trl's configs."""

    learning_rate: float = field(default=3e-6, metadata={"help": "Peak learning rate of AdamW."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Completions per micro-batch; × accumulation, a multiple of num_generations."}
    )
    num_generations: int = field(default=4, metadata={"help": "Completions sampled per prompt to form a group."})
    max_completion_length: int = field(
        default=128, metadata={"help": "Token budget of each sampled completion; default: MAX_NEW_TOKENS."}
    )
    mask_truncated_completions: bool = field(
        default=True, metadata={"help": "Leave completions cut at max_completion_length out of the loss."}
    )
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature of the completions."})
    beta: float = field(default=0.04, metadata={"help": "KL coefficient to the starting policy (0 disables it)."})


def train_group_rl(inputs: RecipeInputs, config: GroupRLConfig, trainer_cls: Any, args_cls: Any) -> dict[str, float]:
    """Run a trl group-sampling trainer on inputs.prompts, rewarded by the model at inputs.reward_dir."""
    check_groups(config, len(inputs.prompts))
    if inputs.reward_dir is None:
        raise ValueError(f"{trainer_cls.__name__} needs reward_dir: train a reward model first")
    tokenizer = load_tokenizer(inputs.policy_dir)
    with scratch_dir() as tmp:
        trainer = trainer_cls(
            model=str(inputs.policy_dir), reward_funcs=reward_function(inputs.reward_dir),
            args=trl_args(args_cls, config, inputs, tmp), train_dataset=prompt_dataset(inputs.prompts),
            processing_class=tokenizer, callbacks=inputs.callbacks, peft_config=lora_config(inputs, config),
        )
        return train_and_save(trainer, tokenizer, inputs)


def reward_function(reward_dir: Path) -> Any:
    """The reward model as a trl reward function, scoring exactly as reward training and PPO do (at EOS)."""
    model, tokenizer = load_reward(reward_dir)

    def reward_model(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        answers = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return score(model, tokenizer, texts, answers)

    return reward_model


def check_groups(config: GroupRLConfig, n_prompts: int) -> None:
    """Each step samples whole groups: the batch must split into groups, and there must be enough prompts."""
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    if config.num_generations < 2 or batch % config.num_generations:
        raise ValueError(
            f"per_device_train_batch_size × gradient_accumulation_steps ({batch}) must be a multiple of "
            f"num_generations ({config.num_generations}), which must be at least 2; change one of them"
        )
    require(n_prompts, batch // config.num_generations, "prompts", "add prompts or lower per_device_train_batch_size")
