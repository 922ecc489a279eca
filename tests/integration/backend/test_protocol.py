"""The ML-backend protocol over HTTP (Flask test client), driven by payloads Label Studio 1.23.2 really sent."""

from __future__ import annotations

import base64
import copy
import time
from pathlib import Path

import pytest

from backend.http.app import create_app
from backend.store import Store
from tests.support.payloads import payload, queued_training, setup_project
from tests.support.settings import ROOT, make_settings
from tests.support.wait import wait_for


def test_health_and_setup(client) -> None:
    health = client.get("/health").json
    assert health["status"] == "UP" and health["model_class"] == "RLHFBackend"
    assert setup_project(client)["model_version"] == "policy-pending"  # no policy v0 converted in this test


def test_webhooks_store_pairs_update_replaces_delete_removes(client, settings) -> None:
    setup_project(client)
    created = payload("webhook-annotation-created.pairwise.json")
    assert client.post("/webhook", json=created).json["pairs"] == 1
    assert client.post("/webhook", json=created).json["pairs"] == 1  # a repeat is idempotent
    store = Store(settings.sqlalchemy_url)
    assert [(p["chosen"], p["rejected"]) for p in store.pairs("project-1", judged=True)] == [
        ("good answer 0", "bad answer 0")
    ]
    client.post("/webhook", json=payload("webhook-annotation-updated.pairwise.json"))
    assert [(p["chosen"], p["rejected"]) for p in store.pairs("project-1", judged=True)] == [
        ("bad answer 0", "good answer 0")
    ]
    status = client.get("/status").json
    assert status["projects"]["1"]["annotations"] == 1 and status["projects"]["1"]["pairs"] == 1
    assert client.post("/webhook", json=payload("webhook-annotations-deleted.pairwise.json")).json["deleted"] == 1
    assert store.pairs("project-1", judged=True) == []


def test_deleted_tasks_and_projects_leave_the_store_and_the_counts(client, settings) -> None:
    setup_project(client)
    setup_project(client, project="2.1")
    created = payload("webhook-annotation-created.pairwise.json")
    client.post("/webhook", json=created)
    other = copy.deepcopy(created)
    other["annotation"].update(id=999, task=77)
    other["task"] = dict(other["task"], id=77)
    client.post("/webhook", json=other)
    assert client.get("/status").json["projects"]["1"]["pairs"] == 2
    project = {"id": 1, "title": "p"}
    answer = client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": [{"id": 77}], "project": project})
    assert answer.status_code == 200 and answer.json["deleted_annotations"] == 1
    counts = client.get("/status").json["projects"]["1"]
    assert (counts["annotations"], counts["pairs"]) == (1, 1)
    store = Store(settings.sqlalchemy_url)
    assert 77 not in store.tasks([77]) and [p["chosen"] for p in store.pairs("project-1", judged=True)] == [
        "good answer 0"
    ]
    assert (
        client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": ["x"], "project": project}).status_code == 400
    )
    assert (
        client.post("/webhook", json={"action": "PROJECT_DELETED", "project": {"id": 1}}).json["deleted_annotations"]
        == 1
    )
    assert "1" not in client.get("/status").json["projects"] and store.project(1) is None
    assert store.project(2) is not None  # other projects are untouched


def test_bulk_annotations_created_ranker(client) -> None:
    body = payload("webhook-annotations-created.ranker.json")
    setup_project(client, body["project"]["label_config"], project=str(body["project"]["id"]))
    answer = client.post("/webhook", json=body).json
    assert answer["annotations"] == 2 and answer["pairs"] == 2


def test_cancelled_and_empty_annotations_give_no_pairs(client) -> None:
    setup_project(client)
    body = payload("webhook-annotation-created.pairwise.json")
    body["annotation"]["was_cancelled"] = True
    assert client.post("/webhook", json=body).json["pairs"] == 0
    body["annotation"].update(was_cancelled=False, result=[])
    assert client.post("/webhook", json=body).json["pairs"] == 0
    body["annotation"].update(id=body["annotation"]["id"] + 1)
    client.post("/webhook", json=body)
    counts = client.get("/status").json["projects"]["1"]
    assert (counts["skipped_annotations"], counts["annotations"]) == (2, 0)  # reported, not silently dropped


def test_predict_answers_in_order_and_queues_generation(client, settings) -> None:
    setup_project(client)
    body = payload("predict.pairwise.json")
    body["tasks"] = [
        dict(body["tasks"][0], id=10 + i, data={"prompt": f"Q{i}?", "answer1": "", "answer2": ""}) for i in range(3)
    ]
    answer = client.post("/predict", json=body).json
    assert len(answer["results"]) == 3
    assert answer["results"] == [[], [], []]  # nothing scored yet: no prediction (no empty tab in Label Studio)
    jobs = client.get("/status").json["jobs"]
    assert [(j["kind"], j["status"]) for j in jobs] == [("generate", "queued")]
    client.post("/predict", json=body)  # asking again does not queue twice
    assert len(client.get("/status").json["jobs"]) == 1


def test_start_training_is_coalesced(client) -> None:
    setup_project(client)
    client.post("/webhook", json=payload("webhook-annotation-created.pairwise.json"))
    first = client.post("/webhook", json=payload("webhook-start-training.pairwise.json")).json
    second = client.post("/webhook", json=payload("webhook-start-training.pairwise.json")).json
    assert len(first["training"]) == 2 and not first["coalesced"]
    assert second["coalesced"] and second["training"] == first["training"]


def test_retrain_threshold_from_store(client, settings) -> None:
    """RETRAIN_EVERY=4 pairs in the test settings: the fourth new annotation requests one training, which a
    thread of the backend queues off the webhook's path; the count then starts again from the store."""
    setup_project(client)
    body = payload("webhook-annotation-created.pairwise.json")

    def annotate(annotation_id: int) -> dict:
        b = copy.deepcopy(body)
        b["annotation"]["id"] = annotation_id
        return client.post("/webhook", json=b).json

    answers = [annotate(100 + i) for i in range(4)]
    assert [a.get("training") for a in answers] == [None, None, None, "requested"]
    assert len(queued_training(client, Store(settings.sqlalchemy_url))) == 2  # reward -> policy
    later = [annotate(104 + i) for i in range(2)]
    assert [("training" in a) for a in later] == [False, False]
    assert later[0]["new_pairs"] == 1  # counted again from the store after the chain was queued


BAD_REQUESTS = [
    ("/webhook", "not json", 400),
    ("/webhook", [], 400),
    ("/webhook", {"action": 5}, 400),
    ("/webhook", {"action": "ANNOTATION_CREATED"}, 400),
    ("/webhook", {"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}, "project": {"id": 1}}, 400),
    ("/webhook", {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "1"}], "project": {"id": 1}}, 400),
    ("/webhook", {"action": "TASKS_CREATED", "tasks": "x", "project": {"id": 1}}, 400),
    ("/predict", {"tasks": [], "project": "1.1"}, 400),
    ("/predict", {"tasks": [{"id": 1}], "project": "1.1"}, 400),
    ("/predict", {"tasks": [{"id": 1, "data": {"answer1": "", "answer2": ""}}], "project": "1.1"}, 422),
    ("/predict", {"tasks": [{"id": 1, "data": {}}], "project": "x"}, 400),
    ("/setup", {"project": "1.1", "schema": 5}, 400),
    ("/setup", {"project": "1.1", "schema": "<View><Text name='t' value='$t'/></View>"}, 422),
    ("/setup", {"project": "1.1", "schema": (ROOT / "label_config.xml").read_text(), "extra_params": "{not"}, 400),
    (
        "/setup",
        {"project": "1.1", "schema": (ROOT / "label_config.xml").read_text(), "extra_params": '{"algorithm": "magic"}'},
        400,
    ),
]


@pytest.mark.parametrize("path,body,status", BAD_REQUESTS)
def test_bad_input_gets_4xx_json(client, path, body, status) -> None:
    setup_project(client)
    kwargs = {"data": body, "content_type": "application/json"} if isinstance(body, str) else {"json": body}
    response = client.post(path, **kwargs)
    assert response.status_code == status and "error" in response.json


def test_result_not_matching_config_is_422_and_not_stored(client, settings) -> None:
    setup_project(client)
    body = payload("webhook-annotation-created.pairwise.json")
    body["annotation"]["result"][0]["value"] = {"selected": 42}
    response = client.post("/webhook", json=body)
    assert response.status_code == 422 and "selected" in response.json["error"]
    assert Store(settings.sqlalchemy_url).pairs("project-1", judged=True) == []


def test_unknown_action_is_acknowledged_and_ignored(client) -> None:
    assert client.post("/webhook", json={"action": "SOMETHING_NEW"}).json["status"] == "ignored"


def test_oversized_body_is_413(tmp_path, tiny_model, redis) -> None:
    app = create_app(make_settings(tmp_path, tiny_model, max_body_bytes=1000))
    response = app.test_client().post("/webhook", json={"action": "X", "pad": "x" * 5000})
    assert response.status_code == 413 and "error" in response.json


def test_basic_auth_guards_all_but_health(tmp_path, tiny_model, redis) -> None:
    app = create_app(make_settings(tmp_path, tiny_model, basic_auth_user="ls", basic_auth_pass="s3cret"))
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json=payload("setup.pairwise.json")).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ls:nope").decode()}
    assert client.get("/status", headers=wrong).status_code == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:s3cret").decode()}
    assert client.post("/setup", json=payload("setup.pairwise.json"), headers=good).status_code == 200
    shouted = {"Authorization": "BASIC  " + base64.b64encode(b"ls:s3cret").decode()}  # RFC 7617: any case
    assert client.get("/status", headers=shouted).status_code == 200
    assert client.get("/").status_code == 401  # no second open door; /health tells nothing about models
    assert set(client.get("/health").json) == {"status", "model_class"}
    assert client.get("/projects/1/health").status_code == 200
    assert set(client.get("/ready").json) == {"status", "failing"}  # readiness is open too, and names nothing
    routes = {r.rule for r in app.url_map.iter_rules()} - {"/health", "/projects/<int:project>/health", "/ready"}
    for rule in routes - {"/static/<path:filename>"}:  # every other route asks for credentials
        path = rule.replace("<int:project>", "1").replace("<path:filename>", "x").replace("<", "").replace(">", "")
        assert client.open(path, method="GET").status_code in (401, 405), path
        assert client.open(path, method="POST").status_code in (401, 405), path


def test_versions_are_listed_per_project(client, settings) -> None:
    """Label Studio's GET /versions names no project; under /projects/<id>/ (the URL `connect` registers) it
    lists that project's lineage only."""
    setup_project(client)
    setup_project(client, project="2.1")
    (Path(settings.model_dir) / "policy" / "v0").mkdir(parents=True)
    (Path(settings.model_dir) / "lineages" / "project-2" / "reward" / "v3").mkdir(parents=True)
    one, two = client.get("/projects/1/versions").json, client.get("/projects/2/versions").json
    assert one == {"versions": ["policy-v0"], "current": "policy-v0"}
    assert two["current"] == "policy-v0.reward-v3" and "policy-v0.reward-v3" in two["versions"]
    assert client.get("/versions?project=2").json == two
    assert set(client.get("/versions").json["versions"]) == set(one["versions"]) | set(two["versions"])
    time.sleep(settings.model_poll_seconds + 0.1)  # the served versions are re-read after a poll period
    assert (
        client.post(
            "/projects/2/setup",
            json=payload("setup.pairwise.json") | {"project": None, "hostname": "", "access_token": ""},
        ).json["model_version"]
        == "policy-v0.reward-v3"
    )


def test_a_promotion_a_worker_announces_is_served_before_the_next_poll(tmp_path, tiny_model, redis) -> None:
    """Workers announce each promotion on Redis: the watcher thread forgets that lineage's cached versions
    at once, so Label Studio sees the new version without waiting for a poll period; stopped, it unsubscribes."""
    from backend.background.threads import stop_all
    from backend.services import build

    settings = make_settings(tmp_path, tiny_model, model_poll_seconds=600)
    client = create_app(settings).test_client()
    workers = build(settings)  # what a worker announces through
    channel = workers.queue.models_channel

    def served() -> str:
        return client.post(
            "/projects/1/setup",
            json=payload("setup.pairwise.json") | {"project": None, "hostname": "", "access_token": ""},
        ).json["model_version"]

    (Path(settings.model_dir) / "policy" / "v0").mkdir(parents=True)
    setup_project(client)
    assert served() == "policy-v0"
    (Path(settings.model_dir) / "lineages" / "project-1" / "reward" / "v0").mkdir(parents=True)
    assert served() == "policy-v0"  # cached: the next poll is ten minutes away
    # the thread subscribes soon after the app is built
    wait_for(lambda: redis.pubsub_numsub(channel)[0][1] >= 1, 10, 0.05, "the model watcher to subscribe")
    workers.announce("project-1", "reward", 0)
    wait_for(lambda: served() == "policy-v0.reward-v0", 10, 0.05, "the announced promotion to be served")
    stop_all()  # the thread ends within its one-second read
    wait_for(lambda: not redis.pubsub_numsub(channel)[0][1], 15, 0.05, "the stopped watcher to unsubscribe")


def test_ranker_prediction_orders_items_by_reward(client, settings) -> None:
    """Once a reward model scored the candidates, /predict returns its order over the task's own item ids."""
    import time

    setup_project(client, (ROOT / "label_config_ranker.xml").read_text(), project="2.1")
    models = Path(settings.model_dir)
    (models / "policy" / "v0").mkdir(parents=True)  # the base policy and the project's own
    (models / "lineages" / "project-2" / "reward" / "v0").mkdir(parents=True)  # reward model, promoted
    data = {"prompt": "p", "items": [{"id": i, "title": i, "body": f"answer {i}"} for i in ("x", "y", "z")]}
    store = Store(settings.sqlalchemy_url)
    store.save_tasks(2, [(60, data)])
    store.set_candidates(60, ["answer x", "answer y", "answer z"], 0, data)
    store.set_scores(60, [0.1, 2.0, -1.0], 0)
    time.sleep(settings.model_poll_seconds + 0.1)
    body = {"tasks": [{"id": 60, "data": data}], "project": "2.1"}
    result = client.post("/predict", json=body).json["results"][0]
    assert result["model_version"] == "policy-v0.reward-v0" and 0.5 < result["score"] < 1.0
    assert result["result"] == []  # by default the pick is not pre-selected: it would anchor the annotator
    preselecting = create_app(settings.model_copy(update={"preselect_choice": True})).test_client()
    result = preselecting.post("/predict", json=body).json["results"][0]
    assert result["result"][0]["value"] == {"ranker": {"rank": ["y", "x", "z"]}}


def test_cancel_a_queued_training_from_the_cli(client, settings) -> None:
    import subprocess
    import sys

    from tests.support.settings import settings_env

    setup_project(client)
    client.post("/webhook", json=payload("webhook-annotation-created.pairwise.json"))
    reward_job, _ = client.post("/webhook", json=payload("webhook-start-training.pairwise.json")).json["training"]
    out = subprocess.run(
        [sys.executable, "-m", "backend", "cancel", reward_job],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "cancelled" in out.stdout, out.stderr
    jobs = {j["id"]: j for j in client.get("/status").json["jobs"]}
    assert jobs[reward_job]["status"] == "canceled"
    missing = subprocess.run(
        [sys.executable, "-m", "backend", "cancel", "no-such-job"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "no job" in missing.stderr


def test_projects_pool_into_one_lineage_only_when_asked(client, settings) -> None:
    pooled = '{"lineage": "support-bot"}'
    for project in ("1.1", "2.1"):
        body = payload("setup.pairwise.json") | {
            "project": project,
            "hostname": "",
            "access_token": "",
            "extra_params": pooled,
        }
        assert client.post("/setup", json=body).status_code == 200
    setup_project(client, project="3.1")
    (Path(settings.model_dir) / "policy" / "v0").mkdir(parents=True)
    (Path(settings.model_dir) / "lineages" / "support-bot" / "reward" / "v0").mkdir(parents=True)
    one, two, three = (client.get(f"/projects/{p}/versions").json["current"] for p in (1, 2, 3))
    assert one == two == "policy-v0.reward-v0" and three == "policy-v0"
    status = client.get("/status?project=2").json
    assert status["projects"]["2"]["lineage"] == "support-bot" and status["lineages"]["support-bot"]["projects"] == [
        1,
        2,
    ]
    bad = payload("setup.pairwise.json") | {"extra_params": '{"lineage": "../../etc"}'}
    answer = client.post("/setup", json=bad)
    assert answer.status_code == 400 and "lineage" in answer.json["error"]


def test_predict_answers_thousands_of_tasks_in_order(client, settings) -> None:
    """Label Studio sends every selected task in one /predict: all are stored and answered, none capped."""
    setup_project(client)
    body = payload("predict.pairwise.json")
    body["tasks"] = [
        {"id": 10_000 + i, "data": {"prompt": f"Q{i}?", "answer1": "", "answer2": ""}} for i in range(6000)
    ]
    answer = client.post("/predict", json=body).json
    assert len(answer["results"]) == 6000
    body["tasks"][0]["data"]["prompt"] = "changed"
    assert len(client.post("/predict", json=body).json["results"]) == 6000  # known tasks are updated in bulk
    assert Store(settings.sqlalchemy_url).tasks([10_000])[10_000].data["prompt"] == "changed"


def test_the_cli_says_in_one_line_what_is_unreachable(tmp_path, tiny_model, redis) -> None:
    import subprocess
    import sys

    from tests.support.labelstudio_server import free_port
    from tests.support.settings import settings_env

    settings = make_settings(tmp_path, tiny_model, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    out = subprocess.run(
        [sys.executable, "-m", "backend", "status"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: Redis at redis://127.0.0.1:")
    ok = make_settings(tmp_path, tiny_model)
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend",
            "import",
            "--project",
            "1",
            str(prompts),
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--api-key",
            "x",
        ],
        env=settings_env(ok),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and "Label Studio did not answer" in out.stderr
