"""The request's id on its usage row: the `x-request-id` its caller saw.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Rows written before it have none (NULL). Not unique: a caller may reuse its ids.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds `usage.request_id`, indexed (support looks a request up by it)."""
    op.add_column("usage", sa.Column("request_id", sa.String(128), nullable=True))
    op.create_index("ix_usage_request_id", "usage", ["request_id"])


def downgrade() -> None:
    """Drops it."""
    op.drop_index("ix_usage_request_id", table_name="usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("request_id")
