"""Durable training triggers and resync: pairs handed to a queued chain apart from pairs a chain trained on,
a pending "Start Training" request, and when each project was last resynced from Label Studio.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("queued_pair_id", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("train_requested", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("synced_at", sa.DateTime))
    op.execute("UPDATE projects SET queued_pair_id = trained_pair_id")
