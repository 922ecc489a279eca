"""PPO against the learned reward model, owned by the project since trl removed its PPOTrainer (1.13): a value
model started from the reward model, a per-token KL penalty to the lineage's reference v0, GAE and the
clipped losses. `config` holds the knobs (trl's old names), `maths` the tensor arithmetic, `trainer` the loop;
this module is the recipe the jobs call (KIND, CONFIG, train)."""

from __future__ import annotations

import logging

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from workers.ml.chat import prompt_texts
from workers.ml.loading import load_reward, load_tokenizer
from workers.recipes.base import RecipeInputs, build_config, callbacks_of, lora_config, require, train_and_save
from workers.recipes.ppo.config import PPORecipeConfig
from workers.recipes.ppo.trainer import PPOTrainer

log = logging.getLogger(__name__)

KIND = "policy"
CONFIG = PPORecipeConfig


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Optimise the policy on inputs.prompts with the reward model at inputs.reward_dir; save only the policy."""
    config = build_config(CONFIG, inputs)
    if inputs.reward_dir is None:
        raise ValueError("PPO needs reward_dir: train a reward model first")
    tokenizer = load_tokenizer(inputs.policy_dir)
    dataset = prompt_dataset(tokenizer, inputs.prompts, config.max_prompt_length)
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    require(len(dataset), batch, "prompts that fit max_prompt_length", "add prompts or lower the batch size")
    config.total_episodes = episodes(config, len(dataset), batch)
    policy = fp32(AutoModelForCausalLM, inputs.policy_dir)
    lora = lora_config(inputs, config)
    if lora is not None:
        from peft import get_peft_model

        policy = get_peft_model(policy, lora)
    reward_model, reward_tokenizer = load_reward(inputs.reward_dir, torch.float32)
    trainer = PPOTrainer(
        config,
        policy=policy,
        value_model=fp32(AutoModelForSequenceClassification, inputs.reward_dir, num_labels=1),
        reference=fp32(AutoModelForCausalLM, inputs.reference_dir),
        reward_model=reward_model,
        tokenizer=tokenizer,
        reward_tokenizer=reward_tokenizer,
        prompts=dataset,
        bf16=inputs.bf16,
        seed=inputs.seed,
        callbacks=callbacks_of(inputs, config),
    )
    return train_and_save(trainer, tokenizer, inputs, model=policy)


def fp32(cls: type, path: object, **kwargs: object) -> torch.nn.Module:
    """Master weights in fp32 whatever dtype the version was saved in (TRAIN_PRECISION's autocast runs over
    them); the value model starts from the reward model: same tokenizer, and already a judge of answers."""
    return cls.from_pretrained(str(path), dtype=torch.float32, **kwargs)


def prompt_dataset(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_length: int) -> Dataset:
    """Each prompt with its ids through the chat template and generation prompt; too-long ones left out."""
    ids = tokenizer(prompt_texts(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    kept = [(p, row) for p, row in zip(prompts, ids, strict=True) if len(row) <= max_length]
    if len(kept) < len(ids):
        log.warning("left out %d prompts longer than %d tokens", len(ids) - len(kept), max_length)
    return Dataset.from_dict({"prompt": [p for p, _ in kept], "input_ids": [row for _, row in kept]})


def episodes(config: PPORecipeConfig, n_prompts: int, batch: int) -> int:
    """Rollouts in all: max_steps batches when set, else total_episodes, else num_train_epochs over the prompts."""
    if config.max_steps > 0:
        return config.max_steps * batch
    return config.total_episodes or max(batch, int(config.num_train_epochs * n_prompts))
