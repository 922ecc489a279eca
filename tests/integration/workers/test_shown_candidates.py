"""A label belongs to the text the annotator saw: candidates regenerated while a task was open are not
credited with a choice made on the old ones."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

from backend.labels.preferences import parse_layout
from backend.store import Store
from tests.support.payloads import payload, setup_project
from tests.support.settings import ROOT

T0 = datetime(2026, 11, 29, 10, 0, 0)
PAIRWISE = parse_layout((ROOT / "label_config.xml").read_text())
RANKER_CONFIG = (ROOT / "label_config_ranker.xml").read_text()
RANKER = parse_layout(RANKER_CONFIG)


def iso(t: datetime) -> str:
    return t.isoformat() + "Z"


def regenerate(store: Store, layout, task_id: int, texts: list[str], generation: str, shown_at: datetime) -> dict:
    """What the generation job does: new candidates written into the task, the generation recorded."""
    data = {"prompt": "Which is better?", **layout.candidates_to_data(texts, generation)}
    store.set_candidates(task_id, texts, 0, data, generation, shown_at)
    return data


def pairwise_annotation(task_id: int, data: dict, selected: str, created: datetime, lead_time: float) -> dict:
    body = payload("webhook-annotation-created.pairwise.json")
    body["project"]["label_config"] = (ROOT / "label_config.xml").read_text()
    body["task"] = {"id": task_id, "data": data, "project": 1}
    body["annotation"].update(
        id=1000 + task_id,
        task=task_id,
        created_at=iso(created),
        lead_time=lead_time,
        result=[{"from_name": "comparison", "to_name": "answer1", "type": "pairwise", "value": {"selected": selected}}],
    )
    return body


def test_pairwise_choice_made_before_a_regeneration_is_learned_from_the_old_answers(client, settings) -> None:
    setup_project(client)
    store = Store(settings.sqlalchemy_url)
    store.save_tasks(1, [(5, {"prompt": "Which is better?", "answer1": "", "answer2": ""})])
    regenerate(store, PAIRWISE, 5, ["old left", "old right"], "p0-aaaa", T0)
    now = regenerate(store, PAIRWISE, 5, ["new left", "new right"], "p1-bbbb", T0 + timedelta(minutes=10))
    # opened at +9 min (before the regeneration), submitted at +11 min: the webhook carries the new answers
    late = pairwise_annotation(5, now, "left", T0 + timedelta(minutes=11), lead_time=120)
    assert client.post("/webhook", json=late).json["pairs"] == 1
    [pair] = store.pairs("project-1", judged=True)
    assert (pair["chosen"], pair["rejected"]) == ("old left", "old right")
    # opened after the regeneration: the new answers
    fresh = pairwise_annotation(5, now, "right", T0 + timedelta(minutes=12), lead_time=30)
    client.post("/webhook", json=fresh)
    [pair] = store.pairs("project-1", judged=True)
    assert (pair["chosen"], pair["rejected"]) == ("new right", "new left")


def test_ranker_ids_name_the_generation_that_was_ranked(client, settings) -> None:
    setup_project(client, RANKER_CONFIG, project="2.1")
    store = Store(settings.sqlalchemy_url)
    store.save_tasks(2, [(7, {"prompt": "Which is better?", "items": []})])
    old = regenerate(store, RANKER, 7, ["a0", "a1", "a2"], "p0-cccc", T0)
    now = regenerate(store, RANKER, 7, ["b0", "b1", "b2"], "p1-dddd", T0 + timedelta(minutes=1))
    assert [i["id"] for i in now["items"]] == ["p1-dddd-0", "p1-dddd-1", "p1-dddd-2"]
    body = payload("webhook-annotation-created.ranker.json")
    body["project"]["label_config"] = RANKER_CONFIG
    body["task"] = {"id": 7, "data": now, "project": 2}
    ranked = [i["id"] for i in old["items"]][::-1]  # a2 > a1 > a0, ranked on the old items
    body["annotation"].update(
        id=77,
        task=7,
        project=2,
        result=[{"from_name": "rank", "to_name": "answers", "type": "ranker", "value": {"ranker": {"rank": ranked}}}],
    )
    assert client.post("/webhook", json=body).json["pairs"] == 3
    assert {(p["chosen"], p["rejected"]) for p in store.pairs("project-2", judged=True)} == {
        ("a2", "a1"),
        ("a2", "a0"),
        ("a1", "a0"),
    }


def test_a_choice_on_candidates_no_longer_known_is_counted_not_learned(client, settings) -> None:
    setup_project(client, RANKER_CONFIG, project="2.1")
    store = Store(settings.sqlalchemy_url)
    store.save_tasks(2, [(8, {"prompt": "Which is better?", "items": []})])
    now = regenerate(store, RANKER, 8, ["b0", "b1"], "p1-eeee", T0)
    body = payload("webhook-annotation-created.ranker.json")
    body["project"]["label_config"] = RANKER_CONFIG
    body["task"] = {"id": 8, "data": now, "project": 2}
    body["annotation"].update(
        id=88,
        task=8,
        project=2,
        result=[
            {
                "from_name": "rank",
                "to_name": "answers",
                "type": "ranker",
                "value": {"ranker": {"rank": ["p0-gone-1", "p0-gone-0"]}},
            }
        ],
    )
    answer = client.post("/webhook", json=body)
    assert answer.status_code == 200 and answer.json["pairs"] == 0
    assert store.pairs("project-2", judged=True) == []
    assert client.get("/status").json["projects"]["2"]["stale_annotations"] == 1
    fixed = copy.deepcopy(body)  # the annotator re-ranks what is shown now: learned, no longer stale
    fixed["annotation"]["result"][0]["value"]["ranker"]["rank"] = ["p1-eeee-1", "p1-eeee-0"]
    assert client.post("/webhook", json=fixed).json["pairs"] == 1
    assert client.get("/status").json["projects"]["2"]["stale_annotations"] == 0
