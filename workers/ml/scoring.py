"""The reward-token contract, and the one reading of a reward by it.

Every stage that reads a reward (reward training, candidate scoring and the order shown to annotators, the
features selection weighs, GRPO/RLOO, PPO, evaluation and the gates) reads (prompt, answer, finished) here:
a finished answer ends at its EOS token; an answer cut off at MAX_NEW_TOKENS before its EOS ends at its last
token (no EOS it never wrote) and loses MISSING_EOS_PENALTY. `finished=None` (candidates stored before the
flag was recorded) reads as finished, as every stage did before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workers.ml.chat import user_message


def conversation_text(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, finished: bool | None) -> str:
    """(prompt, answer) through the chat template, ending at the answer's EOS token: the position where the
    reward of a response is read, so the reward model learns there. A cut answer (`finished=False`) ends at
    its last token instead."""
    messages = user_message(prompt) + [{"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    end = text.rfind(tokenizer.eos_token) if tokenizer.eos_token else -1
    if end < 0:
        return text
    return text[:end] if finished is False else text[: end + len(tokenizer.eos_token)]


def reward_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, finished: bool | None) -> list[int]:
    """Token ids the reward model sees for (prompt, answer), in training and in scoring alike."""
    return tokenizer(conversation_text(tokenizer, prompt, answer, finished), add_special_tokens=False)["input_ids"]


def penalised(raw: float, finished: bool | None, missing_eos_penalty: float) -> float:
    """The reward of an answer from the model's raw score: a cut answer loses the missing-EOS penalty."""
    return raw - missing_eos_penalty if finished is False else raw


@torch.no_grad()
def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    finished: Sequence[bool | None],
    missing_eos_penalty: float,
    batch_size: int = 16,
) -> list[float]:
    """The reward of each (prompt, answer, finished) by the contract; right padding keeps positions as in
    reward training."""
    if not len(prompts) == len(answers) == len(finished):
        raise ValueError(
            f"score() got {len(prompts)} prompts, {len(answers)} answers and {len(finished)} finished "
            "flags; pass one answer and one flag per prompt."
        )
    rows = [{"input_ids": reward_ids(tokenizer, p, a, f)} for p, a, f in zip(prompts, answers, finished, strict=True)]
    raw: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = tokenizer.pad(rows[start : start + batch_size], return_tensors="pt", padding_side="right").to(
            model.device
        )
        raw.extend(model(**batch).logits[:, 0].float().tolist())
    return [penalised(r, f, missing_eos_penalty) for r, f in zip(raw, finished, strict=True)]
