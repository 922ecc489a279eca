"""The model registry: numbered versions, atomic promotion, and its failure modes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from backend.store.registry import LEGACY_LINEAGE, DiskRegistries, DiskRegistry, RegistryError


def test_promotion_takes_the_next_free_version(tmp_path: Path) -> None:
    registry = DiskRegistry(tmp_path / "models")
    for expected in range(3):
        staging = registry.staging("reward")
        (staging / "weights").write_text("w")
        assert registry.promote("reward", staging, {"recipe": "reward"}) == expected
    taken = tmp_path / "models" / "reward" / "v3"
    taken.mkdir()  # another job took v3 meanwhile (and wrote into it)
    (taken / "weights").write_text("theirs")
    staging = registry.staging("reward")
    (staging / "weights").write_text("w")
    assert registry.promote("reward", staging, {}) == 4 and registry.current("reward") == 4


@pytest.mark.timeout(20)
def test_promotion_fails_on_a_real_error_instead_of_retrying_forever(tmp_path: Path) -> None:
    """A staging directory on another filesystem cannot be renamed into the registry (EXDEV)."""
    registry = DiskRegistry(tmp_path / "models")
    registry.staging("policy")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        with pytest.raises(OSError):
            registry.promote("policy", Path(elsewhere), {})
    assert registry.versions("policy") == []


def test_nothing_is_served_before_policy_v0_exists(tmp_path: Path) -> None:
    registry = DiskRegistry(tmp_path / "models")
    assert registry.model_version() == "policy-pending"
    staging = registry.staging("policy")
    registry.promote("policy", staging, {}, version=0)
    assert registry.model_version() == "policy-v0"


def test_a_lineage_that_never_trained_can_be_pointed_at_v0(tmp_path: Path) -> None:
    """`rollback --project N policy v0` right after connect: the lineage has no folder of its own yet."""
    registries = DiskRegistries(tmp_path / "models")
    registries.base.promote("policy", registries.base.staging("policy"), {}, version=0)
    fresh = registries.lineage("project-7")
    fresh.set_current("policy", 0)
    assert fresh.current("policy") == 0 and fresh.model_version() == "policy-v0"


def test_a_registry_laid_out_before_lineages_becomes_the_legacy_lineage(tmp_path: Path) -> None:
    root = tmp_path / "models"
    for kind, version in (("policy", 0), ("policy", 1), ("policy", 2), ("reward", 0), ("reward", 1)):
        (root / kind / f"v{version}").mkdir(parents=True)
        (root / kind / f"v{version}" / "meta.json").write_text(f'{{"version": {version}}}')
    (root / "policy" / "CURRENT").write_text("v1\n")
    (root / "reward" / "CURRENT").write_text("v1\n")
    registries = DiskRegistries(root)
    legacy = registries.lineage(LEGACY_LINEAGE)
    assert registries.base.versions("policy") == [0]  # the base stays where every lineage finds it
    assert legacy.versions("policy") == [0, 1, 2] and legacy.current("policy") == 1
    assert legacy.versions("reward") == [0, 1] and legacy.model_version() == "policy-v1.reward-v1"
    assert legacy.path("policy", 0) == root / "policy" / "v0"
    assert registries.lineage("project-7").model_version() == "policy-v0"  # new lineages start from the base
    DiskRegistries(root)  # idempotent
    assert legacy.versions("policy") == [0, 1, 2]


def test_lineage_names_cannot_leave_the_registry(tmp_path: Path) -> None:
    registries = DiskRegistries(tmp_path)
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(RegistryError):
            registries.lineage(bad)


def test_a_fresh_registry_has_no_legacy_lineage(tmp_path: Path) -> None:
    """Creating v0 (what the worker's bootstrap does) points policy/CURRENT at it: that is no layout from before
    lineages, and `status` must not list an empty "legacy" lineage on a fresh install."""
    root = tmp_path / "models"
    DiskRegistry(root).promote("policy", DiskRegistry(root).staging("policy"), {"recipe": "base"}, version=0)
    registries = DiskRegistries(root)
    assert registries.lineages() == [] and registries.base.model_version() == "policy-v0"
    assert registries.lineage("project-1").model_version() == "policy-v0"
