"""Schema migrations (Alembic): every process that opens the store brings it to the newest revision first.

A store created before migrations existed (tables, no `alembic_version`) is stamped as the base revision
and upgraded from there, keeping its data. Processes starting together take turns: a file lock beside a
SQLite database, an advisory lock on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from backend.core.locks import file_lock

log = logging.getLogger(__name__)
SCRIPTS = Path(__file__).resolve().parent / "migrations"
BASE_REVISION = "0001"
PG_LOCK_KEY = 0x524C4846  # "RLHF": one advisory lock for this schema's migrations


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The store's revision: None for an empty database, BASE_REVISION for a store from before migrations."""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        if "alembic_version" in tables:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return BASE_REVISION if "projects" in tables else None


def upgrade(engine: Engine) -> None:
    """Bring the store to the newest revision (a no-op when it is there already)."""
    target = head()
    if current(engine) == target:
        return
    with _exclusive(engine) as conn:
        tables = set(inspect(conn).get_table_names())
        config = _config(conn)
        if "projects" in tables and "alembic_version" not in tables:
            log.info("store from before migrations: stamping it as revision %s", BASE_REVISION)
            command.stamp(config, BASE_REVISION)
        command.upgrade(config, "head")
    log.info("store schema at revision %s", target)


@contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    """One migrating process at a time, inside one transaction."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if database:
        with file_lock(f"{database}.migrate.lock"), engine.connect() as conn:
            # SQLite alters a table by copying it; with foreign keys on, dropping the old annotations table
            # would cascade into the pairs. The pragma only takes effect outside a transaction.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
            with conn.begin():
                yield conn
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        yield conn
