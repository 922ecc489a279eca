"""trl 1.12's PPOTrainer, the reference bench/ppo_parity.py measures the project's PPO against.

trl removed PPOTrainer in 1.13, so this file runs only in the bench's side environment (.cache/bench-trl112,
which bench/ppo_parity.py builds: trl==1.12.0 beside the product's torch and transformers); it imports
nothing of the project. Usage: `python bench/ppo_trl_reference.py SPEC.json` with the spec ppo_parity writes
(model directories, prompt token ids, PPOConfig fields, seed, output directory); it trains, saves the policy
to the output directory and writes result.json there (seconds per step, peak memory).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, GenerationConfig
from trl.experimental.ppo import PPOConfig, PPOTrainer


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM: reset at exec, unlike ru_maxrss)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def tokenizer_of(path: str) -> AutoTokenizer:
    """Left padding and a pad distinct from EOS, as the product loads every tokenizer (workers.ml.loading)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        spare = tokenizer.unk_token
        tokenizer.pad_token = (
            spare if spare not in (None, tokenizer.eos_token, tokenizer.bos_token) else tokenizer.eos_token
        )
    return tokenizer


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    tokenizer = tokenizer_of(spec["policy_dir"])
    fp32 = {"dtype": torch.float32}
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward_dir"], num_labels=1, **fp32)
    reward.config.pad_token_id = tokenizer.pad_token_id
    value = AutoModelForSequenceClassification.from_pretrained(spec["reward_dir"], num_labels=1, **fp32)
    value.config.pad_token_id = tokenizer.pad_token_id
    trainer = PPOTrainer(
        args=PPOConfig(
            output_dir=str(out / "scratch"),
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=spec["seed"],
            bf16=spec["bf16"],
            use_cpu=not torch.cuda.is_available(),
            **spec["config"],
        ),
        processing_class=tokenizer,
        model=AutoModelForCausalLM.from_pretrained(spec["policy_dir"], **fp32),
        ref_model=AutoModelForCausalLM.from_pretrained(spec["policy_dir"], **fp32),
        reward_model=reward,
        value_model=value,
        train_dataset=Dataset.from_dict({"input_ids": spec["prompt_ids"]}),
        eval_dataset=Dataset.from_dict({"input_ids": spec["prompt_ids"][:8]}),
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    policy = trainer.policy_model.to(torch.float32)
    policy.generation_config = GenerationConfig.from_pretrained(spec["policy_dir"])
    policy.save_pretrained(out)
    tokenizer.save_pretrained(out)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else peak_rss()
    result = {
        "seconds_per_step": seconds / trainer.state.global_step,
        "steps": trainer.state.global_step,
        "peak_bytes": peak,
    }
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
    os._exit(0)  # everything is written; trl 1.12's interpreter shutdown spent minutes at full CPU here
