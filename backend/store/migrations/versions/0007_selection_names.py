"""SELECTION names the strategy now (workers.ml.choice): what was stored as `informative` (a project's choice,
the selection a pair was labelled under) was the Fisher strategy, and is renamed `fisher`.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("projects", "pairs"):
        op.execute(sa.text(f"UPDATE {table} SET selection = 'fisher' WHERE selection = 'informative'"))


def downgrade() -> None:
    for table in ("projects", "pairs"):
        op.execute(sa.text(f"UPDATE {table} SET selection = 'informative' WHERE selection = 'fisher'"))
