"""The model registry: numbered versions, atomic promotion, and its failure modes."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from backend.registry import Registry


def test_promotion_takes_the_next_free_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    for expected in range(3):
        staging = registry.staging("reward")
        (staging / "weights").write_text("w")
        assert registry.promote("reward", staging, {"recipe": "reward"}) == expected
    (registry.path("reward", 3)).mkdir()  # another job took v3 meanwhile (and wrote into it)
    (registry.path("reward", 3) / "weights").write_text("theirs")
    staging = registry.staging("reward")
    (staging / "weights").write_text("w")
    assert registry.promote("reward", staging, {}) == 4 and registry.current("reward") == 4


@pytest.mark.timeout(20)
def test_promotion_fails_on_a_real_error_instead_of_retrying_forever(tmp_path: Path) -> None:
    """A staging directory on another filesystem cannot be renamed into the registry (EXDEV)."""
    registry = Registry(tmp_path / "models")
    registry.staging("policy")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        with pytest.raises(OSError):
            registry.promote("policy", Path(elsewhere), {})
    assert registry.versions("policy") == []


def test_nothing_is_served_before_policy_v0_exists(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    assert registry.model_version() == "policy-pending"
    staging = registry.staging("policy")
    registry.promote("policy", staging, {}, version=0)
    assert registry.model_version() == "policy-v0"
