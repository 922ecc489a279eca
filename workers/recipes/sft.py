"""Supervised fine-tuning on (prompt, response) rows: the answers' loss only."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig, SFTTrainer

from backend.core.defaults import MAX_LENGTH
from workers.ml.loading import load_tokenizer
from workers.recipes.base import (
    RecipeInputs,
    TrainConfig,
    build_config,
    callbacks_of,
    completion_dataset,
    lora_config,
    require,
    scratch_dir,
    train_and_save,
    trl_args,
)

KIND = "sft"


@dataclass
class SFTRecipeConfig(TrainConfig):
    """SFT knobs; names match trl's SFTConfig."""

    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate of AdamW."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the rows."})
    max_length: int = field(default=MAX_LENGTH, metadata={"help": "Prompt + answer tokens beyond this are truncated."})


CONFIG = SFTRecipeConfig


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Fine-tune the policy on inputs.sft_rows and save it to inputs.out_dir."""
    config = build_config(CONFIG, inputs)
    require(len(inputs.sft_rows), 1, "SFT rows", "provide {prompt, response} rows")
    tokenizer = load_tokenizer(inputs.policy_dir)
    with scratch_dir() as tmp:
        trainer = SFTTrainer(
            model=str(inputs.policy_dir),
            args=trl_args(SFTConfig, config, inputs, tmp),
            train_dataset=completion_dataset(inputs.sft_rows),
            processing_class=tokenizer,
            callbacks=callbacks_of(inputs, config),
            peft_config=lora_config(inputs, config),
        )
        return train_and_save(trainer, tokenizer, inputs)
