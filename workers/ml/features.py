"""Frozen features of (prompt, answer): the reference policy's last hidden state at the answer's EOS, read
through the reward-token contract (workers.ml.scoring), so the Bayesian head sees what a reward model would."""

from __future__ import annotations

import hashlib
import logging

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from backend.core.defaults import MAX_LENGTH
from workers.ml.chat import prompt_texts
from workers.ml.scoring import reward_ids

log = logging.getLogger(__name__)


def feature_key(model: str, dtype: torch.dtype, prompt: str, answer: str, finished: bool | None) -> str:
    """The cache key of one candidate's features: the reference model's source, the dtype it ran in (bf16 and
    fp32 features differ, and one head must not mix them), the texts, and whether the answer was cut (read
    at another token; finished and unknown read alike, so they share a key)."""
    cut = "\x00cut" if finished is False else ""
    text = f"{model}\x00{dtype}\x00{prompt}\x00{answer}{cut}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@torch.no_grad()
def eos_features(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    answers: list[str],
    finished: list[bool | None],
    batch_size: int = 8,
    max_length: int = MAX_LENGTH,
    progress=None,
    layers: tuple[int, ...] = (-1,),
    pooled_layers: tuple[int, ...] = (),
) -> torch.Tensor:
    """[n, hidden * (len(layers) + len(pooled_layers))] float32, side by side: the hidden states of `layers`
    (default the last) at the token where each (prompt, answer, finished)'s reward is read, then the mean
    over the answer's tokens of `pooled_layers`. Rows are batched by length (little padding) and cut from the
    left at max_length, keeping the answer's end."""
    full = [reward_ids(tokenizer, p, a, f) for p, a, f in zip(prompts, answers, finished, strict=True)]
    rows = [r[-max_length:] for r in full]
    starts = _answer_starts(tokenizer, prompts, full, rows) if pooled_layers else []  # the head reads no means
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.zeros(len(rows), model.config.hidden_size * (len(layers) + len(pooled_layers)))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer.pad([{"input_ids": rows[i]} for i in index], return_tensors="pt", padding_side="right").to(
            model.device
        )
        states = model(**batch, output_hidden_states=True).hidden_states
        last = batch["attention_mask"].sum(dim=1) - 1
        at = torch.arange(len(index), device=last.device)
        parts = [states[layer][at, last] for layer in layers]
        if pooled_layers:  # the mean over the answer's tokens: what it says and how, not only how it ends
            positions = torch.arange(batch["input_ids"].shape[1], device=last.device)
            begin = torch.tensor([starts[i] for i in index], device=last.device)
            mask = ((positions[None] >= begin[:, None]) & (positions[None] <= last[:, None])).float()[..., None]
            parts += [(states[layer] * mask).sum(1) / mask.sum(1).clamp_min(1) for layer in pooled_layers]
        out[index] = torch.cat(parts, dim=-1).float().cpu()
        if progress is not None:
            progress(start + len(index), len(rows))
    return out


def _answer_starts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], full: list[list[int]], rows: list[list[int]]
) -> list[int]:
    """Where each answer starts in its (left-cut) row: after the prompt and the assistant's generation prompt."""
    return [
        max(0, len(tokenizer(t, add_special_tokens=False)["input_ids"]) - (len(f) - len(r)))
        for t, f, r in zip(prompt_texts(tokenizer, prompts), full, rows, strict=True)
    ]
