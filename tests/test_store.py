"""The store on real SQLite (WAL) and real PostgreSQL: idempotent annotations, pairs, the retrain counter."""
from __future__ import annotations

import pytest
from conftest import TEST_POSTGRES_URL
from sqlalchemy import create_engine, text

from backend.preferences import Pair
from backend.settings import Settings
from backend.store import Base, Store


def postgres_url() -> str:
    url = Settings(database_url=TEST_POSTGRES_URL).sqlalchemy_url
    try:
        with create_engine(url).connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL is not reachable at {TEST_POSTGRES_URL} ({type(exc).__name__}): "
                    "set TEST_POSTGRES_URL to run the store tests on PostgreSQL")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Store:
    if request.param == "sqlite":
        yield Store(Settings(data_dir=tmp_path).sqlalchemy_url)
        return
    url = postgres_url()
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    engine.dispose()
    yield Store(url)
    Base.metadata.drop_all(Store(url).engine)


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    store = Store(Settings(data_dir=tmp_path).sqlalchemy_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_update_replaces_and_delete_removes(store: Store) -> None:
    store.save_annotation(1, 10, 100, [], [Pair("p", "a", "b"), Pair("p", "a", "c")], skipped=False)
    store.save_annotation(1, 10, 100, [], [Pair("p", "c", "a")], skipped=False)
    assert [(p["chosen"], p["rejected"]) for p in store.pairs(1)] == [("c", "a")]
    assert store.counts()[1] == {"annotations": 1, "pairs": 1, "new_pairs": 1}
    assert store.delete_annotations([10]) == 1
    assert store.pairs(1) == [] and store.counts().get(1, {}).get("annotations", 0) == 0


def test_retrain_counter_is_derived_from_the_store(store: Store) -> None:
    for i in range(3):
        store.save_annotation(2, 20 + i, 200 + i, [], [Pair(f"p{i}", "a", "b")], skipped=False)
    new, newest = store.untrained_pairs(2)
    assert new == 3
    store.mark_trained(2, newest)
    assert store.untrained_pairs(2)[0] == 0
    store.save_annotation(2, 30, 300, [], [Pair("q", "a", "b")], skipped=False)
    reopened = Store(store.engine.url.render_as_string(hide_password=False))  # as after a restart
    assert reopened.untrained_pairs(2)[0] == 1


def test_tasks_keep_candidates_and_scores(store: Store) -> None:
    store.save_tasks(3, [(7, {"prompt": "p", "answer1": "", "answer2": ""})])
    store.set_candidates(7, ["x", "y"], 0, {"prompt": "p", "answer1": "x", "answer2": "y"})
    store.set_scores(7, [0.5, -0.5], 1)
    store.save_tasks(3, [(7, {"prompt": "p", "answer1": "x", "answer2": "y"})])
    task = store.tasks([7])[7]
    assert (task.candidates, task.policy_version, task.scores, task.reward_version) == (["x", "y"], 0, [0.5, -0.5], 1)


def test_webhooks_persist_on_postgresql(tmp_path, tiny_model, redis) -> None:
    """The HTTP layer over DATABASE_URL=postgresql://...: what is acknowledged is in PostgreSQL."""
    from conftest import make_settings, payload

    from backend.app import create_app

    postgres_url()
    Base.metadata.drop_all(create_engine(Settings(database_url=TEST_POSTGRES_URL).sqlalchemy_url))
    settings = make_settings(tmp_path, tiny_model, database_url=TEST_POSTGRES_URL)
    client = create_app(settings).test_client()
    setup = payload("setup.pairwise.json") | {"hostname": "", "access_token": ""}
    assert client.post("/setup", json=setup).status_code == 200
    assert client.post("/webhook", json=payload("webhook-annotation-created.pairwise.json")).json["pairs"] == 1
    assert Store(settings.sqlalchemy_url).counts()[1]["pairs"] == 1
    Base.metadata.drop_all(Store(settings.sqlalchemy_url).engine)
