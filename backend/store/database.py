"""One engine and its sessions: SQLite with WAL and writers queued on a file lock, or PostgreSQL; the schema is
brought to the newest migration on open. The query classes (tasks, labels, lineages) share it."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.core.defaults import SQLITE_BUSY_TIMEOUT
from backend.core.locks import file_lock
from backend.store.migrate import upgrade


def chunks(ids: list[int], size: int = 5000) -> Iterator[list[int]]:
    """IN lists of bounded length (SQLite caps the parameters of one statement)."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def make_engine(url: str, checkpoint_in_commits: bool = True) -> Engine:
    """An engine for the URL; SQLite gets WAL, full sync and a busy timeout for concurrent writers. SQLite
    copies its log back into the database inside whichever commit crosses 1000 pages; a process that would
    rather not make one of its commits wait for that (the backend: a webhook) passes False and calls
    `Store.checkpoint` off its request path."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

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


class Database:
    """The engine, its sessions and the writer queue every query class writes through."""

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
