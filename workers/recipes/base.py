"""What every recipe receives and returns, so that jobs can run any of them the same way."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import GenerationConfig, TrainerCallback

from backend.core.settings import Settings
from workers.ml.chat import user_message
from workers.ml.scoring import reward_ids

log = logging.getLogger(__name__)
C = TypeVar("C")
_DEFAULTS = Settings.model_fields  # a recipe run outside a job reads the backend's defaults


@dataclass
class RecipeInputs:
    """Everything a recipe may train from; the job fills what the recipe needs."""

    policy_dir: Path  # current policy (HF dir): the starting point
    reference_dir: Path  # SFT reference policy (version 0 by default), for KL
    out_dir: Path  # where the recipe saves the trained model + tokenizer (HF dir, safetensors)
    reward_dir: Path | None = None  # current reward model (sequence classifier, num_labels=1)
    # train / held-out {prompt, chosen, rejected, chosen_finished, rejected_finished}; None = not recorded
    pairs: list[dict[str, Any]] = field(default_factory=list)
    eval_pairs: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)  # train prompts for on-policy RL
    sft_rows: list[dict[str, str]] = field(default_factory=list)  # {prompt, response} for SFT
    bf16: bool = False  # TRAIN_PRECISION: bf16 autocast over fp32 master weights; the saved model stays fp32
    max_new_tokens: int = _DEFAULTS["max_new_tokens"].default  # MAX_NEW_TOKENS: candidates, rollouts, evaluation
    missing_eos_penalty: float = _DEFAULTS["missing_eos_penalty"].default  # MISSING_EOS_PENALTY (workers.ml.scoring)
    use_lora: bool = False  # train LoRA adapters and merge them before saving
    seed: int = 0
    callbacks: list[Any] = field(default_factory=list)  # transformers TrainerCallbacks (job progress)
    overrides: dict[str, Any] = field(default_factory=dict)  # TRAIN_ARGS: override recipe-config fields


# --- shared helpers: what recipes would otherwise repeat ---------------------------------------------------------


@dataclass
class TrainConfig:
    """Training knobs every recipe has; a recipe redeclares a field to change its default."""

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate of AdamW."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0, stop after this many optimizer steps instead."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Examples per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Examples per device per eval batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations to save memory; only worth it for big models on GPU."}
    )
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Learning-rate schedule (transformers name)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank, when USE_LORA=true."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r scales the update)."})
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "Stop at the first step that ends after this many minutes and save (None: no limit)."},
    )


def build_config(cls: type[C], inputs: RecipeInputs) -> C:
    """Recipe defaults, then the settings every recipe shares, then the overrides that name a field (others
    are ignored, loudly)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(inputs.overrides) - names)
    if unknown:
        log.warning("ignoring overrides %s: not fields of %s", unknown, cls.__name__)
    shared = {
        "response_length": inputs.max_new_tokens,
        "max_completion_length": inputs.max_new_tokens,
        "missing_eos_penalty": inputs.missing_eos_penalty,
    }  # settings first, TRAIN_ARGS may override
    values = {k: v for k, v in shared.items() if k in names} | {k: v for k, v in inputs.overrides.items() if k in names}
    config = cls(**values)
    log.info("%s: %s", cls.__name__, asdict(config))
    return config


def trl_args(args_cls: type[C], config: Any, inputs: RecipeInputs, output_dir: Path) -> C:
    """The trl config: recipe fields it knows, plus the settings every job shares (no checkpoints, no reporting)."""
    accepted = {f.name for f in fields(args_cls)}
    own = {k: v for k, v in asdict(config).items() if k in accepted and k != "gradient_checkpointing"}
    if "model_init_kwargs" in accepted:  # fp32 master weights whatever dtype the checkpoint was saved in
        own["model_init_kwargs"] = {"dtype": torch.float32}
    return args_cls(
        output_dir=str(output_dir),
        bf16=inputs.bf16,
        report_to="none",
        save_strategy="no",
        seed=inputs.seed,
        logging_steps=1,
        activation_checkpointing=config.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        **own,
    )


class TimeLimit(TrainerCallback):
    """max_train_minutes: asks the trainer to stop at the first step that ends past the deadline, so that jobs
    (or a benchmark comparing recipes) get the same training time whatever a step costs."""

    def __init__(self, minutes: float) -> None:
        self.seconds, self.deadline = minutes * 60, float("inf")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.deadline = time.monotonic() + self.seconds

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if time.monotonic() >= self.deadline:
            log.info("max_train_minutes reached after step %d of %d: stopping", state.global_step, state.max_steps)
            control.should_training_stop = True


def callbacks_of(inputs: RecipeInputs, config: TrainConfig) -> list[Any]:
    """The job's callbacks (progress), plus the time limit when the config sets one."""
    limit = [TimeLimit(config.max_train_minutes)] if config.max_train_minutes else []
    return [*inputs.callbacks, *limit]


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """Trainers want an output_dir; the model itself is saved to out_dir, so this is thrown away."""
    with tempfile.TemporaryDirectory(prefix="recipe-") as tmp:
        yield Path(tmp)


def require(count: int, minimum: int, what: str, fix: str) -> None:
    """Fail early with a ValueError naming the shortfall, instead of a trainer looping on an empty loader."""
    if count < minimum:
        raise ValueError(f"need at least {minimum} {what}, got {count}; {fix}")


def assistant_turn(text: str) -> list[dict[str, str]]:
    """An answer as conversational messages."""
    return [{"role": "assistant", "content": text}]


def preference_dataset(pairs: list[dict[str, str]]) -> Dataset:
    """Conversational {prompt, chosen, rejected} rows, the format the Reward and DPO trainers expect."""
    return Dataset.from_list(
        [
            {
                "prompt": user_message(p["prompt"]),
                "chosen": assistant_turn(p["chosen"]),
                "rejected": assistant_turn(p["rejected"]),
            }
            for p in pairs
        ]
    )


def reward_dataset(pairs: list[dict[str, Any]], tokenizer: Any) -> Dataset:
    """Pre-tokenized {chosen_ids, rejected_ids}: exactly the tokens every stage's reward reads
    (workers.ml.scoring), a cut answer ending where it was cut, with no EOS appended."""
    return Dataset.from_list(
        [
            {
                f"{side}_ids": reward_ids(tokenizer, p["prompt"], p[side], p.get(f"{side}_finished"))
                for side in ("chosen", "rejected")
            }
            for p in pairs
        ]
    )


def prompt_dataset(prompts: list[str]) -> Dataset:
    """Conversational prompt-only rows, for on-policy trainers."""
    return Dataset.from_list([{"prompt": user_message(p)} for p in prompts])


def completion_dataset(rows: list[dict[str, str]]) -> Dataset:
    """Conversational {prompt, completion} rows for SFT: the loss covers only the answer."""
    return Dataset.from_list(
        [{"prompt": user_message(r["prompt"]), "completion": assistant_turn(r["response"])} for r in rows]
    )


def lora_config(
    inputs: RecipeInputs, config: TrainConfig, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None
) -> LoraConfig | None:
    """LoRA adapters on every linear layer when the job asks for them, else None (full fine-tuning)."""
    if not inputs.use_lora:
        return None
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type=task_type,
        modules_to_save=modules_to_save,
    )


def train_and_save(
    trainer: Any, tokenizer: Any, inputs: RecipeInputs, eval_dataset: Any = None, model: Any = None
) -> dict[str, float]:
    """Train, optionally evaluate, save the trained model (default: the trainer's) and return its metrics."""
    metrics = run_training(trainer, eval_dataset)
    if trainer.accelerator.is_main_process:  # under `accelerate launch`, one process writes the model
        save_model(model if model is not None else trainer.accelerator.unwrap_model(trainer.model), tokenizer, inputs)
    trainer.accelerator.wait_for_everyone()
    return metrics


def run_training(trainer: Any, eval_dataset: Any = None) -> dict[str, float]:
    """Train, optionally evaluate, and flatten the logs into finite float metrics (the last value of a key wins)."""
    start = time.perf_counter()
    trainer.train()
    metrics: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        metrics.update(entry)
    metrics.setdefault("train_runtime", time.perf_counter() - start)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate(eval_dataset))
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: v for k, v in numbers.items() if math.isfinite(v)}


def save_model(model: Any, tokenizer: Any, inputs: RecipeInputs) -> None:
    """Merge LoRA, keep the starting policy's generation settings, and save safetensors + tokenizer to out_dir,
    in fp32 however it trained: the next round starts from this file, and a round's update is mostly smaller
    than half a bf16 step of a weight (a bf16 save kept 4-39 % of it); serving casts to bf16 at load."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model = model.to(torch.float32)
    if model.can_generate():
        _restore_generation_config(model, inputs.policy_dir)
    inputs.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(inputs.out_dir)
    tokenizer.save_pretrained(inputs.out_dir)
    log.info("saved %s to %s", type(model).__name__, inputs.out_dir)


def _restore_generation_config(model: Any, source: Path) -> None:
    """Trainers edit generation_config (PPO sets eos to its stop token); the saved version must generate as before."""
    try:
        model.generation_config = GenerationConfig.from_pretrained(str(source))
    except OSError:
        log.info("no generation_config.json in %s; keeping the trainer's", source)
