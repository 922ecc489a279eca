"""The durable store (SQLAlchemy over SQLite or PostgreSQL): one `Store` over one engine, its queries split by what
they store: tasks and candidates (tasks.py), labels and pairs (labels.py), projects, lineages and trigger state
(lineages.py), what people read (summaries.py), and the state of a model registry on object storage
(versions.py). The tables are in tables.py, the engine in database.py, migrations in migrate.py and migrations/,
the model registry (on a disk or on object storage) in registry/. May import backend.core
only (and the labels domain's Pair, for type hints)."""

from __future__ import annotations

from backend.store.database import make_engine
from backend.store.labels import LabelQueries
from backend.store.summaries import SummaryQueries
from backend.store.tables import (
    Annotation,
    Base,
    Feature,
    Generation,
    PairRow,
    Project,
    Task,
    default_lineage,
)
from backend.store.tasks import TaskQueries
from backend.store.versions import VersionQueries

__all__ = [
    "Annotation",
    "Base",
    "Feature",
    "Generation",
    "PairRow",
    "Project",
    "Store",
    "Task",
    "default_lineage",
    "make_engine",
]


class Store(TaskQueries, LabelQueries, SummaryQueries, VersionQueries):
    """All reads and writes of the backend's durable state, one short transaction each."""
