"""The model registry on object storage (MODEL_DIR=s3://...), against a real S3 API (moto's server, started by the
tests): versions visible only once uploaded whole, a killed upload never current and removed by the reconciler's
sweep, policy v0 converted once by racing workers, local caches checked and refetched."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backend.background.reconciler import Reconciler
from backend.core.locks import file_lock
from backend.core.settings import HOME, Settings
from backend.http.app import create_app
from backend.store.registry import ModelCache, ObjectRegistries, RegistryError
from tests.support.objectstore import bucket_url
from tests.support.services import empty_postgres, postgres_url
from tests.support.settings import ROOT, make_settings, registries_of, settings_env
from tests.support.wait import wait_for


def registries(settings: Settings, cache: Path | None = None, **overrides) -> ObjectRegistries:
    """One process's view: the shared store and bucket, its own cache."""
    if cache is not None:
        overrides["model_cache_dir"] = str(cache)
    found = registries_of(settings.model_copy(update=overrides))
    assert isinstance(found, ObjectRegistries)
    return found


@pytest.fixture
def on_s3(tmp_path, tiny_model, s3) -> Settings:
    return make_settings(tmp_path, tiny_model, model_dir=bucket_url(), model_cache_dir=str(tmp_path / "cache-a"))


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_store(request, on_s3) -> Settings:
    """The object-store settings with the store hosts really share (PostgreSQL), and SQLite (one host)."""
    if request.param == "sqlite":
        yield on_s3
        return
    url = postgres_url()
    yield on_s3.model_copy(update={"database_url": url})
    empty_postgres(url)


def test_a_url_stays_a_url_and_a_path_is_anchored() -> None:
    assert Settings(model_dir="s3://bucket/some/prefix/", _env_file=None).model_dir == "s3://bucket/some/prefix"
    assert Settings(model_dir="gs://b/p", _env_file=None).model_dir == "gs://b/p"
    assert Settings(model_dir="models", _env_file=None).model_dir == str(HOME / "models")
    assert Settings(model_dir="file:///srv/models", _env_file=None).model_dir == "/srv/models"
    settings = Settings(model_dir="s3://bucket/p", data_dir="/srv/data", _env_file=None)
    assert settings.model_cache_path == Path("/srv/data/model-cache")


def stage(registry, kind: str, files: dict[str, bytes]) -> Path:
    staging = registry.staging(kind)
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    return staging


def test_versions_pass_between_processes_that_share_no_disk(shared_store, tmp_path) -> None:
    writer, reader = registries(shared_store), registries(shared_store, tmp_path / "cache-b")
    trained = writer.lineage("project-1")
    for i in range(3):
        staging = stage(trained, "reward", {"model.safetensors": bytes([i]) * 1000, "sub/config.json": b"{}"})
        assert trained.promote("reward", staging, {"recipe": "reward", "round": i}) == i
        assert not staging.exists()  # it became the writer's cached copy
    seen = reader.lineage("project-1")
    assert reader.lineages() == ["project-1"] and seen.versions("reward") == [0, 1, 2]
    assert seen.current("reward") == 2 and seen.meta("reward", 1)["round"] == 1
    local = seen.path("reward", 1)
    assert local.is_relative_to(tmp_path / "cache-b") and (local / "model.safetensors").read_bytes() == b"\x01" * 1000
    assert (local / "sub" / "config.json").read_bytes() == b"{}"
    rejected = stage(trained, "reward", {"model.safetensors": b"r"})
    gate = {"status": "rejected", "reason": "worse"}
    assert trained.promote("reward", rejected, {"gate": gate}, serve=False) == 3
    assert seen.current("reward") == 2 and "policy-v0.reward-v3" not in seen.servable()
    with pytest.raises(RegistryError, match="rejected"):
        seen.set_current("reward", 3)
    seen.force("reward", 3)  # the flag is one update in the store, seen by every process
    assert trained.current("reward") == 3 and trained.meta("reward", 3)["gate"]["forced"] is True
    seen.set_current("reward", 1)  # rollback
    store = writer.home.store
    assert not store.prune_model(writer.home.url, "project-1", "reward", 1)  # served: a prune must not take it
    diverged = stage(trained, "reward", {"w": b"nan"})
    trained.promote("reward", diverged, {"metrics": {"kl": float("nan"), "gain": float("inf")}}, serve=False)
    assert seen.meta("reward", 4)["metrics"] == {"kl": None, "gain": None}  # kept on PostgreSQL's json too
    assert trained.model_version() == "policy-pending"  # no policy v0 yet: nothing named that does not exist
    with pytest.raises(RegistryError, match="does not exist"):
        seen.path("reward", 9)


def test_old_versions_are_pruned_from_the_bucket(on_s3) -> None:
    found = registries(on_s3, keep_versions=1)
    trained = found.lineage("project-1")
    for i in range(4):
        trained.promote("reward", stage(trained, "reward", {"w": bytes([i])}), {})
    assert trained.versions("reward") == [0, 2, 3]  # v0 and the current one are always kept, plus `keep`
    fs = found.home.fs
    fs.invalidate_cache()
    prefixes = fs.ls(f"{found.home.root}/lineages/project-1/reward", detail=False)
    assert sorted(p.rsplit("/", 1)[-1].split("-")[0] for p in prefixes) == ["v0", "v2", "v3"]


def test_a_damaged_cached_copy_is_detected_and_fetched_again(on_s3, tmp_path, tiny_model, caplog) -> None:
    writer = registries(on_s3).lineage("project-1")
    staging = writer.staging("policy")
    shutil.copytree(tiny_model, staging, dirs_exist_ok=True)
    writer.promote("policy", staging, {"recipe": "sft"})
    weights = registries(on_s3, tmp_path / "cache-b").lineage("project-1").path("policy", 1) / "model.safetensors"
    original = weights.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one bit pattern changed: only the checksum sees it
    weights.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING):
        again = registries(on_s3, tmp_path / "cache-b").lineage("project-1").path("policy", 1)  # a new process
    assert "damaged (model.safetensors: checksum differs)" in caplog.text
    assert (again / "model.safetensors").read_bytes() == original
    (again / "config.json").unlink()
    assert registries(on_s3, tmp_path / "cache-b").lineage("project-1").path("policy", 1) == again
    assert (again / "config.json").is_file()


def test_the_cache_is_pruned_least_recently_used_first(tmp_path) -> None:
    cache = ModelCache(tmp_path / "cache", limit_bytes=2500)
    for i, name in enumerate(("old", "middle", "new")):
        entry = cache.root / name
        entry.mkdir(parents=True)
        (entry / "w").write_bytes(b"x" * 1000)
        os.utime(entry, (1000 + i, 1000 + i))  # last used in this order
    assert cache.prune(in_use_s=0) == [cache.root / "old"]
    assert sorted(p.name for p in cache.root.iterdir() if not p.name.startswith(".")) == ["middle", "new"]
    assert cache.prune(keep=cache.root / "middle", in_use_s=0) == []  # under the limit now
    filling, killed = cache.root / ".part-abc-11", cache.root / ".part-def-12"
    filling.mkdir(), killed.mkdir()
    with file_lock(cache.root / ".abc.lock"):  # as a process filling digest abc holds it
        cache.prune(in_use_s=0)
    assert filling.is_dir() and not killed.exists()


UPLOADER = """
import os
from backend.core.settings import get_settings
from backend.store import Store
from backend.store.registry import open_registries
settings = get_settings()
registry = open_registries(settings, Store(settings.sqlalchemy_url)).lineage("project-1")
staging = registry.staging("reward")
for i in range(400):
    (staging / f"shard-{i:04d}.bin").write_bytes(os.urandom(256 * 1024))
print("staged", flush=True)
registry.promote("reward", staging, {"recipe": "reward"})
print("promoted", flush=True)
"""


def test_an_upload_killed_midway_never_becomes_current_and_the_reconciler_removes_it(on_s3, tmp_path, redis) -> None:
    found = registries(on_s3)
    trained = found.lineage("project-1")
    trained.promote("reward", stage(trained, "reward", {"w": b"served"}), {})
    worker = subprocess.Popen(
        [sys.executable, "-c", UPLOADER],
        env=settings_env(on_s3, MODEL_CACHE_DIR=str(tmp_path / "cache-worker")),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "staged"
        folder, fs = f"{found.home.root}/lineages/project-1/reward", found.home.fs

        def uploading() -> list[str]:
            fs.invalidate_cache()
            return [p for p in fs.find(folder) if "/v1-" in p]

        started = wait_for(uploading, 60, 0.05, "the upload's first objects")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    fs.invalidate_cache()
    left = [p for p in fs.find(folder) if "/v1-" in p]
    assert started and left and not any(p.endswith(".manifest.json") for p in left), "killed before it finished"
    assert 0 < len(left) < 400
    for view in (trained, registries(on_s3, tmp_path / "cache-b").lineage("project-1")):
        assert view.versions("reward") == [0] and view.current("reward") == 0  # nothing partial is seen
    with pytest.raises(RegistryError):
        trained.path("reward", 1)
    assert found.discard_abandoned() == []  # within MODEL_UPLOAD_TIMEOUT it may still be alive
    assert [p for p in fs.find(folder) if "/v1-" in p] == left
    app = create_app(on_s3.model_copy(update={"model_upload_timeout": 0}))  # a backend, MODEL_UPLOAD_TIMEOUT later
    reconciler = Reconciler(app.extensions["rlhf"].annotations, app.extensions["rlhf_registries"])
    removed = reconciler.run_once()["discarded"]
    assert len(removed) == 1 and "/reward/v1-" in removed[0]
    fs.invalidate_cache()
    assert [p for p in fs.find(folder) if "/v1-" in p] == []
    assert trained.versions("reward") == [0] and trained.current("reward") == 0
    after = trained.promote("reward", stage(trained, "reward", {"w": b"next"}), {})
    assert after == 2  # a number once handed out is never reused: no cached copy can be mistaken for it
    assert reconciler.run_once()["discarded"] == []  # what is served stays


def test_workers_starting_together_on_different_hosts_convert_v0_once(shared_store, tmp_path, tiny_model) -> None:
    on_s3 = shared_store
    command = [sys.executable, "-m", "workers.runtime.bootstrap", "--model-dir", on_s3.model_dir, "--source"]
    racers = [
        subprocess.Popen(
            [*command, str(tiny_model)],
            env=settings_env(on_s3, MODEL_CACHE_DIR=str(tmp_path / f"host-{i}")),
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    logs = [racer.communicate(timeout=300)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], logs
    assert sum(log.count("creating policy v0 from") for log in logs) == 1, logs
    assert sum("waiting for it" in log for log in logs) <= 1
    found = registries(on_s3, tmp_path / "host-2")
    assert found.base.versions("policy") == [0] and found.base.current("policy") == 0
    fs = found.home.fs
    fs.invalidate_cache()
    assert len([p for p in fs.ls(f"{found.home.root}/policy", detail=False) if "/v0-" in p]) == 1
    assert (found.lineage("project-1").path("policy", 0) / "config.json").is_file()
