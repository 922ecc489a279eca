"""The state of a model registry on object storage (MODEL_DIR=s3://...): each version's state, content digest
and meta, and which version each lineage serves. A registry on a local disk keeps using CURRENT and meta.json.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    """Registry URL, lineage, kind and version: the key of a version, and of a pointer with the version it names."""
    return [
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("lineage", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "model_versions",
        *_columns(),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("upload", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64)),
        sa.Column("meta", sa.JSON),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("url", "lineage", "kind", "version"),
    )
    op.create_table(
        "model_current",
        *_columns(),
        sa.PrimaryKeyConstraint("url", "lineage", "kind"),
    )


def downgrade() -> None:
    op.drop_table("model_current")
    op.drop_table("model_versions")
