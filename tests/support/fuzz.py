"""Hostile input for the endpoints: the bodies Label Studio really sent (the fuzz's seeds) and mutations of them
the way a fuzzer makes them (types, depth, 2^63, surrogates, NUL, missing keys), plus raw bodies no JSON parser
should choke on. tests/integration/backend/test_fuzz.py sends them through the Flask app, bench/faults.py over HTTP."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from tests.support.payloads import payload
from tests.support.settings import ROOT

HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**63) - 1,
    10**40,
    1.5,
    "",
    "x",
    "\ud800",
    "a\x00b",
    [],
    {},
    [[[]]],
    {"id": "1"},
    "1.1",
    "-5",
    "9" * 30,
    ["\udfff"],
    {"\ud800": 1},
    {"id": 2**64},
]


def seeds() -> list[tuple[str, dict[str, Any]]]:
    """The endpoints and the real bodies the fuzz starts from."""
    config = (ROOT / "label_config.xml").read_text()
    bodies = [
        ("/setup", payload("setup.pairwise.json") | {"hostname": "", "access_token": ""}),
        ("/predict", payload("predict.pairwise.json") | {"label_config": config}),
    ]
    for name in (
        "webhook-annotation-created.pairwise.json",
        "webhook-annotation-updated.pairwise.json",
        "webhook-annotations-deleted.pairwise.json",
        "webhook-start-training.pairwise.json",
        "webhook-annotations-created.ranker.json",
        "webhook-annotation-created.ranker.json",
    ):
        bodies.append(("/webhook", payload(name)))
    bodies.append(
        (
            "/webhook",
            {
                "action": "TASKS_CREATED",
                "project": {"id": 1, "label_config": config},
                "tasks": [{"id": 3, "data": {"prompt": "p", "answer1": "", "answer2": ""}}],
            },
        )
    )
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
    """A copy of body with one place dropped, nested 70-150 deep, or replaced by a HOSTILE value."""
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
    """Bodies that are not (sane) JSON: empty, truncated, 10,000 levels deep, NaN, Infinity, bad UTF-8."""
    return [
        b"",
        b"{",
        b"[]",
        b"null",
        b'"x"',
        b"{" * 10000 + b"}" * 10000,
        b"[" * 10000 + b"]" * 10000,
        b'{"action": NaN}',
        b'{"action": "ANNOTATION_CREATED", "annotation": {"id": Infinity}}',
        b"\xff\xfe",
        json.dumps({"tasks": [{"id": 1, "data": {"prompt": "\ud800"}}]}).encode(),
    ]
