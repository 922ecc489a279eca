"""No trigger is ever lost: what the store says is due gets queued, whatever happened to Redis or to a chain."""

from __future__ import annotations

import shutil
import time

import pytest

from backend.background.reconciler import Reconciler
from backend.http.app import create_app
from backend.store import Store
from tests.support.labelstudio_server import free_port
from tests.support.payloads import annotation_created, queued_training, setup_project, tasks_created
from tests.support.services import run_worker, start_redis
from tests.support.settings import make_settings
from tests.support.tiny import TINY_TRAIN


@pytest.fixture
def own_redis():
    """A Redis of this test's own, on its own port, that the test can stop and start again."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on the PATH")
    port = free_port()
    procs = []

    def start() -> None:
        procs.append(start_redis(port, timeout=10))

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def annotate(client, task_id: int, annotation_id: int) -> dict:
    data = {"prompt": f"Question {task_id}?", "answer1": f"a{task_id}", "answer2": f"b{task_id}"}
    response = client.post("/webhook", json=annotation_created(task_id, annotation_id, data))
    assert response.status_code == 200, response.json
    return response.json


def test_webhooks_are_acknowledged_with_redis_down_and_their_triggers_queued_later(
    tmp_path, tiny_model, own_redis
) -> None:
    url, start, stop = own_redis
    settings = make_settings(tmp_path, tiny_model, redis_url=url, retrain_every=2)
    app = create_app(settings)
    client = app.test_client()
    setup_project(client)
    assert "training" not in annotate(client, 1, 101)
    stop()
    deferred = annotate(client, 2, 102)  # crosses RETRAIN_EVERY while Redis is down: stored, acknowledged
    assert deferred["pairs"] == 1 and deferred["training"] == "requested"
    time.sleep(1.5)  # the backend's training thread tries within 0.5 s, finds Redis down and leaves it due
    app.extensions["rlhf_trains"].stop()  # on a slow machine it may not have tried yet: it must not, after start()
    created = client.post("/webhook", json=tasks_created(1, [(9, {"prompt": "p", "answer1": "", "answer2": ""})]))
    assert created.status_code == 200 and created.json["job"] == "deferred"
    assert Store(settings.sqlalchemy_url).counts()[1]["pairs"] == 2
    start()
    done = Reconciler(app.extensions["rlhf"].annotations, app.extensions["rlhf_registries"]).run_once()
    assert done["trained"] == ["project-1"] and done["generated"] == [1]
    backend = app.extensions["rlhf"]
    assert backend.queue.chain_alive("project-1")
    reconciler, now = Reconciler(backend.annotations, app.extensions["rlhf_registries"]), time.time()
    assert reconciler.run_once(now)["trained"] == []  # queued once: the chain is alive now
    for job in backend.queue.generate.get_jobs():
        job.cancel()  # as if the generation had failed: task 9 still has no candidates
    backoff = settings.reconcile_backoff_seconds
    assert reconciler.run_once(now + backoff / 2)["generated"] == []  # backing off, not loading the policy again
    assert reconciler.run_once(now + backoff + 1)["generated"] == [1]


def test_a_failed_chain_keeps_its_trigger_and_is_retried_with_backoff(tmp_path, tiny_model, redis) -> None:
    broken = {**TINY_TRAIN, "ppo": {**TINY_TRAIN["ppo"], "per_device_train_batch_size": 64}}  # more than the prompts
    settings = make_settings(
        tmp_path, tiny_model, train_args=broken, retrain_every=2, reconcile_backoff_seconds=100, algorithm="ppo"
    )
    app = create_app(settings)
    client, backend = app.test_client(), app.extensions["rlhf"]
    setup_project(client)
    for i in range(1, 5):
        annotate(client, i, 200 + i)
    store = Store(settings.sqlalchemy_url)
    queued_training(client, store)
    run_worker(settings, "--queues", "train")
    assert store.due_lineages(2) == {"project-1": "4 pairs since the last successful training"}  # not eaten
    reconciler = Reconciler(backend.annotations, app.extensions["rlhf_registries"])
    now = time.time()
    assert reconciler.run_once(now)["trained"] == ["project-1"]
    status = client.get("/status").json["lineages"]["project-1"]
    assert status["training_attempts"] == 1 and status["due"]
    run_worker(settings, "--queues", "train")  # fails again
    assert reconciler.run_once(now + 10)["trained"] == []  # backing off
    assert reconciler.run_once(now + 101)["trained"] == ["project-1"]
    assert client.get("/status").json["lineages"]["project-1"]["training_attempts"] == 2
    jobs = client.get("/status").json["jobs"]
    assert any(j["status"] == "failed" and "prompts" in (j["error"] or "") for j in jobs)


def test_readiness_follows_redis(tmp_path, tiny_model, own_redis) -> None:
    """/health says the process lives; /ready, which compose's healthcheck asks, says whether it can work."""
    url, start, stop = own_redis
    client = create_app(
        make_settings(tmp_path, tiny_model, redis_url=url, basic_auth_user="u", basic_auth_pass="p")
    ).test_client()
    assert client.get("/ready").status_code == 200  # open, like /health
    stop()
    answer = client.get("/ready")
    assert answer.status_code == 503 and answer.json["failing"] == ["redis"]
    assert client.get("/health").status_code == 200
    start()
    assert client.get("/ready").status_code == 200
