"""Upstream token counts are int64 in the contract: the usage columns hold 64 bits too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

With 32-bit columns PostgreSQL refused a row whose upstream reported more
than 2^31 tokens, and the row was lost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("input_tokens", "output_tokens", "total_tokens")


def upgrade() -> None:
    """Widens the three token columns (SQLite: by copying the table, in batch mode)."""
    # A database adopted from before migrations may lack some of them.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("usage")}
    with op.batch_alter_table("usage") as batch:
        for name in _COLUMNS:
            if name in present:
                batch.alter_column(name, type_=sa.BigInteger, existing_nullable=True)


def downgrade() -> None:
    """Narrows them back (fails on PostgreSQL if a value does not fit)."""
    with op.batch_alter_table("usage") as batch:
        for name in _COLUMNS:
            batch.alter_column(name, type_=sa.Integer, existing_nullable=True)
