"""Frozen features of (prompt, answer): the reference policy's last hidden state at the answer's EOS, read
through the reward-token contract (workers.ml.scoring), so the Bayesian head sees what a reward model would."""

from __future__ import annotations

import hashlib
import logging

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from backend.core.defaults import MAX_LENGTH
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
) -> torch.Tensor:
    """[n, hidden] float32: the last layer's hidden state at the token where each (prompt, answer, finished)'s
    reward is read. Rows are batched by length (little padding) and cut from the left at max_length, keeping
    the answer's end."""
    rows = [reward_ids(tokenizer, p, a, f)[-max_length:] for p, a, f in zip(prompts, answers, finished, strict=True)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.zeros(len(rows), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer.pad([{"input_ids": rows[i]} for i in index], return_tensors="pt", padding_side="right").to(
            model.device
        )
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
        last = batch["attention_mask"].sum(dim=1) - 1
        out[index] = hidden[torch.arange(len(index), device=hidden.device), last].float().cpu()
        if progress is not None:
            progress(start + len(index), len(rows))
    return out
