"""Where things are and which services the tests use: paths, the test Redis and PostgreSQL, Settings for a test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from backend.core.settings import Settings
from backend.store.registry import Registries, open_registries

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "payloads"
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
TEST_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AUTH = ("ls-backend", "s3cret")  # the basic auth of the backend fixture under gunicorn


def make_settings(tmp_path: Path, tiny_model: Path, **overrides: Any) -> Settings:
    """Settings for one test: the test Redis, stores under tmp_path, the tiny policy, small generation sizes."""
    values = dict(
        redis_url=TEST_REDIS_URL,
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        policy_model=str(tiny_model),
        queue_prefix="rlhf-test",
        max_new_tokens=12,
        num_candidates=3,
        generation_batch_size=16,
        model_poll_seconds=0.2,
        retrain_every=4,
        label_studio_url="",
        label_studio_api_key="",
        reconcile_seconds=0,
    )  # tests run the reconciler's passes themselves
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a subprocess (worker, gunicorn, the CLI) needs to see the same settings."""
    return {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT), **extra}


def registries_of(settings: Settings) -> Registries:
    """The model registries the backend and workers with these settings use (a disk's, or an object store's)."""
    from backend.store import Store

    return open_registries(settings, Store(settings.sqlalchemy_url))
