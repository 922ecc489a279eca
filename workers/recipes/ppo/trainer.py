"""PPO's loop: roll out answers, score them by the reward contract, turn scores and the KL to the reference
into per-token advantages, and optimise policy and value with the clipped losses, over accelerate (one
process, or several under `accelerate launch`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerControl,
    TrainerState,
    get_scheduler,
    set_seed,
)
from trl.trainer.utils import disable_dropout_in_model

from workers.ml.generation import end_ids, sampling_kwargs
from workers.ml.scoring import score
from workers.recipes.ppo.config import PPORecipeConfig
from workers.recipes.ppo.maths import (
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from workers.recipes.ppo.rollout import PolicyAndValue, Rollout, read_answers, response_logits, token_logprobs
from workers.runtime.progress import PhaseProgress

log = logging.getLogger(__name__)


class PPOTrainer:
    """Imitates trl's old PPOTrainer: `train()`, `state.log_history` with its metric names, `accelerator`."""

    def __init__(
        self,
        config: PPORecipeConfig,
        policy: PreTrainedModel,
        value_model: PreTrainedModel,
        reference: PreTrainedModel,
        reward_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_tokenizer: PreTrainedTokenizerBase,
        prompts: Dataset,
        bf16: bool = False,
        seed: int = 0,
        callbacks: list[Any] | None = None,
    ) -> None:
        self.config, self.tokenizer, self.reward_tokenizer = config, tokenizer, reward_tokenizer
        AcceleratorState._reset_state(reset_partial_state=True)  # as each TrainingArguments does: this run's precision
        self.accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not torch.cuda.is_available())
        self.batch_size = config.per_device_train_batch_size * config.gradient_accumulation_steps
        if self.batch_size % config.num_mini_batches:
            raise ValueError(
                f"per_device_train_batch_size × gradient_accumulation_steps ({self.batch_size}) must be a "
                f"multiple of num_mini_batches ({config.num_mini_batches})"
            )
        self.updates = math.ceil(config.total_episodes / (self.batch_size * self.accelerator.num_processes))
        for module in (policy, value_model, reference, reward_model):
            disable_dropout_in_model(module)
        if config.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
            value_model.gradient_checkpointing_enable()
        self.policy = policy
        # the ids that end an answer; None (stop_token=None): every response runs the full response_length
        self.ends = end_ids(policy.generation_config, tokenizer) if config.stop_token == "eos" else None
        model = PolicyAndValue(policy, value_model)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=0.0
        )
        self.scheduler = get_scheduler(config.lr_scheduler_type, optimizer, 0, self.updates)
        loader = DataLoader(prompts, self.batch_size, shuffle=True, drop_last=True, collate_fn=self._collate)
        set_seed(seed)  # the same shuffle on every process before prepare shards it
        self.model, self.optimizer, self.loader = self.accelerator.prepare(model, optimizer, loader)
        set_seed(seed + 100_003 * self.accelerator.process_index)  # then each process samples its own rollouts
        self.reference = reference.to(self.accelerator.device).eval()
        self.reward_model = reward_model.to(self.accelerator.device).eval()
        self.state = TrainerState(max_steps=self.updates, num_train_epochs=config.total_episodes / len(prompts))
        self.state.logging_steps = 1
        self.control = TrainerControl()
        self.callbacks = list(callbacks or [])
        self.phase = PhaseProgress("ppo", self.state)

    def _collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        padded = self.tokenizer.pad([{"input_ids": r["input_ids"]} for r in rows], return_tensors="pt")
        return {
            "input_ids": padded["input_ids"],
            "attention_mask": padded["attention_mask"],
            "prompt": [r["prompt"] for r in rows],
        }

    def _batches(self) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.loader

    def train(self) -> None:
        """num total updates of: rollouts, advantages, num_ppo_epochs passes of clipped updates."""
        start = time.perf_counter()
        self.event("on_train_begin")
        batches = self._batches()
        for _ in range(self.updates):
            self.phase("generating rollouts")
            rollout = self.rollout(next(batches))
            advantages, returns = self.advantages(rollout)
            self.phase("optimising")
            stats = self.optimise(rollout, advantages, returns)
            self.scheduler.step()
            self.state.global_step += 1
            self.state.epoch = self.state.global_step * self.batch_size / max(1, len(self.loader.dataset))
            self.log(self.metrics(rollout, stats, start))
            self.event("on_step_end")
            if self.control.should_training_stop:  # max_train_minutes
                break
        self.event("on_train_end")

    # --- rollouts -------------------------------------------------------------------------------------------

    def _sampling(self) -> dict[str, Any]:
        """generate() arguments: the rollouts' temperature, top-k and top-p, response_length new tokens."""
        c = self.config
        common = {
            "max_new_tokens": c.response_length,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.ends,
        }
        return common | sampling_kwargs(c.temperature, c.top_p, c.top_k)

    @torch.no_grad()
    def rollout(self, batch: dict[str, Any]) -> Rollout:
        """Sample one answer per prompt and read log-probabilities, the reference's, values and scores."""
        c, model = self.config, self.accelerator.unwrap_model(self.model)
        model.eval()
        chunk = c.local_rollout_forward_batch_size
        prompt_ids, prompt_attention = batch["input_ids"], batch["attention_mask"]
        width = prompt_ids.shape[1]
        responses = []
        for i in range(0, len(prompt_ids), chunk):
            with self.accelerator.autocast():
                out = model.policy.generate(
                    input_ids=prompt_ids[i : i + chunk],
                    attention_mask=prompt_attention[i : i + chunk],
                    **self._sampling(),
                )
            responses.append(out[:, width:])
        length = max(r.shape[1] for r in responses)
        pad = self.tokenizer.pad_token_id
        responses_t = torch.cat([nn.functional.pad(r, (0, length - r.shape[1]), value=pad) for r in responses])
        mask, finished, answers = read_answers(self.tokenizer, responses_t, self.ends)
        ids = torch.cat([prompt_ids, responses_t], 1)
        attention = torch.cat([prompt_attention, mask.long()], 1)
        logprobs, ref_logprobs, values = [], [], []
        for i in range(0, len(ids), chunk):
            part = slice(i, i + chunk)
            with self.accelerator.autocast():
                logits, value = model(ids[part], attention[part], length)
                ref_logits = response_logits(self.reference, ids[part], attention[part], length)
            logprobs.append(token_logprobs(logits, responses_t[part], c.temperature))
            ref_logprobs.append(token_logprobs(ref_logits, responses_t[part], c.temperature))
            values.append(value.float())
        scores = score(
            self.reward_model,
            self.reward_tokenizer,
            batch["prompt"],
            answers,
            finished.tolist(),
            c.missing_eos_penalty or 0.0,
        )
        logprobs_t, ref_logprobs_t = torch.cat(logprobs) * mask, torch.cat(ref_logprobs) * mask
        rollout = Rollout(
            ids,
            attention,
            responses_t,
            mask,
            logprobs_t,
            kl_estimate(logprobs_t, ref_logprobs_t, c.kl_estimator) * mask,
            torch.cat(values) * mask,
            torch.tensor(scores, device=ids.device),
            finished,
        )
        self._log_sample(batch["prompt"][0], answers[0], scores[0])
        return rollout

    def _log_sample(self, prompt: str, answer: str, reward: float) -> None:
        every = max(1, self.updates // self.config.num_sample_generations) if self.config.num_sample_generations else 0
        if every and self.state.global_step % every == 0:
            log.info("ppo step %d sample: %r -> %r (score %.3f)", self.state.global_step + 1, prompt, answer, reward)

    # --- advantages and the update --------------------------------------------------------------------------

    def advantages(self, r: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token rewards (score at the last token, KL penalty on every token), GAE, whitened advantages."""
        c = self.config
        rewards = token_rewards(r.scores, r.kl, r.mask, c.kl_coef)
        if c.whiten_rewards:
            rewards = masked_whiten(rewards, r.mask, shift_mean=False)
        advantages, returns = gae(rewards, r.values, r.mask, c.gamma, c.lam)
        return masked_whiten(advantages, r.mask), returns

    def optimise(self, r: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, list[float]]:
        """num_ppo_epochs passes over the rollouts in shuffled minibatches, each one optimizer step accumulated
        over micro-batches of per_device_train_batch_size."""
        c, accelerator = self.config, self.accelerator
        self.model.train()
        stats: dict[str, list[float]] = {}
        n, width = len(r.responses), r.responses.shape[1]
        mini = n // c.num_mini_batches
        for _ in range(c.num_ppo_epochs):
            order = torch.randperm(n, device=r.ids.device)
            for start in range(0, n, mini):
                micro_batches = order[start : start + mini].split(c.per_device_train_batch_size)
                for j, idx in enumerate(micro_batches):
                    sync = nullcontext() if j == len(micro_batches) - 1 else accelerator.no_sync(self.model)
                    with sync, accelerator.autocast():
                        logits, values = self.model(r.ids[idx], r.attention[idx], width)
                        logprobs = token_logprobs(logits, r.responses[idx], c.temperature)
                        mask = r.mask[idx]
                        pg_loss, pg_clip = policy_loss(logprobs, r.logprobs[idx], advantages[idx], mask, c.cliprange)
                        vf_loss, vf_clip = value_loss(
                            values.float(), r.values[idx], returns[idx], mask, c.cliprange_value
                        )
                        accelerator.backward((pg_loss + c.vf_coef * vf_loss) * len(idx) / mini)
                    with torch.no_grad():
                        ratio = torch.exp(logprobs - r.logprobs[idx])
                        entropy = torch.logsumexp(logits.float(), -1) - (
                            logits.float().softmax(-1) * logits.float()
                        ).sum(-1)
                        for key, value in {
                            "policy/approxkl_avg": 0.5 * masked_mean((logprobs - r.logprobs[idx]) ** 2, mask),
                            "policy/clipfrac_avg": pg_clip,
                            "loss/policy_avg": pg_loss,
                            "loss/value_avg": vf_loss,
                            "val/clipfrac_avg": vf_clip,
                            "policy/entropy_avg": masked_mean(entropy, mask),
                            "val/ratio": masked_mean(ratio, mask),
                        }.items():
                            stats.setdefault(key, []).append(float(value))
                if c.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.model.eval()
        return stats

    # --- reporting ------------------------------------------------------------------------------------------

    def metrics(self, r: Rollout, stats: dict[str, list[float]], start: float) -> dict[str, float]:
        """trl's PPO metric names, each averaged over processes."""
        c = self.config
        kl = r.kl.sum(1)
        per_rollout = {
            "objective/kl": kl,
            "objective/entropy": (-r.logprobs * r.mask).sum(1),
            "objective/non_score_reward": -c.kl_coef * kl,
            "objective/rlhf_reward": r.scores - c.kl_coef * kl,
            "objective/scores": r.scores,
            "objective/cut": (~r.finished).float(),
        }
        gathered = {k: self.accelerator.gather_for_metrics(v).float().mean().item() for k, v in per_rollout.items()}
        averaged = {k: float(torch.tensor(v).mean()) for k, v in stats.items()}
        episodes = self.state.global_step * self.batch_size * self.accelerator.num_processes
        return (
            gathered
            | averaged
            | {
                "val/ratio_var": float(torch.tensor(stats["val/ratio"]).var()) if len(stats["val/ratio"]) > 1 else 0.0,
                "val/num_eos_tokens": float(r.finished.sum()),
                "lr": self.scheduler.get_last_lr()[0],
                "episode": float(episodes),
                "eps": episodes / (time.perf_counter() - start),
            }
        )

    def event(self, name: str, **kwargs: Any) -> None:
        """Call each transformers TrainerCallback's `name` as a Trainer would (job progress, max_train_minutes)."""
        for callback in self.callbacks:
            answer = getattr(callback, name)(
                self.config,
                self.state,
                self.control,
                model=self.policy,
                processing_class=self.tokenizer,
                optimizer=self.optimizer,
                lr_scheduler=self.scheduler,
                **kwargs,
            )
            self.control = answer if answer is not None else self.control

    def log(self, metrics: dict[str, float]) -> None:
        log.info(
            "ppo step %d/%d: score %.3f, KL %.3f, policy loss %.4f, value loss %.4f, %.1f episodes/s",
            self.state.global_step,
            self.updates,
            metrics["objective/scores"],
            metrics["objective/kl"],
            metrics["loss/policy_avg"],
            metrics["loss/value_avg"],
            metrics["eps"],
        )
        self.state.log_history.append({**metrics, "step": self.state.global_step})
        self.event("on_log", logs=metrics)
