"""Who labelled each pair and when, and which policy wrote each candidate of a generation (a human-judged
task pairs two policies' answers), so agreement, exports and human win-rates can be computed.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pairs") as batch:
        batch.add_column(sa.Column("annotator", sa.Integer))
        batch.add_column(sa.Column("created_at", sa.DateTime))
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("policies", sa.JSON))
