"""Lineages and candidate generations: which lineage a project trains, what each generation of a task's
candidates was, and which generation each pair came from.

Projects that existed before lineages shared one registry; they keep sharing it as the lineage "legacy".

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("lineage", sa.String(128)))
    op.execute("UPDATE projects SET lineage = 'legacy'")
    op.create_index("ix_projects_lineage", "projects", ["lineage"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("generation", sa.String(64)))
    with op.batch_alter_table("annotations") as batch:
        batch.add_column(sa.Column("stale", sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("pairs") as batch:
        batch.add_column(sa.Column("generation", sa.String(64)))
    op.create_table(
        "generations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.Integer, nullable=False, index=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("candidates", sa.JSON, nullable=False),
        sa.Column("policy_version", sa.Integer),
        sa.Column("shown_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
