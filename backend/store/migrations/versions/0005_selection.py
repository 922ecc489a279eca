"""Choosing what annotators label: each project's SELECTION and each pair's, every sampled candidate of a
task (Pairwise shows two of K), what labelling a task is worth, and the frozen features the head refits on.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("selection", sa.String(16)))
    with op.batch_alter_table("pairs") as batch:
        batch.add_column(sa.Column("selection", sa.String(16)))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("pool", sa.JSON))
        batch.add_column(sa.Column("worth", sa.Float))
    op.create_table(
        "features",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
