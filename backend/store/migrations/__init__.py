"""Alembic migration scripts (env.py and versions/), run by backend.store.migrate on every open; they import
only alembic and SQLAlchemy."""
