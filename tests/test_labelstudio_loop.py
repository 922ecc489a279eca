"""The product as a user runs it, against a real Label Studio: `connect`, `import`, candidates written back
by a real worker, annotations submitted through Label Studio's API arriving as webhooks, retraining, and
Label Studio listing the new model version."""
from __future__ import annotations

import base64
import subprocess
import sys
import time

import pytest
import requests
from conftest import ROOT, TEST_REDIS_URL, make_settings, run_worker, settings_env
from redis import Redis
from test_training_loop import TINY_TRAIN

from backend import labelstudio as ls
from backend.registry import Registry
from backend.store import Store
from labelstudio_server import LabelStudioServer, free_port, label_studio  # noqa: F401  (session fixture)

pytestmark = pytest.mark.labelstudio
AUTH = ("ls-backend", "s3cret")


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_model):
    """The backend under gunicorn, as `python -m backend serve` runs it, with basic auth on."""
    Redis.from_url(TEST_REDIS_URL).flushdb()
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("backend"), tiny_model, port=port, train_args=TINY_TRAIN,
                             retrain_every=4, basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
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


def cli(settings, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "backend", *args], env=settings_env(settings), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def submit(c, task: dict, selected: str) -> None:
    """An annotator's comparison, through Label Studio's API (Label Studio then calls our webhook)."""
    c.annotations.create(id=task["id"], result=[{"from_name": "comparison", "to_name": "answer1",
                                                 "type": "pairwise", "value": {"selected": selected}}])


def test_connect_import_generate_annotate_retrain(label_studio: LabelStudioServer, backend, tmp_path) -> None:  # noqa: F811
    settings, url = backend
    store, registry = Store(settings.sqlalchemy_url), Registry(settings.model_dir)
    connect = ["connect", "--url", label_studio.url, "--api-key", label_studio.token, "--title", "RLHF e2e",
               "--backend-url", url]
    first = cli(settings, *connect)
    assert "created project" in first and "registered ML backend" in first
    project = int(first.split("project ")[-1].split()[0])
    again = cli(settings, *connect)  # idempotent: a second run changes nothing
    assert all(line.startswith(("already", "project")) for line in again.strip().splitlines()), again

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Tell me fact number {i} about the sea." for i in range(8)) + "\n")
    assert "imported 8 prompts" in cli(settings, "import", "--project", str(project),
                                       str(prompts), "--url", label_studio.url, "--api-key", label_studio.token)
    wait_until(lambda: len(store.project_tasks(project)) == 8, what="TASKS_CREATED webhook")
    run_worker(settings)

    c = ls.client(label_studio.url, label_studio.token)
    tasks = ls.list_tasks(c, project)
    assert len(tasks) == 8
    for task in tasks:  # the worker wrote the policy's answers into Label Studio
        assert task["data"]["answer1"] and task["data"]["answer2"], task
        assert store.tasks([task["id"]])[task["id"]].policy_version == 0

    for i, task in enumerate(tasks[:4]):
        submit(c, task, "left" if i % 2 else "right")
    wait_until(lambda: store.counts().get(project, {}).get("pairs") == 4, what="annotation webhooks")
    status = requests.get(f"{url}/status", auth=AUTH, timeout=5).json()
    assert status["projects"][str(project)]["annotations"] == 4
    assert {j["kind"] for j in status["jobs"]} >= {"reward", "ppo"}  # the 4th pair crossed RETRAIN_EVERY

    run_worker(settings)
    assert registry.current("policy") == 1 and registry.current("reward") == 0
    backend_id = ls.find_ml_backend(c, project, url)
    versions = wait_until(lambda: "policy-v1.reward-v0" in ls.model_versions(c, backend_id)
                          and ls.model_versions(c, backend_id), what="new version listed by Label Studio")
    assert "policy-v0" in versions
    labeled = {t["id"] for t in tasks[:4]}
    for task in ls.list_tasks(c, project):  # unlabeled tasks now show the new policy's answers
        expected = 0 if task["id"] in labeled else 1
        assert store.tasks([task["id"]])[task["id"]].policy_version == expected
        assert store.tasks([task["id"]])[task["id"]].candidates == [task["data"]["answer1"], task["data"]["answer2"]]

    # Label Studio's "Start Training" button reaches the backend and queues a (single) retraining
    r = requests.post(f"{label_studio.url}/api/ml/{backend_id}/train", headers={"Authorization": f"Token {label_studio.token}"},
                      json={}, timeout=30)
    assert r.status_code in (200, 201), r.text
    jobs = requests.get(f"{url}/status", auth=AUTH, timeout=5).json()["jobs"]
    assert [j["status"] for j in jobs if j["kind"] == "reward"].count("queued") == 1

    # deleting an annotation in Label Studio removes its pair; resync rebuilds the store from the export
    annotation_id = c.tasks.get(tasks[0]["id"]).annotations[0]["id"]
    c.annotations.delete(annotation_id)
    wait_until(lambda: store.counts()[project]["pairs"] == 3, what="ANNOTATIONS_DELETED webhook")
    store.clear_project(project)  # as if webhooks had been lost
    out = cli(settings, "resync", "--project", str(project), "--url", label_studio.url, "--api-key", label_studio.token)
    assert "3 annotations, 3 pairs" in out and store.counts()[project]["pairs"] == 3


def test_health_needs_no_auth_but_predict_does(backend) -> None:
    settings, url = backend
    assert requests.get(f"{url}/health", timeout=5).json()["status"] == "UP"
    assert requests.post(f"{url}/predict", json={"tasks": []}, timeout=5).status_code == 401
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    r = requests.post(f"{url}/predict", json={"tasks": []}, headers={"Authorization": f"Basic {token}"}, timeout=5)
    assert r.status_code == 400 and "tasks" in r.json()["error"]


def test_prompts_under_the_configs_key_and_deleted_tasks(label_studio: LabelStudioServer, backend, tmp_path) -> None:  # noqa: F811
    """`import` writes prompts where the label config reads them; a task deleted in Label Studio leaves the store
    (TASKS_DELETED), and one deleted behind the backend's back (webhook off) does not abort generation."""
    settings, url = backend
    store = Store(settings.sqlalchemy_url)
    config = tmp_path / "question.xml"
    config.write_text((ROOT / "label_config.xml").read_text().replace('value="$prompt"', 'value="$question"'))
    out = cli(settings, "connect", "--url", label_studio.url, "--api-key", label_studio.token, "--title",
              "Deleted tasks", "--backend-url", url, "--label-config", str(config))
    project = int(out.split("project ")[-1].split()[0])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Name a colour, please ({i})." for i in range(4)) + "\n")
    cli(settings, "import", "--project", str(project), str(prompts), "--url", label_studio.url,
        "--api-key", label_studio.token)
    c = ls.client(label_studio.url, label_studio.token)
    tasks = ls.list_tasks(c, project)
    assert [t["data"]["question"] for t in tasks] == [f"Name a colour, please ({i})." for i in range(4)]
    wait_until(lambda: len(store.project_tasks(project)) == 4, what="TASKS_CREATED webhook")

    [hook] = [w for w in c.webhooks.list(project=str(project)) if w.url == url + "/webhook"]
    c.webhooks.update(hook.id, is_active=False)
    c.tasks.delete(str(tasks[0]["id"]))  # the backend is not told: the write-back will get a 404
    c.webhooks.update(hook.id, is_active=True)
    run_worker(settings, "--queues", "generate")
    jobs = requests.get(f"{url}/status", auth=AUTH, timeout=5).json()["jobs"]
    assert {j["status"] for j in jobs if j["kind"] == "generate" and j["project"] == project} == {"finished"}
    remaining = ls.list_tasks(c, project)
    assert len(remaining) == 3 and all(t["data"]["answer1"] and t["data"]["answer2"] for t in remaining)
    assert sorted(t.id for t in store.project_tasks(project)) == sorted(t["id"] for t in remaining)

    c.tasks.delete(str(remaining[0]["id"]))  # through the webhook this time
    wait_until(lambda: len(store.project_tasks(project)) == 2, what="TASKS_DELETED webhook")
