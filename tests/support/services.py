"""Real processes and databases the tests drive: an RQ worker in burst mode, the backend under gunicorn, a Redis
of one's own, an empty PostgreSQL database."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from backend.core.settings import Settings
from tests.support.settings import ROOT, TEST_POSTGRES_URL, settings_env
from tests.support.wait import wait_for


def run_worker(settings: Settings, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A real RQ worker in burst mode, as `python -m workers --burst` runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "workers", "--burst", *extra],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def start_redis(port: int, timeout: float = 10) -> subprocess.Popen:
    """A redis-server of the caller's own on 127.0.0.1:port (no persistence), once it answers PING; the caller
    stops it. Needs redis-server on the PATH (check with shutil.which first to skip instead)."""
    from redis import Redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not on the PATH")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return bool(Redis(port=port).ping())
        except Exception:
            return False

    try:
        wait_for(answers, timeout, 0.05, f"redis-server to answer on port {port}")
    except BaseException:
        proc.kill()
        raise
    return proc


def postgres_url() -> str:
    """An empty PostgreSQL database for one test (skipped with a message where none answers)."""
    import pytest
    from sqlalchemy import create_engine, text

    url = Settings(database_url=TEST_POSTGRES_URL).sqlalchemy_url
    try:
        with create_engine(url).connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at {TEST_POSTGRES_URL} ({type(exc).__name__}): "
            "set TEST_POSTGRES_URL to run the store tests on PostgreSQL"
        )
    empty_postgres(url)
    return url


def empty_postgres(url: str) -> None:
    """Drop every table, Alembic's version table included."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """`python -m backend serve` (gunicorn) with these settings, once /health answers; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--workers", "1"],
        env=settings_env(settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{settings.port}"

    def healthy() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        try:
            return requests.get(f"{url}/health", timeout=1).ok
        except requests.RequestException:  # gunicorn listens before the app is imported
            return False

    try:
        wait_for(healthy, 60, 0.2, f"the backend's /health at {url}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
