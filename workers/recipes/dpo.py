"""Direct preference optimisation of the policy on preference pairs, anchored to the reference policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, DPOTrainer

from backend.core.defaults import MAX_LENGTH
from workers.ml.loading import load_policy, load_tokenizer
from workers.recipes.base import (
    RecipeInputs,
    TrainConfig,
    build_config,
    callbacks_of,
    lora_config,
    preference_dataset,
    require,
    scratch_dir,
    train_and_save,
    trl_args,
)

KIND = "policy"


@dataclass
class DPORecipeConfig(TrainConfig):
    """DPO knobs; names match trl's DPOConfig."""

    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate of AdamW."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the preference pairs."})
    beta: float = field(default=0.1, metadata={"help": "Strength of the implicit KL to the reference policy."})
    max_length: int = field(default=MAX_LENGTH, metadata={"help": "Prompt + answer tokens beyond this are truncated."})


CONFIG = DPORecipeConfig


def train(inputs: RecipeInputs) -> dict[str, float]:
    """Optimise the policy on inputs.pairs (eval on inputs.eval_pairs if any) and save it to inputs.out_dir."""
    config = build_config(CONFIG, inputs)
    require(len(inputs.pairs), 1, "preference pairs", "annotate more tasks before running DPO")
    tokenizer = load_tokenizer(inputs.policy_dir)
    reference, _ = load_policy(inputs.reference_dir)
    eval_dataset = preference_dataset(inputs.eval_pairs) if inputs.eval_pairs else None
    with scratch_dir() as tmp:
        trainer = DPOTrainer(
            model=str(inputs.policy_dir),
            ref_model=reference,
            args=trl_args(DPOConfig, config, inputs, tmp),
            train_dataset=preference_dataset(inputs.pairs),
            processing_class=tokenizer,
            callbacks=callbacks_of(inputs, config),
            peft_config=lora_config(inputs, config),
        )
        return train_and_save(trainer, tokenizer, inputs, eval_dataset)
