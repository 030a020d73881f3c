"""Each usage row carries its request's unique key, so crash recovery writes it exactly once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Rows written before this revision have no key (NULL; a unique index allows
any number of NULLs on SQLite and PostgreSQL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds `usage.request_key` with a unique index."""
    op.add_column("usage", sa.Column("request_key", sa.String(32), nullable=True))
    op.create_index("ix_usage_request_key", "usage", ["request_key"], unique=True)


def downgrade() -> None:
    """Drops the key and its index."""
    op.drop_index("ix_usage_request_key", "usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("request_key")
