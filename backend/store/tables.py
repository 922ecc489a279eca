"""The store's tables (SQLAlchemy ORM): projects, tasks with their candidates, annotations, preference pairs,
frozen features, every generation of a task's candidates, and the model versions of a registry on object
storage. Migrations (backend.store.migrations) follow them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
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
    selection: Mapped[str | None] = mapped_column(String(16))  # a SELECTION strategy; None: SELECTION
    trained_pair_id: Mapped[int] = mapped_column(Integer, default=0)  # pairs up to this id fed a chain that succeeded
    queued_pair_id: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # ...handed to a queued chain
    train_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # "Start Training"
    synced_at: Mapped[datetime | None] = mapped_column(DateTime)  # last incremental resync from Label Studio
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
    worth: Mapped[float | None] = mapped_column(Float)  # what labelling it teaches the head, by SELECTION
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Annotation(Base):
    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    task_id: Mapped[int] = mapped_column(Integer, index=True)
    result: Mapped[Any] = mapped_column(JSON)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)  # cancelled or empty: no pairs
    stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # refers to unknown candidates
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
    policies: Mapped[list[int] | None] = mapped_column(
        JSON(none_as_null=True)
    )  # per candidate, on a human-judged task: new vs old
    finished: Mapped[list[bool] | None] = mapped_column(JSON(none_as_null=True))  # per candidate; None: unknown
    shown_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # Label Studio's clock, when written
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """One version of a registry on object storage (MODEL_DIR=s3://...): its objects are immutable once `ready`;
    what changes about it (its meta: a forced promotion) changes here, in one transaction. A row is reserved
    (`uploading`) before the first object is written, so a reader never sees a half-uploaded version; numbers
    are never handed out twice (`abandoned` and `pruned` rows stay as tombstones)."""

    __tablename__ = "model_versions"
    __table_args__ = (PrimaryKeyConstraint("url", "lineage", "kind", "version"),)
    url: Mapped[str] = mapped_column(String(512))  # the MODEL_DIR URL
    lineage: Mapped[str] = mapped_column(String(128))  # "" for the shared base (policy v0)
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # uploading | ready | abandoned | pruned
    upload: Mapped[str] = mapped_column(String(32))  # who reserved it: only that upload may mark it ready
    digest: Mapped[str | None] = mapped_column(String(64))  # sha256 of its manifest: the content's name
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    started_at: Mapped[datetime] = mapped_column(DateTime)  # naive UTC, when the upload was reserved


class ModelCurrent(Base):
    """Which version a lineage serves, per kind: one row, replaced in one statement (the object store's CURRENT)."""

    __tablename__ = "model_current"
    __table_args__ = (PrimaryKeyConstraint("url", "lineage", "kind"),)
    url: Mapped[str] = mapped_column(String(512))
    lineage: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
