"""Fixtures every layer shares: real Redis (own database number, flushed), Settings on tmp stores, tiny local
models, the Flask app. Fixtures only: the helpers live in tests.support, and nothing imports this module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from redis import Redis

from backend.core.settings import Settings
from tests.support.settings import TEST_REDIS_URL, make_settings
from tests.support.tiny import build_tiny_model


def pytest_configure(config: pytest.Config) -> None:
    """Tiny models follow no instruction, and a system message would spend their small prompt budgets (PPO's
    max_prompt_length 64): tests run without one (test_chat checks that every stage sees SYSTEM_PROMPT).
    Here, not at import: the benches share tests.support and keep the product's default."""
    os.environ.setdefault("SYSTEM_PROMPT", "")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(autouse=True)
def _background_threads_end_with_the_test():
    """An app's background threads would otherwise queue jobs into the next test's Redis (and pile up)."""
    yield
    from backend.background.threads import stop_all

    stop_all()


@pytest.fixture
def redis() -> Redis:
    conn = Redis.from_url(TEST_REDIS_URL)
    try:
        conn.ping()
    except Exception as exc:
        pytest.fail(f"Redis is needed at {TEST_REDIS_URL} (make test starts one): {exc}")
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture
def settings(tmp_path: Path, tiny_model: Path, redis: Redis) -> Settings:
    return make_settings(tmp_path, tiny_model)


@pytest.fixture
def app(settings: Settings):
    from backend.http.app import create_app

    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 API (moto's server) for the session, with AWS_* pointing at it; yields its endpoint URL."""
    from tests.support.objectstore import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint
