"""Budget spend and holds in the database, so that every replica checks the same totals.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Before, each process summed the usage table at its start and kept the spend
in memory, so N replicas could together spend N times a budget. The spend of
the current UTC month is carried over from the usage rows already recorded.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Creates `budget_spend` (filled from this month's usage) and `budget_holds`."""
    spend = op.create_table(
        "budget_spend",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("owner", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        sa.Column("spent", sa.Float, nullable=False),
    )
    op.create_table(
        "budget_holds",
        sa.Column("request_key", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_budget_holds_expires_at", "budget_holds", ["expires_at"])
    op.create_index("ix_budget_holds_owner", "budget_holds", ["scope", "owner", "period"])
    op.bulk_insert(spend, _this_months_spend())


def downgrade() -> None:
    """Drops both tables (the spend can be summed from the usage rows again)."""
    op.drop_table("budget_holds")
    op.drop_table("budget_spend")


def _this_months_spend() -> list[dict[str, object]]:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("usage")}
    if not {"created_at", "token_id", "team_id", "cost"} <= present:
        return []  # a database adopted from before costs were recorded: nothing was spent
    now = datetime.datetime.now(datetime.UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    usage = sa.table(
        "usage",
        sa.column("created_at", sa.Float),
        sa.column("token_id", sa.String),
        sa.column("team_id", sa.String),
        sa.column("cost", sa.Float),
    )
    query = sa.select(usage.c.created_at, usage.c.token_id, usage.c.team_id, usage.c.cost).where(
        usage.c.created_at >= month_start, usage.c.cost > 0, usage.c.token_id.is_not(None)
    )
    totals: dict[tuple[str, str, str], float] = {}
    for row in op.get_bind().execute(query):
        moment = datetime.datetime.fromtimestamp(row.created_at, datetime.UTC)
        for scope, owner in (("token", row.token_id), ("team", row.team_id)):
            if owner is None:
                continue
            for period in (moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m")):
                key = (scope, owner, period)
                totals[key] = totals.get(key, 0.0) + row.cost
    return [
        {"scope": scope, "owner": owner, "period": period, "spent": spent}
        for (scope, owner, period), spent in totals.items()
    ]
