"""Hostile input never gets a 5xx: a seeded fuzz over every endpoint, starting from payloads Label Studio
really sent and mutating them the way a fuzzer does (types, depth, 2^63, surrogates, NUL, missing keys)."""

from __future__ import annotations

import json
import random

import pytest

from backend.http.app import create_app
from tests.support.fuzz import mutate, raw_bodies, seeds
from tests.support.payloads import setup_project
from tests.support.services import postgres_url
from tests.support.settings import make_settings


def fuzz(client, rng: random.Random, rounds: int) -> list[tuple[str, int, str]]:
    """Send `rounds` mutated requests; returns the ones answered with a 5xx."""
    errors = []
    bodies = seeds()
    for _ in range(rounds):
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
        url = postgres_url().replace("postgresql+psycopg://", "postgresql://")
    settings = make_settings(tmp_path, tiny_model, database_url=url)
    client = create_app(settings).test_client()
    setup_project(client)
    errors = fuzz(client, random.Random(1234), 2500 if database == "sqlite" else 600)
    assert not errors, f"{len(errors)} requests got a 5xx, e.g. {errors[:5]}"
