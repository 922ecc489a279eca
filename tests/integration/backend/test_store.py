"""The store on real SQLite (WAL) and real PostgreSQL: idempotent annotations, pairs, the retrain counter."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    text,
)

from backend.core.settings import Settings
from backend.labels.preferences import Pair
from backend.store import Store, migrate
from tests.support.services import empty_postgres, postgres_url
from tests.support.settings import TEST_POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Store:
    if request.param == "sqlite":
        yield Store(Settings(data_dir=tmp_path).sqlalchemy_url)
        return
    url = postgres_url()
    store = Store(url)
    yield store
    store.engine.dispose()
    empty_postgres(url)


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    store = Store(Settings(data_dir=tmp_path).sqlalchemy_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_update_replaces_and_delete_removes(store: Store) -> None:
    store.save_project(1)
    store.save_annotation(1, 10, 100, [], [Pair("p", "a", "b"), Pair("p", "a", "c")], skipped=False)
    store.save_annotation(1, 10, 100, [], [Pair("p", "c", "a")], skipped=False)
    assert [(p["chosen"], p["rejected"]) for p in store.pairs("project-1", judged=True)] == [("c", "a")]
    assert store.counts()[1] == {
        "lineage": "project-1",
        "annotations": 1,
        "pairs": 1,
        "new_pairs": 1,
        "stale_annotations": 0,
        "skipped_annotations": 0,
        "pairs_by_selection": {"unrecorded": 1},  # no project SELECTION, none passed
    }
    assert store.delete_annotations([10]) == 1
    assert store.pairs("project-1", judged=True) == [] and store.counts().get(1, {}).get("annotations", 0) == 0


def test_a_repeated_annotation_changes_nothing(store: Store) -> None:
    """Label Studio's re-save, or a resync overlapping a webhook: the same annotation again keeps its pairs' ids
    and adds nothing toward RETRAIN_EVERY; a changed one still replaces them."""
    store.save_project(4)
    result = [{"from_name": "comparison", "to_name": "answer1", "type": "pairwise", "value": {"selected": "left"}}]
    pairs = [Pair("p", "a", "b"), Pair("p", "a", "c")]
    first = store.save_annotation(4, 40, 400, result, pairs, skipped=False, generation="g", annotator=7)
    ids = [p["id"] for p in store.pairs("project-4", judged=True)]
    store.mark_queued("project-4", first[1])  # handed to training: nothing new since
    assert store.save_annotation(4, 40, 400, result, pairs, skipped=False, generation="g", annotator=7)[0] == 0
    assert [p["id"] for p in store.pairs("project-4", judged=True)] == ids
    changed = [{**result[0], "value": {"selected": "right"}}]
    replaced = store.save_annotation(
        4, 40, 400, changed, [Pair("p", "c", "a")], skipped=False, generation="g", annotator=7
    )
    assert [(p["chosen"], p["rejected"]) for p in store.pairs("project-4", judged=True)] == [("c", "a")]
    # the replacement's pair is new to training: its id is never one handed out before (SQLite reused them)
    assert replaced[0] == 1 and store.pairs("project-4", judged=True)[0]["id"] > max(ids)


def test_retrain_counter_is_derived_from_the_store(store: Store) -> None:
    store.save_project(2)
    for i in range(3):
        store.save_annotation(2, 20 + i, 200 + i, [], [Pair(f"p{i}", "a", "b")], skipped=False)
    new, newest = store.untrained_pairs(2)
    assert new == 3 and store.due_lineages(3) == {"project-2": "3 pairs since the last successful training"}
    store.mark_queued("project-2", newest)  # handed to a chain: webhooks stop triggering, but it is still due
    assert store.untrained_pairs(2)[0] == 0 and "project-2" in store.due_lineages(3)
    store.mark_trained("project-2", newest)  # the chain succeeded: no longer due
    assert store.due_lineages(3) == {}
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
    from backend.http.app import create_app
    from tests.support.payloads import payload
    from tests.support.settings import make_settings

    postgres_url()
    settings = make_settings(tmp_path, tiny_model, database_url=TEST_POSTGRES_URL)
    client = create_app(settings).test_client()
    setup = payload("setup.pairwise.json") | {"hostname": "", "access_token": ""}
    assert client.post("/setup", json=setup).status_code == 200
    assert client.post("/webhook", json=payload("webhook-annotation-created.pairwise.json")).json["pairs"] == 1
    assert Store(settings.sqlalchemy_url).counts()[1]["pairs"] == 1


# The tables the first release created with create_all (backend/store.py before migrations), kept verbatim here
# so that the upgrade is tested from what users' stores really hold.
PREVIOUS = MetaData()
Table(
    "projects",
    PREVIOUS,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("label_config", Text),
    Column("ls_url", String(512)),
    Column("ls_token", String(512)),
    Column("algorithm", String(16)),
    Column("trained_pair_id", Integer, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)
Table(
    "tasks",
    PREVIOUS,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("project_id", Integer, nullable=False, index=True),
    Column("data", JSON, nullable=False),
    Column("candidates", JSON),
    Column("policy_version", Integer),
    Column("scores", JSON),
    Column("reward_version", Integer),
    Column("updated_at", DateTime, nullable=False),
)
Table(
    "annotations",
    PREVIOUS,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("project_id", Integer, nullable=False, index=True),
    Column("task_id", Integer, nullable=False, index=True),
    Column("result", JSON, nullable=False),
    Column("skipped", Boolean, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)
Table(
    "pairs",
    PREVIOUS,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("annotation_id", Integer, ForeignKey("annotations.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("project_id", Integer, nullable=False, index=True),
    Column("prompt", Text, nullable=False),
    Column("chosen", Text, nullable=False),
    Column("rejected", Text, nullable=False),
)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_store_from_the_previous_release_is_upgraded_and_keeps_its_data(database: str, tmp_path) -> None:
    url = Settings(data_dir=tmp_path).sqlalchemy_url if database == "sqlite" else postgres_url()
    engine = create_engine(url)
    PREVIOUS.create_all(engine)
    now = datetime(2026, 11, 1)
    with engine.begin() as conn:
        conn.execute(
            PREVIOUS.tables["projects"].insert(),
            [{"id": 1, "label_config": "<View/>", "trained_pair_id": 0, "updated_at": now}],
        )
        conn.execute(
            PREVIOUS.tables["tasks"].insert(),
            [{"id": 5, "project_id": 1, "data": {"prompt": "p"}, "candidates": ["a", "b"], "updated_at": now}],
        )
        conn.execute(
            PREVIOUS.tables["annotations"].insert(),
            [{"id": 9, "project_id": 1, "task_id": 5, "result": [], "skipped": False, "updated_at": now}],
        )
        conn.execute(
            PREVIOUS.tables["pairs"].insert(),
            [{"annotation_id": 9, "project_id": 1, "prompt": "p", "chosen": "a", "rejected": "b"}],
        )
    engine.dispose()
    store = Store(url)
    assert migrate.current(store.engine) == migrate.head() != migrate.BASE_REVISION
    assert store.lineage_of(1) == "legacy"  # projects that shared the one registry keep sharing it
    assert [(p["chosen"], p["rejected"]) for p in store.pairs("legacy", judged=True)] == [("a", "b")]
    assert store.counts()[1] == {
        "lineage": "legacy",
        "annotations": 1,
        "pairs": 1,
        "new_pairs": 1,
        "stale_annotations": 0,
        "skipped_annotations": 0,
        "pairs_by_selection": {"unrecorded": 1},
    }  # labelled before SELECTION existed
    assert store.tasks([5])[5].candidates == ["a", "b"]
    store.save_project(2)  # new projects get their own lineage, and the new columns work
    store.save_annotation(2, 10, 6, [], [Pair("q", "x", "y")], skipped=False, generation="p0-abc")
    assert store.lineage_of(2) == "project-2" and len(store.pairs("project-2", judged=True)) == 1
    Store(url)  # opening it again is a no-op
    store.engine.dispose()
    if database == "postgresql":
        empty_postgres(url)


def test_pooled_projects_share_pairs_and_one_retrain_counter(store: Store) -> None:
    store.save_project(1, lineage="support")
    store.save_project(2, lineage="support")
    store.save_project(3)
    store.save_annotation(1, 1, 10, [], [Pair("p", "a", "b")], skipped=False)
    store.save_annotation(3, 3, 30, [], [Pair("r", "a", "b")], skipped=False)
    assert store.save_annotation(2, 2, 20, [], [Pair("q", "a", "b")], skipped=False)[0] == 2
    assert {p["prompt"] for p in store.pairs("support", judged=True)} == {"p", "q"}
    assert store.lineage_projects("support") == [1, 2]
    store.mark_queued("support", store.untrained_pairs(1)[1])
    assert store.untrained_pairs(2)[0] == 0 and store.untrained_pairs(3)[0] == 1
    store.request_training(3)  # "Start Training" in project 3: its lineage is due however few pairs it has
    assert store.due_lineages(50) == {"project-3": "Start Training pending"}


def _write_log(store: Store, first_id: int, n: int = 600) -> None:
    for i in range(first_id, first_id + n):  # ~8 KB each: ~2 pages per commit
        store.save_annotation(1, i, 1, [{"text": "x" * 8000}], [], skipped=False)


def test_the_backend_store_leaves_checkpoints_to_its_thread(tmp_path) -> None:
    """SQLite copies its write-ahead log back inside whichever commit crosses 1000 pages (~4 MB here); the
    backend's store (checkpoint_in_commits=False) never does, its log grows until `checkpoint` runs, and
    after that the log is written from its start again instead of growing."""
    default, deferred = Store(f"sqlite:///{tmp_path}/a.db"), Store(f"sqlite:///{tmp_path}/b.db", False)
    for store in (default, deferred):
        store.save_project(1)
        _write_log(store, 1)
    wal = {name: (tmp_path / f"{name}.db-wal").stat().st_size for name in ("a", "b")}
    assert wal["a"] < 5e6 < wal["b"]  # 600 commits of ~8 KB: past the mark only where no commit checkpoints
    deferred.checkpoint()  # what the backend's thread does every 0.25 s
    _write_log(deferred, 1001)
    assert (tmp_path / "b.db-wal").stat().st_size < 1.1 * wal["b"]  # 600 more commits reused it: not doubled
    assert deferred.counts()[1]["annotations"] == 1200


def test_the_former_selection_name_is_upgraded_to_the_strategy_it_meant(tmp_path) -> None:
    """A store at revision 0006 recorded SELECTION=informative; from 0007 that strategy is called fisher."""
    from alembic import command

    url = Settings(data_dir=tmp_path).sqlalchemy_url
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0006")
        for project, selection in ((1, "informative"), (2, "random")):
            conn.execute(
                text("INSERT INTO projects (id, selection, trained_pair_id, updated_at) VALUES (:id, :s, 0, :t)"),
                {"id": project, "s": selection, "t": "2026-12-01"},
            )
    engine.dispose()
    store = Store(url)
    assert migrate.current(store.engine) == migrate.head()
    assert (store.selection_of(1, "random"), store.selection_of(2, "fisher")) == ("fisher", "random")
    store.engine.dispose()
