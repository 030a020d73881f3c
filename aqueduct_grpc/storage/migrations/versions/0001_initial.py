"""The schema as it was when migrations began: tokens, usage, teams, policies, secrets.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Databases made before migrations (by `metadata.create_all`, without an
`alembic_version` table) come through here too: tables they already have are
kept with their rows, and only what is missing is added (whole tables, and the
`usage.team_id` / `usage.cost` columns, the only ones ever added to an existing
table before migrations).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Creates the tables that are missing, and the columns `usage` may lack."""
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "tokens" not in present:
        _create_tokens()
    if "usage" not in present:
        _create_usage()
    else:
        _add_late_usage_columns()
    if "teams" not in present:
        _create_teams()
    if "token_policies" not in present:
        _create_token_policies()
    if "gateway_secrets" not in present:
        _create_gateway_secrets()


def downgrade() -> None:
    """Drops every table (and its rows)."""
    for name in ("gateway_secrets", "token_policies", "teams", "usage", "tokens"):
        op.drop_table(name)


def _create_tokens() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("allowed_models", sa.JSON, nullable=True),
    )


def _create_usage() -> None:
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("requested_model", sa.String(200), nullable=True),
        sa.Column("n", sa.Integer, nullable=True),
        sa.Column("size", sa.String(32), nullable=True),
        sa.Column("quality", sa.String(32), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error_reason", sa.String(64), nullable=True),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("total_tokens", sa.Integer, nullable=True),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("safety_identifier", sa.String(256), nullable=True),
        sa.Column("team_id", sa.String(32), nullable=True),
        sa.Column("cost", sa.Float, nullable=True),
    )
    op.create_index("ix_usage_created_at", "usage", ["created_at"])
    op.create_index("ix_usage_token_id", "usage", ["token_id"])


def _add_late_usage_columns() -> None:
    # Added to `usage` after its first release; older databases got them from
    # the column adder that these migrations replace, if they were opened since.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("usage")}
    if "team_id" not in present:
        op.add_column("usage", sa.Column("team_id", sa.String(32), nullable=True))
    if "cost" not in present:
        op.add_column("usage", sa.Column("cost", sa.Float, nullable=True))


def _create_teams() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("limits", sa.JSON, nullable=True),
        sa.Column("budgets", sa.JSON, nullable=True),
    )


def _create_token_policies() -> None:
    op.create_table(
        "token_policies",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=True),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("limits", sa.JSON, nullable=True),
        sa.Column("budgets", sa.JSON, nullable=True),
    )


def _create_gateway_secrets() -> None:
    op.create_table(
        "gateway_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
