"""Hostile input never gets a 5xx: a seeded fuzz over every endpoint, starting from payloads Label Studio
really sent and mutating them the way a fuzzer does (types, depth, 2^63, surrogates, NUL, missing keys)."""
from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from conftest import ROOT, make_settings, payload, setup_project

from backend.http.app import create_app

HOSTILE: list[Any] = [None, True, False, 0, -1, 2**63, -(2**63) - 1, 10**40, 1.5, "", "x", "\ud800", "a\x00b", [], {},
                      [[[]]], {"id": "1"}, "1.1", "-5", "9" * 30, ["\udfff"], {"\ud800": 1}, {"id": 2**64}]


def seeds() -> list[tuple[str, dict[str, Any]]]:
    """The endpoints and the real bodies the fuzz starts from."""
    config = (ROOT / "label_config.xml").read_text()
    bodies = [("/setup", payload("setup.pairwise.json") | {"hostname": "", "access_token": ""}),
              ("/predict", payload("predict.pairwise.json") | {"label_config": config})]
    for name in ("webhook-annotation-created.pairwise.json", "webhook-annotation-updated.pairwise.json",
                 "webhook-annotations-deleted.pairwise.json", "webhook-start-training.pairwise.json",
                 "webhook-annotations-created.ranker.json", "webhook-annotation-created.ranker.json"):
        bodies.append(("/webhook", payload(name)))
    bodies.append(("/webhook", {"action": "TASKS_CREATED", "project": {"id": 1, "label_config": config},
                                "tasks": [{"id": 3, "data": {"prompt": "p", "answer1": "", "answer2": ""}}]}))
    bodies.append(("/webhook", {"action": "TASKS_DELETED", "project": {"id": 1}, "tasks": [{"id": 3}]}))
    bodies.append(("/webhook", {"action": "PROJECT_DELETED", "project": {"id": 9}}))
    return bodies


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a document a value can be put."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += paths(child, prefix + (i,))
    return found


def mutate(body: dict[str, Any], rng: random.Random) -> Any:
    body = copy.deepcopy(body)
    where = rng.choice(paths(body)[1:] or [()])
    parent = body
    for step in where[:-1]:
        parent = parent[step]
    choice = rng.random()
    if not where:
        return rng.choice(HOSTILE)
    if choice < 0.15 and isinstance(parent, dict):
        parent.pop(where[-1], None)
    elif choice < 0.2:
        nested: Any = "deep"
        for _ in range(rng.choice([70, 150])):  # deeper ones go in raw_bodies (json.dumps recurses)
            nested = [nested]
        parent[where[-1]] = nested
    else:
        parent[where[-1]] = copy.deepcopy(rng.choice(HOSTILE))
    return body


def raw_bodies() -> list[bytes]:
    return [b"", b"{", b"[]", b"null", b'"x"', b"{" * 10000 + b"}" * 10000, b"[" * 10000 + b"]" * 10000,
            b'{"action": NaN}', b'{"action": "ANNOTATION_CREATED", "annotation": {"id": Infinity}}', b"\xff\xfe",
            json.dumps({"tasks": [{"id": 1, "data": {"prompt": "\ud800"}}]}).encode()]


def fuzz(client, rng: random.Random, rounds: int) -> list[tuple[str, int, str]]:
    """Send `rounds` mutated requests; returns the ones answered with a 5xx."""
    errors = []
    bodies = seeds()
    for i in range(rounds):
        path, body = rng.choice(bodies)
        mutated = mutate(body, rng)
        for _ in range(rng.choice([0, 0, 1, 2])):
            mutated = mutate(mutated, rng) if isinstance(mutated, dict) else mutated
        data = json.dumps(mutated)
        response = client.post(path, data=data, content_type="application/json")
        if response.status_code >= 500:
            errors.append((path, response.status_code, data[:300]))
        else:
            assert response.is_json, (path, response.status_code)
    for raw in raw_bodies():
        for path in ("/setup", "/predict", "/webhook"):
            response = client.post(path, data=raw, content_type="application/json")
            if response.status_code >= 500:
                errors.append((path, response.status_code, raw[:100].decode(errors="replace")))
    return errors


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_no_5xx_on_hostile_input(database: str, tmp_path, tiny_model, redis) -> None:
    url = ""
    if database == "postgresql":
        from test_store import postgres_url

        url = postgres_url().replace("postgresql+psycopg://", "postgresql://")
    settings = make_settings(tmp_path, tiny_model, database_url=url)
    client = create_app(settings).test_client()
    setup_project(client)
    errors = fuzz(client, random.Random(1234), 2500 if database == "sqlite" else 600)
    assert not errors, f"{len(errors)} requests got a 5xx, e.g. {errors[:5]}"
