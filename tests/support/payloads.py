"""Requests Label Studio 1.23.2 really sent (tests/payloads), the bodies built from them, and the exchanges with
the Flask app most protocol tests start with."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.support.settings import PAYLOADS, ROOT
from tests.support.wait import wait_for


def payload(name: str) -> dict[str, Any]:
    """The body of a request Label Studio 1.23.2 really sent (captured into tests/payloads)."""
    data = json.loads((PAYLOADS / name).read_text())
    return data.get("body", data)


def setup_project(client, config: str | None = None, project: str = "1.1795861662") -> dict:
    """POST /setup for a project, as Label Studio does on connecting (no Label Studio here: candidates stay in
    the store)."""
    body = payload("setup.pairwise.json")
    if config:
        body["schema"] = config
    body["project"] = project
    body["hostname"] = body["access_token"] = ""
    response = client.post("/setup", json=body)
    assert response.status_code == 200, response.json
    return response.json


def tasks_created(project: int, tasks: list[tuple[int, dict]]) -> dict:
    """A TASKS_CREATED webhook for these (id, data) tasks."""
    body = payload("webhook-annotation-created.pairwise.json")
    return {
        "action": "TASKS_CREATED",
        "project": copy.deepcopy(body["project"]) | {"id": project},
        "tasks": [{"id": i, "data": d, "project": project} for i, d in tasks],
    }


def annotation_created(
    task_id: int, annotation_id: int, data: dict[str, Any], selected: str = "left", project: int = 1
) -> dict[str, Any]:
    """An ANNOTATION_CREATED webhook as Label Studio sends it for the shipped Pairwise config."""
    body = payload("webhook-annotation-created.pairwise.json")
    body["project"]["label_config"] = (ROOT / "label_config.xml").read_text()
    body["task"] = {"id": task_id, "data": data, "project": project}
    body["annotation"].update(
        id=annotation_id,
        task=task_id,
        result=[{"from_name": "comparison", "to_name": "answer1", "type": "pairwise", "value": {"selected": selected}}],
    )
    return body


def queued_training(client, store, project: int = 1, timeout: float = 15.0) -> list[str]:
    """The ids of the training chain in /status once the store has handed the project's new pairs to it: a
    webhook that crosses RETRAIN_EVERY leaves that to a thread of the backend (within about 0.5 s)."""
    jobs: dict[str, str] = {}

    def queued() -> bool:
        jobs.clear()
        jobs.update(
            (j["id"], j["kind"]) for j in client.get("/status").json["jobs"] if j["kind"] not in ("generate", "refit")
        )
        return store.untrained_pairs(project)[0] == 0 and len(set(jobs.values())) >= 2  # reward and policy

    wait_for(queued, timeout, 0.05, lambda: f"project {project}'s training chain in /status (jobs {jobs})")
    return sorted(jobs)
