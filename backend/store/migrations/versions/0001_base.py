"""The schema of the first release (before migrations): projects, tasks, annotations, pairs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("label_config", sa.Text),
        sa.Column("ls_url", sa.String(512)),
        sa.Column("ls_token", sa.String(512)),
        sa.Column("algorithm", sa.String(16)),
        sa.Column("trained_pair_id", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("project_id", sa.Integer, nullable=False, index=True),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("candidates", sa.JSON),
        sa.Column("policy_version", sa.Integer),
        sa.Column("scores", sa.JSON),
        sa.Column("reward_version", sa.Integer),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("project_id", sa.Integer, nullable=False, index=True),
        sa.Column("task_id", sa.Integer, nullable=False, index=True),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("skipped", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "pairs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "annotation_id", sa.Integer, sa.ForeignKey("annotations.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("project_id", sa.Integer, nullable=False, index=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("chosen", sa.Text, nullable=False),
        sa.Column("rejected", sa.Text, nullable=False),
    )
