"""Prompts and answers through the model's chat template, as generation, the trainers and the reward contract
build them: one place, so every stage sees the same conversation (SYSTEM_PROMPT included)."""

from __future__ import annotations

from transformers import BatchEncoding, PreTrainedTokenizerBase

from backend.core.settings import get_settings


def user_message(prompt: str) -> list[dict[str, str]]:
    """A prompt as a one-turn conversation, after the SYSTEM_PROMPT when one is set."""
    system = get_settings().system_prompt
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def prompt_texts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[str]:
    """Prompts through the chat template, ending with the assistant's generation prompt."""
    return [tokenizer.apply_chat_template(user_message(p), tokenize=False, add_generation_prompt=True) for p in prompts]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> BatchEncoding:
    """Left-padded generation inputs through the chat template, as the trainers build them."""
    texts = prompt_texts(tokenizer, prompts)
    return tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
