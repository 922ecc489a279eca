"""Candidate generation by a real RQ worker with a tiny local policy: triggers, shapes, provenance."""

from __future__ import annotations

from backend.store import Store
from tests.support.payloads import payload, setup_project, tasks_created
from tests.support.services import run_worker
from tests.support.settings import ROOT


def test_tasks_created_webhook_generates_pairwise_candidates(client, settings) -> None:
    setup_project(client)
    prompts = [(i, {"prompt": f"Question number {i}?", "answer1": "", "answer2": ""}) for i in range(1, 6)]
    answer = client.post("/webhook", json=tasks_created(1, prompts)).json
    assert answer["to_generate"] == 5 and answer["job"]
    run_worker(settings)
    store = Store(settings.sqlalchemy_url)
    tasks = store.project_tasks(1)
    assert len(tasks) == 5
    for task in tasks:
        assert task.policy_version == 0 and len(task.candidates) == 2
        assert task.data["answer1"] == task.candidates[0] and task.data["answer2"] == task.candidates[1]
    jobs = client.get("/status").json["jobs"]
    assert [(j["kind"], j["status"]) for j in jobs] == [("generate", "finished")]


def test_ranker_gets_k_candidates_as_list_items(client, settings) -> None:
    setup_project(client, (ROOT / "label_config_ranker.xml").read_text(), project="2.1")
    body = tasks_created(2, [(50, {"prompt": "Rank these", "items": []})])
    body["project"]["label_config"] = (ROOT / "label_config_ranker.xml").read_text()
    client.post("/webhook", json=body)
    run_worker(settings)
    task = Store(settings.sqlalchemy_url).tasks([50])[50]
    assert len(task.candidates) == settings.num_candidates == 3
    assert [i["id"] for i in task.data["items"]] == [f"{task.generation}-{i}" for i in range(3)]
    assert task.data["generation"] == task.generation and task.generation.startswith("p0-")
    assert [i["body"] for i in task.data["items"]] == task.candidates


def test_predict_on_task_without_candidates_queues_generation(client, settings) -> None:
    setup_project(client)
    body = payload("predict.pairwise.json")
    body["tasks"][0]["data"] = {"prompt": "Tell me a joke", "answer1": "", "answer2": ""}
    assert client.post("/predict", json=body).json["results"] == [[]]
    run_worker(settings)
    task = Store(settings.sqlalchemy_url).tasks([2])[2]
    assert len(task.candidates) == 2 and task.candidates[0] != task.candidates[1]


def test_tasks_that_came_with_answers_are_not_regenerated(client, settings) -> None:
    setup_project(client)
    answer = client.post("/webhook", json=tasks_created(1, [(7, {"prompt": "p", "answer1": "a", "answer2": "b"})])).json
    assert answer["to_generate"] == 0 and answer["job"] is None


def test_predict_before_setup_uses_the_config_it_carries(client, settings) -> None:
    """A backend that missed /setup (e.g. restarted on an empty store) still serves and generates."""
    body = payload("predict.pairwise.json")
    body["tasks"][0]["data"] = {"prompt": "Name a colour", "answer1": "", "answer2": ""}
    assert client.post("/predict", json=body).status_code == 200
    run_worker(settings)
    assert len(Store(settings.sqlalchemy_url).tasks([2])[2].candidates) == 2
