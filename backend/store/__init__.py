"""The durable store (SQLAlchemy): projects, tasks with their candidates, annotations and preference pairs."""
from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, bindparam, case, create_engine,
    delete, event, false, func, insert, select, update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from backend.core.locks import file_lock
from backend.store.migrate import upgrade
from backend.labels.preferences import Pair


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


def default_lineage(project_id: int) -> str:
    """Each project trains its own models unless its connection names a lineage to pool with."""
    return f"project-{project_id}"


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    lineage: Mapped[str | None] = mapped_column(String(128), index=True)  # whose pairs, models and versions it shares
    label_config: Mapped[str | None] = mapped_column(Text)
    ls_url: Mapped[str | None] = mapped_column(String(512))
    ls_token: Mapped[str | None] = mapped_column(String(512))
    algorithm: Mapped[str | None] = mapped_column(String(16))
    selection: Mapped[str | None] = mapped_column(String(16))  # informative | random; None: SELECTION
    trained_pair_id: Mapped[int] = mapped_column(Integer, default=0)  # pairs up to this id fed a chain that succeeded
    queued_pair_id: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # ...handed to a queued chain
    train_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # "Start Training"
    synced_at: Mapped[datetime | None] = mapped_column(DateTime)  # last incremental resync from Label Studio
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    candidates: Mapped[list[str] | None] = mapped_column(JSON)
    policy_version: Mapped[int | None] = mapped_column(Integer)  # None: candidates came with the task
    generation: Mapped[str | None] = mapped_column(String(64))  # the Generation its current candidates are
    scores: Mapped[list[float] | None] = mapped_column(JSON)  # reward of each candidate
    reward_version: Mapped[int | None] = mapped_column(Integer)
    pool: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))  # all K sampled; Pairwise shows two
    finished: Mapped[list[bool] | None] = mapped_column(JSON(none_as_null=True))  # per candidate; None: unknown
    worth: Mapped[float | None] = mapped_column(Float)  # what labelling it teaches the reward head (informative)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class Annotation(Base):
    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    task_id: Mapped[int] = mapped_column(Integer, index=True)
    result: Mapped[Any] = mapped_column(JSON)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)  # cancelled or empty: no pairs
    stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # refers to unknown candidates
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class PairRow(Base):
    __tablename__ = "pairs"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused: the retrain trigger counts ids
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    prompt: Mapped[str] = mapped_column(Text)
    chosen: Mapped[str] = mapped_column(Text)
    rejected: Mapped[str] = mapped_column(Text)
    generation: Mapped[str | None] = mapped_column(String(64))  # the candidates the annotator was shown
    annotator: Mapped[int | None] = mapped_column(Integer)  # Label Studio's completed_by user id
    created_at: Mapped[datetime | None] = mapped_column(DateTime)  # when the annotation was stored
    selection: Mapped[str | None] = mapped_column(String(16))  # the project's SELECTION when it was labelled
    chosen_finished: Mapped[bool | None] = mapped_column(Boolean)  # ended (True) or cut (False); None: unknown
    rejected_finished: Mapped[bool | None] = mapped_column(Boolean)


class Feature(Base):
    """Frozen features of one (prompt, answer) under the reference policy v0 (workers.ml.features), computed
    once: the Bayesian head refits on them after every label."""

    __tablename__ = "features"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # workers.ml.features.feature_key
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian


class Generation(Base):
    """One set of candidates written into a task: kept after it is replaced, so that an annotation made on
    it is learned from the texts the annotator saw."""

    __tablename__ = "generations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, index=True)
    project_id: Mapped[int] = mapped_column(Integer)
    candidates: Mapped[list[str]] = mapped_column(JSON)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    policies: Mapped[list[int] | None] = mapped_column(JSON(none_as_null=True))  # per candidate, on a human-judged task: new vs old
    finished: Mapped[list[bool] | None] = mapped_column(JSON(none_as_null=True))  # per candidate; None: unknown
    shown_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # Label Studio's clock, when written
    created_at: Mapped[datetime] = mapped_column(default=_now)


def _chunks(ids: list[int], size: int = 5000) -> Iterator[list[int]]:
    """IN lists of bounded length (SQLite caps the parameters of one statement)."""
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


# The webhook's statements, built once: building them per call took about half of save_annotation's time.
_DELETE_ANNOTATION = delete(Annotation).where(Annotation.id == bindparam("annotation_id"))
_STORED_ANNOTATION = select(Annotation.project_id, Annotation.task_id, Annotation.result, Annotation.skipped,
                            Annotation.stale).where(Annotation.id == bindparam("annotation_id"))
_STORED_PAIRS = select(PairRow.prompt, PairRow.chosen, PairRow.rejected, PairRow.chosen_finished,
                       PairRow.rejected_finished, PairRow.generation, PairRow.annotator).where(
    PairRow.annotation_id == bindparam("annotation_id")).order_by(PairRow.id)
_INSERT_ANNOTATION = insert(Annotation)
_INSERT_PAIRS = insert(PairRow).values(selection=func.coalesce(
    select(Project.selection).where(Project.id == bindparam("of_project")).scalar_subquery(),
    bindparam("fallback_selection")))
_POOLED = select(func.count(), func.max(PairRow.id)).join(Project, Project.id == PairRow.project_id).where(
    Project.lineage == select(Project.lineage).where(Project.id == bindparam("of_project")).scalar_subquery())
_UNTRAINED = _POOLED.where(PairRow.id > Project.queued_pair_id)  # (new pairs, the newest of them)


def _stored_as(conn: Connection, annotation_id: int, annotation: tuple, pairs: list[tuple]) -> bool:
    """Whether this annotation is stored exactly so, with exactly these pairs, in this order."""
    row = conn.execute(_STORED_ANNOTATION, {"annotation_id": annotation_id}).one_or_none()
    return row is not None and tuple(row) == annotation and \
        [tuple(p) for p in conn.execute(_STORED_PAIRS, {"annotation_id": annotation_id})] == pairs


def make_engine(url: str, checkpoint_in_commits: bool = True) -> Engine:
    """An engine for the URL; SQLite gets WAL, full sync and a busy timeout for concurrent writers. SQLite
    copies its log back into the database inside whichever commit crosses 1000 pages; a process that would
    rather not make one of its commits wait for that (the backend: a webhook) passes False and calls
    `Store.checkpoint` off its request path."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            if not checkpoint_in_commits:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        return engine
    return create_engine(url, pool_recycle=1800)  # no pre-ping: it costs a round-trip per session


class Store:
    """All reads and writes of the backend's durable state, one short transaction each."""

    def __init__(self, url: str, checkpoint_in_commits: bool = True) -> None:
        self.engine = make_engine(url, checkpoint_in_commits)
        upgrade(self.engine)  # Alembic: the schema this code expects, data kept
        # A forked RQ work-horse must not reuse the parent's pooled connections.
        engine = weakref.ref(self.engine)
        os.register_at_fork(after_in_child=lambda: (e := engine()) is not None and e.dispose(close=False))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        database = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        self._write_lock_path = f"{database}.write.lock" if database else None

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """SQLite takes one writer at a time, and a writer that finds it busy sleeps in coarse steps (up to
        100 ms) before retrying: the webhook tail. Writers of this database queue on a file lock instead, and
        the kernel wakes the next one the moment the lock is released. PostgreSQL needs none of this."""
        if self._write_lock_path is None:
            yield
            return
        with file_lock(self._write_lock_path):
            yield

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def _write_session(self) -> Iterator[Session]:
        """A session that writes: it queues behind the other writers (see `_writer`) rather than meeting
        one inside SQLite, whose busy handler would make it, or a webhook, sleep."""
        with self._writer(), self.session() as session:
            yield session

    def checkpoint(self) -> None:
        """Copy SQLite's write-ahead log back into the database as far as readers allow, without waiting for
        anyone (PASSIVE): writers go on appending meanwhile. Nothing to do on other databases."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # projects
    def save_project(self, project_id: int, **fields: Any) -> Project:
        """Create or update a project; None values leave a field as it is."""
        with self._write_session() as s:
            project = s.get(Project, project_id) or Project(id=project_id, trained_pair_id=0, queued_pair_id=0,
                                                            train_requested=False, lineage=default_lineage(project_id))
            for name, value in fields.items():
                if value is not None:
                    setattr(project, name, value)
            s.add(project)
            return project

    def project(self, project_id: int) -> Project | None:
        with self.session() as s:
            return s.get(Project, project_id)

    def project_ids(self) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Project.id).order_by(Project.id)))

    def lineage_of(self, project_id: int) -> str:
        """The lineage a project trains and is served from (its own unless it pools with others)."""
        with self.session() as s:
            return s.scalar(select(Project.lineage).where(Project.id == project_id)) or default_lineage(project_id)

    def lineage_projects(self, lineage: str) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Project.id).where(Project.lineage == lineage).order_by(Project.id)))

    # tasks
    def save_tasks(self, project_id: int, tasks: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Record tasks' data in a few bulk statements (Label Studio sends thousands at once); candidates
        already generated are kept."""
        rows = {task_id: data for task_id, data in tasks}
        now = _now()
        with self._write_session() as s:
            known = {i for chunk in _chunks(list(rows)) for i in s.scalars(select(Task.id).where(Task.id.in_(chunk)))}
            if known:
                s.execute(update(Task), [{"id": i, "project_id": project_id, "data": rows[i], "updated_at": now}
                                         for i in known])
            new = [{"id": i, "project_id": project_id, "data": d, "updated_at": now} for i, d in rows.items()
                   if i not in known]
            if new:
                s.execute(insert(Task), new)

    def tasks(self, task_ids: Iterable[int]) -> dict[int, Task]:
        with self.session() as s:
            return {t.id: t for chunk in _chunks(list(task_ids))
                    for t in s.scalars(select(Task).where(Task.id.in_(chunk)))}

    def project_tasks(self, project_id: int) -> list[Task]:
        with self.session() as s:
            return list(s.scalars(select(Task).where(Task.project_id == project_id).order_by(Task.id)))

    def labeled_task_ids(self, project_id: int) -> set[int]:
        with self.session() as s:
            q = select(Annotation.task_id).where(Annotation.project_id == project_id, Annotation.skipped.is_(False))
            return set(s.scalars(q))

    def set_candidates(self, task_id: int, candidates: list[str], policy_version: int | None,
                       data: dict[str, Any], generation: str | None = None, shown_at: datetime | None = None,
                       policies: list[int] | None = None, pool: list[str] | None = None,
                       finished: list[bool] | None = None) -> None:
        """The task's new candidates, whether each ended or was cut (None: unknown, candidates that came with
        the task), and the generation they form (kept for annotations made on it later); `pool`: every answer
        sampled, when the task shows a chosen few. Their scores and worth are to come. A task deleted
        meanwhile (TASKS_DELETED) stays deleted."""
        with self._write_session() as s:
            task = s.get(Task, task_id)
            if task is None:
                return
            task.candidates, task.finished, task.policy_version, task.data = candidates, finished, policy_version, data
            task.scores = task.reward_version = None
            task.generation, task.pool, task.worth = generation, pool, None
            if generation is not None:
                s.merge(Generation(id=generation, task_id=task_id, project_id=task.project_id, candidates=candidates,
                                   finished=finished, policy_version=policy_version, shown_at=shown_at,
                                   policies=policies))

    def generations(self, task_id: int) -> list[Generation]:
        """Every generation of a task's candidates we wrote, oldest first by when Label Studio showed them."""
        with self.session() as s:
            return list(s.scalars(select(Generation).where(Generation.task_id == task_id)
                                  .order_by(Generation.shown_at, Generation.created_at)))

    def set_worth(self, worth: dict[int, float]) -> None:
        """What labelling each task now teaches the reward head (after a refit), in one bulk statement."""
        if worth:
            with self._write_session() as s:
                known = {i for chunk in _chunks(list(worth)) for i in s.scalars(select(Task.id).where(Task.id.in_(chunk)))}
                if known:
                    s.execute(update(Task), [{"id": i, "worth": worth[i]} for i in known])

    def features(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Cached feature vectors by key (workers.ml.features.feature_key); missing keys are left out."""
        with self.session() as s:
            return {k: v for chunk in _chunks(list(keys))
                    for k, v in s.execute(select(Feature.key, Feature.vector).where(Feature.key.in_(chunk)))}

    def save_features(self, vectors: dict[str, bytes]) -> None:
        """Cache feature vectors; a key stored meanwhile (another job) is kept as it is."""
        with self._write_session() as s:
            known = {k for chunk in _chunks(list(vectors)) for k in s.scalars(select(Feature.key).where(Feature.key.in_(chunk)))}
            new = [{"key": k, "vector": v} for k, v in vectors.items() if k not in known]
            if new:
                s.execute(insert(Feature), new)

    def selection_of(self, project_id: int, default: str) -> str:
        """The project's SELECTION (its connection's extra_params), else the backend's default."""
        with self.session() as s:
            return s.scalar(select(Project.selection).where(Project.id == project_id)) or default

    def set_scores(self, task_id: int, scores: list[float], reward_version: int) -> None:
        with self._write_session() as s:
            task = s.get(Task, task_id)
            if task is not None:
                task.scores, task.reward_version = scores, reward_version

    # annotations and pairs
    def save_annotation(self, project_id: int, annotation_id: int, task_id: int, result: Any,
                        pairs: list[Pair], skipped: bool, generation: str | None = None,
                        stale: bool = False, annotator: int | None = None,
                        selection: str = "informative") -> tuple[int, int]:
        """Replace an annotation and its pairs atomically (an update replaces); a repeat of what is stored (Label
        Studio's re-save, a resync overlapping a webhook) writes nothing, so its pairs keep their ids and add
        nothing toward RETRAIN_EVERY. Each pair records the project's SELECTION (`selection` where the project
        names none). Returns the lineage's untrained pairs as `untrained_pairs` does, counted just after the
        commit: SQLite writers queue on the writer lock, which is then held for the writes alone."""
        stored = (project_id, task_id, result, skipped, stale)
        stored_pairs = [(p.prompt, p.chosen, p.rejected, p.chosen_finished, p.rejected_finished, generation, annotator)
                        for p in pairs]
        with self._writer(), self.engine.begin() as conn:  # statements built once: this is the webhook's hot path
            if not _stored_as(conn, annotation_id, stored, stored_pairs):
                conn.execute(_DELETE_ANNOTATION, {"annotation_id": annotation_id})  # its pairs go too (CASCADE)
                now = _now()
                conn.execute(_INSERT_ANNOTATION, {"id": annotation_id, "project_id": project_id, "task_id": task_id,
                                                  "result": result, "skipped": skipped, "stale": stale,
                                                  "updated_at": now})
                if pairs:
                    conn.execute(_INSERT_PAIRS, [
                        {"annotation_id": annotation_id, "project_id": project_id, "prompt": p.prompt,
                         "chosen": p.chosen, "rejected": p.rejected, "chosen_finished": p.chosen_finished,
                         "rejected_finished": p.rejected_finished, "generation": generation, "annotator": annotator,
                         "created_at": now, "of_project": project_id, "fallback_selection": selection}
                        for p in pairs])
        return self.untrained_pairs(project_id)

    def annotation_results(self, annotation_ids: Iterable[int]) -> dict[int, Any]:
        """The stored result of each of these annotations that is stored."""
        with self.session() as s:
            return {i: r for chunk in _chunks(list(annotation_ids))
                    for i, r in s.execute(select(Annotation.id, Annotation.result).where(Annotation.id.in_(chunk)))}

    def delete_annotations(self, annotation_ids: Iterable[int]) -> int:
        ids = list(annotation_ids)
        with self._write_session() as s:
            s.execute(delete(PairRow).where(PairRow.annotation_id.in_(ids)))
            return s.execute(delete(Annotation).where(Annotation.id.in_(ids))).rowcount

    def delete_tasks(self, task_ids: Iterable[int]) -> dict[str, int]:
        """Forget deleted tasks with their annotations and pairs (Label Studio deletes those with the task)."""
        ids = list(task_ids)
        with self._write_session() as s:
            annotations = select(Annotation.id).where(Annotation.task_id.in_(ids))
            s.execute(delete(PairRow).where(PairRow.annotation_id.in_(annotations)))
            return {"deleted_annotations": s.execute(delete(Annotation).where(Annotation.task_id.in_(ids))).rowcount,
                    "deleted_tasks": s.execute(delete(Task).where(Task.id.in_(ids))).rowcount}

    def delete_project(self, project_id: int) -> dict[str, int]:
        """Forget a deleted project entirely: its settings, tasks, annotations and pairs."""
        with self._write_session() as s:
            s.execute(delete(PairRow).where(PairRow.project_id == project_id))
            counts = {
                "deleted_annotations": s.execute(delete(Annotation).where(Annotation.project_id == project_id)).rowcount,
                "deleted_tasks": s.execute(delete(Task).where(Task.project_id == project_id)).rowcount,
            }
            s.execute(delete(Project).where(Project.id == project_id))
            return counts

    def clear_project(self, project_id: int) -> None:
        """Drop a project's annotations and pairs (before a resync from Label Studio)."""
        with self._write_session() as s:
            s.execute(delete(PairRow).where(PairRow.project_id == project_id))
            s.execute(delete(Annotation).where(Annotation.project_id == project_id))

    def pairs(self, lineage: str, *, judged: bool) -> list[dict[str, Any]]:
        """Every pair of the lineage's projects, oldest first, with whether each side ended; judged=False
        leaves out the labels of human-judged tasks (new policy against old), which judge the policy and stay
        out of its training unless HUMAN_JUDGE_TRAIN: every caller decides."""
        with self.session() as s:
            query = (select(PairRow.id, PairRow.prompt, PairRow.chosen, PairRow.rejected, PairRow.chosen_finished,
                            PairRow.rejected_finished, PairRow.project_id)
                     .join(Project, Project.id == PairRow.project_id).where(Project.lineage == lineage))
            if not judged:
                query = (query.outerjoin(Generation, Generation.id == PairRow.generation)
                         .where(Generation.policies.is_(None)))
            return [dict(r._mapping) for r in s.execute(query.order_by(PairRow.id))]

    def export_pairs(self, project_id: int) -> list[dict[str, Any]]:
        """Every pair of one project, oldest first, with its task, annotator, time and the policy that wrote
        the candidates compared (the generation's, else the task's while it still shows them): what a team's
        own training stack needs to filter and weigh labels. One query with outer joins: no pair goes missing."""
        shown = PairRow.generation.is_(None) | (PairRow.generation == Task.generation)
        policy = case((Generation.id.is_not(None), Generation.policy_version), (shown, Task.policy_version))
        with self.session() as s:
            rows = s.execute(select(PairRow.id, Annotation.task_id, PairRow.prompt, PairRow.chosen, PairRow.rejected,
                                    PairRow.chosen_finished, PairRow.rejected_finished, PairRow.annotator,
                                    PairRow.selection, PairRow.generation,
                                    policy.label("policy_version"),
                                    PairRow.created_at, PairRow.project_id, Project.lineage)
                             .outerjoin(Annotation, Annotation.id == PairRow.annotation_id)
                             .outerjoin(Task, Task.id == Annotation.task_id)
                             .outerjoin(Generation, Generation.id == PairRow.generation)
                             .outerjoin(Project, Project.id == PairRow.project_id)
                             .where(PairRow.project_id == project_id).order_by(PairRow.id))
            return [{**r._mapping, "lineage": r.lineage or default_lineage(project_id)} for r in rows]

    def overlapping_labels(self, lineage: str) -> list[tuple[int, str | None, int, str, str]]:
        """(task, generation, annotator, chosen, rejected) of the lineage's tasks that two or more annotators
        labelled: what inter-annotator agreement is computed from."""
        with self.session() as s:
            shared = (select(Annotation.task_id).join(PairRow, PairRow.annotation_id == Annotation.id)
                      .join(Project, Project.id == Annotation.project_id)
                      .where(Project.lineage == lineage, PairRow.annotator.is_not(None))
                      .group_by(Annotation.task_id).having(func.count(func.distinct(PairRow.annotator)) > 1))
            rows = s.execute(select(Annotation.task_id, PairRow.generation, PairRow.annotator, PairRow.chosen,
                                    PairRow.rejected).join(PairRow, PairRow.annotation_id == Annotation.id)
                             .where(Annotation.task_id.in_(shared)))
            return [tuple(r) for r in rows]

    def judged_labels(self, lineage: str) -> list[tuple[list[int], list[str], str]]:
        """(policy of each candidate, the candidates, the chosen answer) of each label on a human-judged task."""
        with self.session() as s:
            rows = s.execute(select(Generation.policies, Generation.candidates, PairRow.chosen)
                             .join(PairRow, PairRow.generation == Generation.id)
                             .join(Project, Project.id == PairRow.project_id)
                             .where(Project.lineage == lineage, Generation.policies.is_not(None)))
            return [tuple(r) for r in rows]

    def counts(self) -> dict[int, dict[str, Any]]:
        """Per project: its lineage, annotations that gave pairs, pairs (also per SELECTION they were labelled
        under), pairs not yet fed to a training, annotations refused because they referred to candidates no
        longer known, and cancelled or empty ones."""
        with self.session() as s:
            per_project = select(Annotation.project_id, func.count()).group_by(Annotation.project_id)
            anns = dict(s.execute(per_project.where(Annotation.skipped.is_(False), Annotation.stale.is_(False))).all())
            stale = dict(s.execute(per_project.where(Annotation.stale.is_(True))).all())
            skipped = dict(s.execute(per_project.where(Annotation.skipped.is_(True))).all())
            pairs = dict(s.execute(select(PairRow.project_id, func.count()).group_by(PairRow.project_id)).all())
            new = dict(s.execute(select(PairRow.project_id, func.count()).join(Project, Project.id == PairRow.project_id)
                                 .where(PairRow.id > Project.trained_pair_id).group_by(PairRow.project_id)).all())
            lineages = dict(s.execute(select(Project.id, Project.lineage)).all())
            by_selection: dict[int, dict[str, int]] = {}
            for pid, chosen_by, n in s.execute(select(PairRow.project_id, PairRow.selection, func.count())
                                               .group_by(PairRow.project_id, PairRow.selection)):
                by_selection.setdefault(pid, {})[chosen_by or "unrecorded"] = n
        ids = sorted(set(anns) | set(pairs) | set(lineages) | set(stale))
        return {pid: {"lineage": lineages.get(pid) or default_lineage(pid), "annotations": anns.get(pid, 0),
                      "pairs": pairs.get(pid, 0), "new_pairs": new.get(pid, 0), "stale_annotations": stale.get(pid, 0),
                      "skipped_annotations": skipped.get(pid, 0), "pairs_by_selection": by_selection.get(pid, {})}
                for pid in ids}

    def answer_endings(self) -> dict[int, dict[str, Any]]:
        """Per project, how the candidates its tasks show ended: per policy version that wrote them, answers
        that finished and that were cut at MAX_NEW_TOKENS, with the finished share; and answers whose ending
        is not recorded (written before it was, or came with the task), read as finished until regenerated."""
        with self.session() as s:
            rows = s.execute(select(Task.project_id, Task.policy_version, Task.candidates, Task.finished)
                             .where(Task.candidates.is_not(None))).all()
        found: dict[int, dict[str, Any]] = {}
        for project_id, version, candidates, finished in rows:
            mine = found.setdefault(project_id, {"by_policy": {}, "unknown": 0})
            if not finished:
                mine["unknown"] += len(candidates)
                continue
            tally = mine["by_policy"].setdefault(f"v{version}", {"finished": 0, "cut": 0})
            tally["finished"] += sum(1 for f in finished if f)
            tally["cut"] += sum(1 for f in finished if not f)
        for mine in found.values():
            for tally in mine["by_policy"].values():
                tally["finished_share"] = round(tally["finished"] / (tally["finished"] + tally["cut"]), 4)
        return found

    def untrained_pairs(self, project_id: int) -> tuple[int, int]:
        """(pairs of the project's lineage not yet handed to a queued chain, newest pair id): the webhook's
        retrain trigger, derived from the store so that it survives restarts."""
        with self.engine.connect() as conn:  # two Core reads: no ORM session needed (the webhook calls it)
            new, newest = conn.execute(_UNTRAINED, {"of_project": project_id}).one()
            return new, newest or conn.execute(_POOLED, {"of_project": project_id}).one()[1] or 0

    def mark_queued(self, lineage: str, upto_pair_id: int) -> None:
        """The lineage's pairs up to this id are in a queued chain: webhooks stop re-triggering for them."""
        with self._write_session() as s:
            s.execute(update(Project).where(Project.lineage == lineage).values(queued_pair_id=upto_pair_id))

    def mark_trained(self, lineage: str, upto_pair_id: int) -> None:
        """A chain trained on the lineage's pairs up to this id and succeeded: its trigger is cleared."""
        with self._write_session() as s:
            s.execute(update(Project).where(Project.lineage == lineage).values(trained_pair_id=upto_pair_id,
                                                                               train_requested=False))

    def request_training(self, project_id: int) -> None:
        """"Start Training" was pressed: due until a chain of the lineage succeeds, whatever happens meanwhile."""
        with self._write_session() as s:
            lineage = s.scalar(select(Project.lineage).where(Project.id == project_id))
            s.execute(update(Project).where(Project.lineage == lineage).values(train_requested=True))

    def due_lineages(self, retrain_every: int) -> dict[str, str]:
        """Lineages that must train (durable state): lineage -> why. Due when RETRAIN_EVERY pairs arrived since
        the last successful chain, or "Start Training" is pending, and it has pairs at all."""
        with self.session() as s:
            rows = s.execute(select(Project.lineage, func.count(PairRow.id),
                                    func.sum(case((PairRow.id > Project.trained_pair_id, 1), else_=0)),
                                    func.max(case((Project.train_requested, 1), else_=0)))
                             .join(PairRow, PairRow.project_id == Project.id).group_by(Project.lineage)).all()
        due = {}
        for lineage, pairs, new, requested in rows:
            if requested and pairs:
                due[lineage] = "Start Training pending"
            elif (new or 0) >= retrain_every:
                due[lineage] = f"{new} pairs since the last successful training"
        return due

    def tasks_without_candidates(self) -> dict[int, list[int]]:
        """Per project, the tasks still waiting for candidates (a generation that was never queued or failed)."""
        with self.session() as s:
            rows = s.execute(select(Task.project_id, Task.id).where(Task.candidates.is_(None))).all()
        found: dict[int, list[int]] = {}
        for project_id, task_id in rows:
            found.setdefault(project_id, []).append(task_id)
        return found
