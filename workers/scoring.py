"""The reward-token contract: which tokens a reward model reads for (prompt, answer), shared by reward
training, candidate scoring, evaluation, PPO, GRPO and RLOO; and scoring by it."""
from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workers.chat import user_message


def conversation_text(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, finished: bool = True) -> str:
    """(prompt, answer) through the chat template, ending at the answer's EOS token: the position where PPO
    reads the reward of a response (trl truncates after the stop token), so the reward model learns there.
    An answer cut off before its EOS (`finished=False`) ends at its last token instead, as PPO sees it."""
    messages = user_message(prompt) + [{"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    end = text.rfind(tokenizer.eos_token) if tokenizer.eos_token else -1
    if end < 0:
        return text
    return text[: end + len(tokenizer.eos_token)] if finished else text[:end]


def reward_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, finished: bool = True) -> list[int]:
    """Token ids the reward model sees for (prompt, answer), in training and in scoring alike."""
    return tokenizer(conversation_text(tokenizer, prompt, answer, finished), add_special_tokens=False)["input_ids"]


@torch.no_grad()
def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    answers: list[str],
    batch_size: int = 16,
    finished: list[bool] | None = None,
) -> list[float]:
    """Reward scalars for (prompt, answer) pairs; right padding keeps positions as in reward training. Answers
    marked unfinished (cut before EOS) are read at their last token, without an EOS they never produced."""
    if len(prompts) != len(answers):
        raise ValueError(f"score() got {len(prompts)} prompts but {len(answers)} answers; pass one answer per prompt.")
    ended = finished if finished is not None else [True] * len(answers)
    rows = [{"input_ids": reward_ids(tokenizer, p, a, f)} for p, a, f in zip(prompts, answers, ended)]
    rewards: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = tokenizer.pad(rows[start : start + batch_size], return_tensors="pt", padding_side="right").to(model.device)
        rewards.extend(model(**batch).logits[:, 0].float().tolist())
    return rewards
