"""Held-out evaluation: a new policy against the previous one under a judge (reward before/after, wins, losses,
ties, KL to the reference), and a reward model's per-pair correctness, the counts promotion gates decide on."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from backend.core.stats import rate
from workers.ml.chat import encode_prompts
from workers.ml.generation import end_ids, ended, until_eos
from workers.ml.loading import load_policy, load_reward
from workers.ml.scoring import score

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """Sampled answers plus the token tensors needed to re-score them under another policy."""

    answers: list[str] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)  # False: cut at max_new_tokens before its EOS
    batches: list[dict[str, torch.Tensor]] = field(default_factory=list)  # input_ids, attention_mask, response_mask


def policy_metrics(
    policy_dir: str | Path,
    previous_dir: str | Path,
    reference_dir: str | Path,
    judge_dir: str | Path,
    own_dir: str | Path | None,
    prompts: list[str],
    max_new_tokens: int,
    missing_eos_penalty: float,
    seed: int = 0,
) -> dict[str, float]:
    """Compare the new policy with the previous one on held-out prompts under the judge reward model, so a job
    can decide to promote it: per prompt, whose answer the judge scores higher (wins, losses, ties), the
    win-rate with its 95 % interval, KL to the reference, the share of answers cut at the limit, and, with
    `own_dir` (the reward model a PPO-family policy maximised), the mean reward before and after under it.
    Answers are as long as candidates and rollouts (MAX_NEW_TOKENS) and read by the reward contract."""
    if not prompts:
        raise ValueError("policy_metrics needs at least one held-out prompt; pass prompts")
    before = sample(previous_dir, prompts, max_new_tokens, seed)
    after = sample(policy_dir, prompts, max_new_tokens, seed)
    kl = _kl(after, policy_dir, reference_dir)
    rewards_before, rewards_after = _rewards(judge_dir, prompts, (before, after), missing_eos_penalty)
    wins = sum(a > b for a, b in zip(rewards_after, rewards_before, strict=True))
    losses = sum(a < b for a, b in zip(rewards_after, rewards_before, strict=True))
    ties = len(prompts) - wins - losses
    win_rate = rate(wins + ties / 2, len(prompts))
    metrics = {
        "n_prompts": len(prompts),
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": win_rate.value,
        "win_rate_low": win_rate.low,
        "win_rate_high": win_rate.high,
        "reward_before": sum(rewards_before) / len(prompts),
        "reward_after": sum(rewards_after) / len(prompts),
        "kl": kl,
        "truncated_before": before.finished.count(False) / len(prompts),
        "truncated_after": after.finished.count(False) / len(prompts),
    }
    if own_dir is not None:
        own = (
            _rewards(own_dir, prompts, (before, after), missing_eos_penalty)
            if own_dir != judge_dir
            else (rewards_before, rewards_after)
        )
        metrics["own_reward_before"], metrics["own_reward_after"] = (sum(r) / len(prompts) for r in own)
    log.info("policy %s on %d prompts: %s", policy_dir, len(prompts), metrics)
    return metrics


def _rewards(
    reward_dir: str | Path, prompts: list[str], rollouts: tuple[Rollout, ...], missing_eos_penalty: float
) -> list[list[float]]:
    """Each rollout's rewards under one reward model, read by the reward contract."""
    model, tokenizer = load_reward(reward_dir)
    result = [score(model, tokenizer, prompts, r.answers, r.finished, missing_eos_penalty) for r in rollouts]
    del model
    _release()
    return result


@torch.no_grad()
def reward_correct(reward_dir: str | Path, pairs: list[dict[str, Any]], missing_eos_penalty: float) -> list[bool]:
    """Per held-out pair, whether the reward model scores the chosen answer above the rejected one, each read
    by the reward contract (a cut answer as cut, penalised)."""
    if not pairs:
        return []
    model, tokenizer = load_reward(reward_dir)
    prompts = [p["prompt"] for p in pairs]
    chosen, rejected = (
        score(
            model,
            tokenizer,
            prompts,
            [p[side] for p in pairs],
            [p.get(f"{side}_finished") for p in pairs],
            missing_eos_penalty,
        )
        for side in ("chosen", "rejected")
    )
    del model
    _release()
    return [c > r for c, r in zip(chosen, rejected, strict=True)]


def sample(policy_dir: str | Path, prompts: list[str], max_new_tokens: int, seed: int, batch_size: int = 16) -> Rollout:
    """Seeded plain sampling (temperature 1): the tokens are draws from the policy, so the KL estimate is unbiased."""
    model, tokenizer = load_policy(policy_dir)
    torch.manual_seed(seed)
    rollout = Rollout()
    for start in range(0, len(prompts), batch_size):
        _generate(model, tokenizer, prompts[start : start + batch_size], max_new_tokens, rollout)
    del model
    _release()
    return rollout


@torch.no_grad()
def _generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    rollout: Rollout,
) -> None:
    """Generate one left-padded batch and append its answers and tensors to the rollout."""
    inputs = encode_prompts(tokenizer, prompts).to(model.device)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        pad_token_id=tokenizer.pad_token_id,
    ).cpu()
    response = output[:, inputs["input_ids"].shape[1] :]
    eos = end_ids(model.generation_config, tokenizer)
    mask = until_eos(response, eos)
    rollout.answers.extend(
        tokenizer.decode(r[m], skip_special_tokens=True) for r, m in zip(response, mask, strict=True)
    )
    rollout.finished.extend(ended(response, eos).tolist())
    attention = torch.cat([inputs["attention_mask"].cpu(), mask.long()], dim=1)
    rollout.batches.append({"input_ids": output, "attention_mask": attention, "response_mask": mask})


def _kl(rollout: Rollout, policy_dir: str | Path, reference_dir: str | Path) -> float:
    """KL(new || reference) per answer token, on the new policy's own samples, with the k3 estimator
    (exp(d) - 1 - d, d = log p_ref - log p_new): unbiased like the plain log-ratio, but never negative, so a
    small sample cannot report a policy closer than identical."""
    new = _logprobs(policy_dir, rollout)
    ref = _logprobs(reference_dir, rollout)
    masks = [b["response_mask"] for b in rollout.batches]
    total = sum(((torch.expm1(r - n) - (r - n)) * m).sum() for n, r, m in zip(new, ref, masks, strict=True))
    tokens = sum(m.sum() for m in masks)
    return float(total / tokens) if tokens else 0.0


@torch.no_grad()
def _logprobs(model_dir: str | Path, rollout: Rollout) -> list[torch.Tensor]:
    """Log-probabilities of each sampled answer token under the model at model_dir."""
    model, _ = load_policy(model_dir)
    result = []
    for batch in rollout.batches:
        ids, attention = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        n_answer = batch["response_mask"].shape[1]
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, -n_answer - 1 : -1]
        logp = logits.float().log_softmax(dim=-1).gather(-1, ids[:, -n_answer:].unsqueeze(-1)).squeeze(-1)
        result.append(logp.cpu())
    del model
    _release()
    return result


def _release() -> None:
    """Return a dropped model's GPU memory before loading the next (on CPU, reference counting already freed it;
    a full gc.collect() over torch's heap costs ~0.5 s)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
