"""Bradley-Terry reward model on preference pairs, initialised from the policy so it shares its tokenizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trl import RewardConfig, RewardTrainer

from backend.core.defaults import MAX_LENGTH
from workers.ml.loading import load_tokenizer
from workers.recipes.base import (
    RecipeInputs,
    TrainConfig,
    build_config,
    callbacks_of,
    lora_config,
    require,
    reward_dataset,
    scratch_dir,
    train_and_save,
    trl_args,
)

log = logging.getLogger(__name__)


KIND = "reward"


@dataclass
class RewardRecipeConfig(TrainConfig):
    """Reward-model training knobs; names match trl's RewardConfig."""

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate of AdamW."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the preference pairs."})
    max_length: int = field(
        default=MAX_LENGTH, metadata={"help": "Pairs with a longer chosen or rejected side are dropped."}
    )
    center_rewards_coefficient: float | None = field(
        default=0.01, metadata={"help": "Pulls mean reward towards 0 so scores stay comparable across versions."}
    )


CONFIG = RewardRecipeConfig


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Train a reward model on inputs.pairs, evaluate it on inputs.eval_pairs, save it to inputs.out_dir."""
    config = build_config(CONFIG, inputs)
    require(len(inputs.pairs), 1, "preference pairs", "annotate more tasks before training the reward model")
    tokenizer = load_tokenizer(inputs.policy_dir)
    eval_dataset = reward_dataset(inputs.eval_pairs, tokenizer) if inputs.eval_pairs else None
    if eval_dataset is None:
        log.warning("no eval pairs: the reward model is trained without eval_accuracy/eval_loss")
    with scratch_dir() as tmp:
        trainer = RewardTrainer(
            model=str(inputs.policy_dir),
            args=trl_args(RewardConfig, config, inputs, tmp),
            train_dataset=reward_dataset(inputs.pairs, tokenizer),
            processing_class=tokenizer,
            callbacks=callbacks_of(inputs, config),
            peft_config=lora_config(inputs, config, task_type="SEQ_CLS", modules_to_save=["score"]),
        )
        return train_and_save(trainer, tokenizer, inputs, eval_dataset)
