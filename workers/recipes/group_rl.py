"""The group-sampling family (GRPO, RLOO): shared knobs, and one trainer run rewarded by the learned model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GenerationConfig
from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model

from backend.core.defaults import MAX_NEW_TOKENS
from workers.ml.generation import end_ids
from workers.ml.loading import load_reward, load_tokenizer
from workers.ml.scoring import score
from workers.recipes.base import (
    RecipeInputs,
    TrainConfig,
    callbacks_of,
    lora_config,
    prompt_dataset,
    require,
    scratch_dir,
    train_and_save,
    trl_args,
)


@dataclass
class GroupRLConfig(TrainConfig):
    """Knobs shared by the group-sampling trainers (GRPO, RLOO); names match trl's configs."""

    learning_rate: float = field(default=3e-6, metadata={"help": "Peak learning rate of AdamW."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Completions per micro-batch; × accumulation, a multiple of num_generations."}
    )
    num_generations: int = field(default=4, metadata={"help": "Completions sampled per prompt to form a group."})
    max_completion_length: int = field(
        default=MAX_NEW_TOKENS, metadata={"help": "Token budget of each sampled completion; default: MAX_NEW_TOKENS."}
    )
    mask_truncated_completions: bool = field(
        default=True,
        metadata={
            "help": "Leave completions cut at max_completion_length out of the loss (their "
            "reward, read as cut and penalised, still counts in the group's baseline)."
        },
    )
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature of the completions."})
    beta: float = field(
        default=0.04,
        metadata={"help": "KL coefficient to the lineage's reference policy v0, as in PPO and DPO (0 disables it)."},
    )


def train_group_rl(inputs: RecipeInputs, config: GroupRLConfig, trainer_cls: Any, args_cls: Any) -> dict[str, float]:
    """Run a trl group-sampling trainer on inputs.prompts, rewarded by the model at inputs.reward_dir."""
    check_groups(config, len(inputs.prompts))
    if inputs.reward_dir is None:
        raise ValueError(f"{trainer_cls.__name__} needs reward_dir: train a reward model first")
    tokenizer = load_tokenizer(inputs.policy_dir)
    ends = end_ids(GenerationConfig.from_pretrained(str(inputs.policy_dir)), tokenizer)
    with scratch_dir() as tmp:
        trainer = trainer_cls(
            model=str(inputs.policy_dir),
            reward_funcs=reward_function(inputs.reward_dir, ends, inputs.missing_eos_penalty),
            args=trl_args(args_cls, config, inputs, tmp),
            train_dataset=prompt_dataset(inputs.prompts),
            processing_class=tokenizer,
            callbacks=callbacks_of(inputs, config),
            peft_config=lora_config(inputs, config),
        )
        anchor_to_reference(trainer, inputs)
        return train_and_save(trainer, tokenizer, inputs)


def anchor_to_reference(trainer: Any, inputs: RecipeInputs) -> None:
    """trl's group trainers take their KL reference from the model they start from (or, with LoRA, the model
    without its adapters): this round's starting policy, which moves every round. The KL term anchors to the
    lineage's reference (v0) instead, as PPO's and DPO's do."""
    if trainer.beta == 0.0 or inputs.reference_dir.resolve() == inputs.policy_dir.resolve():
        return  # no KL term, or the round starts from v0 itself
    reference = AutoModelForCausalLM.from_pretrained(str(inputs.reference_dir), dtype=torch.float32)
    disable_dropout_in_model(reference)
    add_fused_lm_head(reference, temperature=trainer.temperature)  # trl reads the reference's log-probs fused
    trainer.ref_model = trainer.accelerator.prepare_model(reference, evaluation_mode=True)


def reward_function(reward_dir: Path, ends: list[int], missing_eos_penalty: float) -> Any:
    """The reward model as a trl reward function, reading each completion by the reward contract: one that
    ends with one of `ends` (the ids trl stops at) as finished, one cut at max_completion_length at its last
    token, penalised."""
    model, tokenizer = load_reward(reward_dir)

    def reward_model(
        prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        texts = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        answers = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        finished = [bool(ids) and ids[-1] in ends for ids in completion_ids]
        return score(model, tokenizer, texts, answers, finished, missing_eos_penalty)

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
