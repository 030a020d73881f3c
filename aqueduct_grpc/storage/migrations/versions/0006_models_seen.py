"""When each model was first served: a `created` time that survives restarts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Models without a configured `created` listed their load time, which changed
at every start and differed between replicas.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Creates `models_seen`."""
    op.create_table(
        "models_seen",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drops it."""
    op.drop_table("models_seen")
