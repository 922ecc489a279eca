"""Whether each answer ended or was cut off at MAX_NEW_TOKENS (per candidate of a task and of a generation, per
side of a pair: NULL for what was stored before, read as finished); and pair ids that SQLite never reuses, so
a replaced annotation's new pairs count toward RETRAIN_EVERY (reused ids fell below `queued_pair_id`).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("finished", sa.JSON))
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("finished", sa.JSON))
    sqlite = op.get_context().dialect.name == "sqlite"  # PostgreSQL's sequence never hands an id out twice
    with op.batch_alter_table(
        "pairs", recreate="always" if sqlite else "auto", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.add_column(sa.Column("chosen_finished", sa.Boolean))
        batch.add_column(sa.Column("rejected_finished", sa.Boolean))
