"""Batched candidate generation: all prompts x K samples through the chat template, one generate() per batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from backend.core.defaults import TOP_K
from backend.core.settings import Settings
from workers.ml.chat import prompt_texts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """How candidates are sampled; the values come from the settings (`from_settings`), never defaults here."""

    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    batch_size: int
    retries: int = 3  # rounds of regeneration for exact duplicates
    top_k: int = TOP_K

    @classmethod
    def from_settings(cls, settings: Settings, k: int) -> SamplingConfig:
        return cls(
            k=k,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.generation_batch_size,
        )


class TopKSampler(LogitsProcessor):
    """Temperature, top-k, top-p and the draw, done over the top-k logits only.

    generate(do_sample=True) sorts and draws over the whole vocabulary (49k tokens for SmolLM2) at every step:
    a third of a CPU decode step. Drawing among the top-k gives the same distribution (generate applies top-k
    50 before top-p by default) and hands generate() a one-hot choice to take greedily.
    """

    def __init__(self, temperature: float, top_p: float, top_k: int) -> None:
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        values, indices = torch.topk(scores.float() / self.temperature, min(self.top_k, scores.shape[-1]), dim=-1)
        probs = values.softmax(-1)
        probs = probs.masked_fill(probs.cumsum(-1) - probs > self.top_p, 0.0)  # nucleus; the top token stays
        choice = indices.gather(1, torch.multinomial(probs, 1))
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


def sampling_kwargs(temperature: float, top_p: float, top_k: int) -> dict[str, Any]:
    """generate() arguments that draw as candidates are drawn: among the top-k with TopKSampler, or, with
    top_k=0, from the whole vocabulary by generate's own sampling (as trl's PPO drew)."""
    if top_k > 0:
        sampler = LogitsProcessorList([TopKSampler(temperature, top_p, top_k)])
        return {"do_sample": False, "logits_processor": sampler, "top_k": None, "top_p": None, "temperature": None}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}


@dataclass(frozen=True)
class Answer:
    """A sampled answer, and whether it ended (its EOS within max_new_tokens) or was cut off at the limit: how
    every stage reads its reward (workers.ml.scoring)."""

    text: str
    finished: bool


def is_eos(tokens: torch.Tensor, eos: int | list[int] | None) -> torch.Tensor:
    """Which sampled tokens are an EOS (none when the model has no EOS)."""
    if eos is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, torch.tensor(eos if isinstance(eos, list) else [eos], device=tokens.device))


def ended(response: torch.Tensor, eos: int | list[int] | None) -> torch.Tensor:
    """Whether each sampled answer produced its EOS within the token budget (no EOS at all: never cut)."""
    return is_eos(response, eos).any(dim=1) if eos is not None else torch.ones(len(response), dtype=torch.bool)


def until_eos(response: torch.Tensor, eos: int | list[int] | None) -> torch.Tensor:
    """Mask of the answer tokens: everything up to and including the first EOS."""
    eos_at = is_eos(response, eos).long()
    return (eos_at.cumsum(dim=1) - eos_at) == 0


def end_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The ids that end an answer: the tokenizer's EOS and every EOS the model's generation config declares (an
    end-of-turn token too), as trl's trainers read them."""
    declared = generation_config.eos_token_id
    ids = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    eos = tokenizer.eos_token_id
    return ids if eos is None or eos in ids else [eos, *ids]


@torch.inference_mode()
def sample(model: Any, tokenizer: Any, prompts: list[str], cfg: SamplingConfig) -> tuple[list[Answer], int]:
    """One sampled answer per entry of `prompts` (repeat a prompt for several); returns (answers, new tokens).

    Prompts are sorted by length so that each batch pads little.
    """
    texts = prompt_texts(tokenizer, prompts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[Answer] = [Answer("", True)] * len(texts)
    new_tokens = 0
    for start in tqdm(range(0, len(order), cfg.batch_size), desc="generate", disable=len(order) <= cfg.batch_size):
        index = order[start : start + cfg.batch_size]
        batch = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(model.device)
        out = model.generate(
            **batch,
            **sampling_kwargs(cfg.temperature, cfg.top_p, cfg.top_k),
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        generated = out[:, batch["input_ids"].shape[1] :]
        new_tokens += int((generated != tokenizer.pad_token_id).sum())
        done = ended(generated, end_ids(model.generation_config, tokenizer)).tolist()
        for i, text, finished in zip(
            index, tokenizer.batch_decode(generated, skip_special_tokens=True), done, strict=True
        ):
            # NUL: no database (nor Label Studio on PostgreSQL) stores it
            answers[i] = Answer(text.replace("\x00", "").strip(), finished)
    return answers, new_tokens


def candidates(model: Any, tokenizer: Any, prompts: list[str], cfg: SamplingConfig) -> list[list[Answer]]:
    """K distinct answers per prompt; exact duplicates (and empty answers) are regenerated a few rounds."""
    result: list[list[Answer]] = [[] for _ in prompts]
    for _ in range(cfg.retries + 1):
        missing = [(i, cfg.k - len(result[i])) for i in range(len(prompts)) if len(result[i]) < cfg.k]
        if not missing:
            break
        flat = [i for i, n in missing for _ in range(n)]
        answers, _ = sample(model, tokenizer, [prompts[i] for i in flat], cfg)
        for i, answer in zip(flat, answers, strict=True):
            if answer.text and answer.text not in {a.text for a in result[i]} and len(result[i]) < cfg.k:
                result[i].append(answer)
    for i, found in enumerate(result):  # still short after retries: repeat the last answer, loudly
        if len(found) < cfg.k:
            log.warning("prompt %d: only %d distinct answers after %d rounds", i, len(found), cfg.retries + 1)
            found.extend([found[-1] if found else Answer("", False)] * (cfg.k - len(found)))
    return result
