"""Alembic environment: migrations run on the connection `backend.store.migrate.upgrade` hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)  # batch: SQLite cannot ALTER most things in place
with context.begin_transaction():
    context.run_migrations()
