"""Which Images API call a usage row is for: a generation or an edit.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Rows written before it are generations (the only call there was); they keep NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds `usage.operation`."""
    op.add_column("usage", sa.Column("operation", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drops it."""
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("operation")
