"""Fixtures of the workers' integration tests: tiny local models every recipe test trains from."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.support.tiny import build_tiny_model


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny policy, a different tiny policy, and an untrained reward model sharing their tokenizer."""
    root = tmp_path_factory.mktemp("models")
    policy = build_tiny_model(root / "policy")
    other = build_tiny_model(root / "other", seed=1)
    reward = root / "reward"
    torch.manual_seed(0)  # the new score head's random weights: the same reward model every run
    model = AutoModelForSequenceClassification.from_pretrained(str(policy), num_labels=1)
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(reward)
    AutoTokenizer.from_pretrained(str(policy)).save_pretrained(reward)
    return SimpleNamespace(policy=policy, other=other, reward=reward)
