"""Shared fixtures: real Redis (own database number, flushed), real SQLite/PostgreSQL, tiny local models."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis

from labelstudio_server import free_port
from tiny import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    """Tiny models follow no instruction, and a system message would spend their small prompt budgets (PPO's
    max_prompt_length 64): tests run without one (test_chat checks that every stage sees SYSTEM_PROMPT).
    Here, not at import: benches import this module's helpers and keep the product's default."""
    os.environ.setdefault("SYSTEM_PROMPT", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = Path(__file__).resolve().parent / "payloads"
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
TEST_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

from backend.core.settings import Settings  # noqa: E402


def payload(name: str) -> dict[str, Any]:
    """The body of a request Label Studio 1.23.2 really sent (captured into tests/payloads)."""
    data = json.loads((PAYLOADS / name).read_text())
    return data.get("body", data)


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
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis is needed at {TEST_REDIS_URL} (make test starts one): {exc}")
    conn.flushdb()
    yield conn
    conn.flushdb()


def make_settings(tmp_path: Path, tiny_model: Path, **overrides: Any) -> Settings:
    values = dict(redis_url=TEST_REDIS_URL, data_dir=tmp_path / "data", model_dir=tmp_path / "models",
                  policy_model=str(tiny_model), queue_prefix="rlhf-test", max_new_tokens=12, num_candidates=3,
                  generation_batch_size=16, model_poll_seconds=0.2, retrain_every=4, label_studio_url="",
                  label_studio_api_key="", reconcile_seconds=0)  # tests run the reconciler's passes themselves
    values.update(overrides)
    return Settings(**values)


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


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess (worker, gunicorn) needs to see the same settings."""
    return {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)}


def run_worker(settings: Settings, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A real RQ worker in burst mode, as `python -m workers --burst` runs it."""
    proc = subprocess.run([sys.executable, "-m", "workers", "--burst", *extra], env=settings_env(settings), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


AUTH = ("ls-backend", "s3cret")


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_model):  # noqa: ANN201 - yields (Settings, url)
    """The backend under gunicorn, as `python -m backend serve` runs it, with basic auth on."""
    Redis.from_url(TEST_REDIS_URL).flushdb()
    port = free_port()
    # GATES=false: these tests follow versions through Label Studio; a tiny random model's PPO steps need not
    # raise its own objective, and the gate would keep the round unserved (test_gates covers gating)
    settings = make_settings(tmp_path_factory.mktemp("backend"), tiny_model, port=port, train_args=TINY_TRAIN,
                             retrain_every=4, basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1], gates=False)
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--workers", "1"],
                            env=settings_env(settings), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.RequestException:  # gunicorn listens before the app is imported
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        yield settings, url
    finally:
        proc.terminate()
        proc.wait(10)


# --- helpers the test modules share ----------------------------------------------------------------------

SMALL = {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-3}
TINY_TRAIN = {
    "reward": {**SMALL, "max_steps": 2, "max_length": 96},
    "ppo": {**SMALL, "response_length": 8, "num_ppo_epochs": 1, "max_prompt_length": 64},
    "dpo": {**SMALL, "max_length": 96},
    "grpo": {**SMALL, "max_completion_length": 8, "num_generations": 2, "mask_truncated_completions": False},
    "rloo": {**SMALL, "max_completion_length": 8, "num_generations": 2, "mask_truncated_completions": False},
    "sft": {**SMALL, "max_length": 96},
}
def setup_project(client, config: str | None = None, project: str = "1.1795861662") -> dict:
    body = payload("setup.pairwise.json")
    if config:
        body["schema"] = config
    body["project"] = project
    body["hostname"] = body["access_token"] = ""  # no Label Studio here: candidates stay in the store
    response = client.post("/setup", json=body)
    assert response.status_code == 200, response.json
    return response.json


def tasks_created(project: int, tasks: list[tuple[int, dict]]) -> dict:
    body = payload("webhook-annotation-created.pairwise.json")
    return {"action": "TASKS_CREATED", "project": copy.deepcopy(body["project"]) | {"id": project},
            "tasks": [{"id": i, "data": d, "project": project} for i, d in tasks]}


def ml_backend_id(client: Any, project_id: int, url: str) -> int | None:
    """The id of the project's ML backend registered at url (through the SDK), or None."""
    return next((ml.id for ml in client.ml.list(project=project_id) if ml.url.rstrip("/") == url.rstrip("/")), None)


def listed_versions(client: Any, ml_backend: int) -> list[str]:
    """What Label Studio's Model page lists: the backend's GET /versions, relayed by Label Studio."""
    return list(client.ml.list_model_versions(ml_backend).versions or [])


def queued_training(client, store, project: int = 1, timeout: float = 15.0) -> list[str]:
    """The ids of the training chain in /status once the store has handed the project's new pairs to it: a
    webhook that crosses RETRAIN_EVERY leaves that to a thread of the backend (within about 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["id"]: j["kind"] for j in client.get("/status").json["jobs"] if j["kind"] not in ("generate", "refit")}
        handed = store.untrained_pairs(project)[0] == 0
        if (handed and len(set(jobs.values())) >= 2) or time.monotonic() > deadline:  # reward and policy
            return sorted(jobs)
        time.sleep(0.05)


def annotation_created(task_id: int, annotation_id: int, data: dict[str, Any], selected: str = "left",
                       project: int = 1) -> dict[str, Any]:
    """An ANNOTATION_CREATED webhook as Label Studio sends it for the shipped Pairwise config."""
    body = payload("webhook-annotation-created.pairwise.json")
    body["project"]["label_config"] = (ROOT / "label_config.xml").read_text()
    body["task"] = {"id": task_id, "data": data, "project": project}
    body["annotation"].update(id=annotation_id, task=task_id, result=[
        {"from_name": "comparison", "to_name": "answer1", "type": "pairwise", "value": {"selected": selected}}])
    return body
