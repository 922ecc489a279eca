"""SYSTEM_PROMPT reaches every stage through one conversation builder: generation's prompts, the trainers'
datasets and the reward contract all start with it."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from backend.core.settings import get_settings
from workers.ml.chat import prompt_texts
from workers.ml.scoring import reward_ids
from workers.recipes.base import preference_dataset, prompt_dataset


@pytest.fixture
def system_prompt(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYSTEM_PROMPT", "Answer in one word.")
    get_settings.cache_clear()
    yield "Answer in one word."
    get_settings.cache_clear()


def test_every_stage_starts_with_the_system_prompt(system_prompt: str, tiny_model) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    [text] = prompt_texts(tokenizer, ["Where is Paris?"])
    assert text.startswith(f"<|im_start|>system\n{system_prompt}<|im_end|>") and text.endswith("assistant\n")
    ids = reward_ids(tokenizer, "Where is Paris?", "France.", True)
    assert (
        ids[: len(tokenizer(text, add_special_tokens=False)["input_ids"])]
        == tokenizer(text, add_special_tokens=False)["input_ids"]
    )  # the reward reads the conversation generation saw
    for row in (
        prompt_dataset(["Where is Paris?"])[0],
        preference_dataset([{"prompt": "Where is Paris?", "chosen": "France.", "rejected": "Rome."}])[0],
    ):
        assert row["prompt"][0] == {"role": "system", "content": system_prompt}


def test_an_empty_system_prompt_leaves_the_model_its_own(monkeypatch: pytest.MonkeyPatch, tiny_model) -> None:
    monkeypatch.setenv("SYSTEM_PROMPT", "")
    get_settings.cache_clear()
    try:
        [text] = prompt_texts(AutoTokenizer.from_pretrained(str(tiny_model)), ["Where is Paris?"])
    finally:
        get_settings.cache_clear()
    assert text.startswith("<|im_start|>user\n")
