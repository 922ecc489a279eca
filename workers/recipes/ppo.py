"""PPO against the learned reward model, with a value model and a KL penalty to the reference policy."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer

from backend.core.defaults import MAX_NEW_TOKENS, MAX_PROMPT_LENGTH
from workers.ml.chat import prompt_texts
from workers.ml.loading import load_policy, load_reward, load_tokenizer
from workers.recipes.base import (
    RecipeInputs,
    TrainConfig,
    build_config,
    lora_config,
    require,
    scratch_dir,
    train_and_save,
    trl_args,
)
from workers.runtime.progress import PhaseProgress

log = logging.getLogger(__name__)


KIND = "policy"


@dataclass
class PPORecipeConfig(TrainConfig):
    """PPO knobs; names match trl's PPOConfig, except max_prompt_length."""

    learning_rate: float = field(default=3e-6, metadata={"help": "Peak learning rate of AdamW (policy and value)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the prompts (sizes total_episodes)."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Prompts to roll out in all; None = num_train_epochs × prompts (or max_steps)."}
    )
    response_length: int = field(
        default=MAX_NEW_TOKENS,
        metadata={"help": "Tokens sampled per response; default: MAX_NEW_TOKENS (shorter is faster)."},
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the rollouts."})
    kl_coef: float = field(default=0.05, metadata={"help": "Per-token KL penalty to the reference policy."})
    num_ppo_epochs: int = field(default=4, metadata={"help": "Optimisation passes over each rollout batch."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches each rollout batch is split into."})
    stop_token: Literal["eos"] | None = field(
        default="eos", metadata={"help": "Truncate responses after EOS before scoring ('eos'), or None."}
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={
            "help": "Subtracted from the score of responses cut before their EOS; filled from "
            "MISSING_EOS_PENALTY, the one penalty every stage applies (workers.ml.scoring)."
        },
    )
    local_rollout_forward_batch_size: int = field(default=16, metadata={"help": "Rollouts per no-grad forward."})
    num_sample_generations: int = field(default=0, metadata={"help": "Debug sample tables printed during training."})
    max_prompt_length: int = field(
        default=MAX_PROMPT_LENGTH, metadata={"help": "Prompts with more tokens are left out."}
    )


CONFIG = PPORecipeConfig


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Optimise the policy on inputs.prompts with the reward model at inputs.reward_dir; save only the policy."""
    config = build_config(CONFIG, inputs)
    if inputs.reward_dir is None:
        raise ValueError("PPO needs reward_dir: train a reward model first")
    tokenizer = load_tokenizer(inputs.policy_dir)
    dataset = prompt_ids(tokenizer, inputs.prompts, config.max_prompt_length)
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    require(len(dataset), batch, "prompts that fit max_prompt_length", "add prompts or lower the batch size")
    config.total_episodes = episodes(config, len(dataset), batch)
    with scratch_dir() as tmp, _mixed_precision(inputs.bf16):
        trainer = PPOTrainer(
            args=trl_args(PPOConfig, config, inputs, tmp),
            processing_class=tokenizer,
            model=AutoModelForCausalLM.from_pretrained(str(inputs.policy_dir), dtype=torch.float32),
            ref_model=load_policy(inputs.reference_dir)[0],
            reward_model=load_reward(inputs.reward_dir)[0],
            value_model=value_model(inputs),
            train_dataset=dataset,
            eval_dataset=dataset,
            callbacks=inputs.callbacks,
            peft_config=lora_config(inputs, config),
        )
        trainer.policy_model.register_forward_pre_hook(PhaseProgress("ppo", trainer.state))
        return train_and_save(trainer, tokenizer, inputs, model=trainer.policy_model)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_length: int) -> Dataset:
    """PPO takes token ids: each prompt through the chat template with the generation prompt, too-long ones dropped."""
    ids = tokenizer(prompt_texts(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    kept = [row for row in ids if len(row) <= max_length]
    if len(kept) < len(ids):
        log.warning("left out %d prompts longer than %d tokens", len(ids) - len(kept), max_length)
    return Dataset.from_dict({"input_ids": kept})


def episodes(config: PPORecipeConfig, n_prompts: int, batch: int) -> int:
    """Rollouts in all: max_steps batches when set, else total_episodes, else num_train_epochs over the prompts."""
    if config.max_steps > 0:
        return config.max_steps * batch
    return config.total_episodes or max(batch, int(config.num_train_epochs * n_prompts))


def value_model(inputs: RecipeInputs) -> AutoModelForSequenceClassification:
    """The critic starts from the reward model: same tokenizer, and already a judge of answers."""
    return AutoModelForSequenceClassification.from_pretrained(str(inputs.reward_dir), num_labels=1, dtype=torch.float32)


@contextmanager
def _mixed_precision(bf16: bool) -> Iterator[None]:
    """PPOTrainer builds its own Accelerator without a mixed-precision argument; accelerate then reads this
    variable, so bf16 autocast runs over the fp32 master weights instead of training in pure bf16."""
    previous = os.environ.get("ACCELERATE_MIXED_PRECISION")
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if bf16 else "no"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
        else:
            os.environ["ACCELERATE_MIXED_PRECISION"] = previous
