"""Usage reports: the usage rows of a period, grouped by token, team, model or day.

Shared by the `aqueduct-grpc usage` command and the admin API, so both give
the same figures. Percentiles are computed here rather than in SQL so that
SQLite and PostgreSQL agree.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aqueduct_grpc.durations import parse_duration
from aqueduct_grpc.errors import quoted
from aqueduct_grpc.storage.database import teams_table, tokens_table, usage_table

__all__ = ["GROUPINGS", "UsageGroup", "parse_moment", "usage_report"]

GROUPINGS = ("token", "team", "model", "operation", "day")

# Beyond this a period bound is a typo, and would overflow the int64 fields.
_MAX_LOOKBACK_SECONDS = 1000 * 366 * 86_400


def parse_moment(text: str, now: float) -> float:
    """Unix time for "7d"/"12h" (that long before `now`) or an ISO date/time (UTC if naive).

    Raises ValueError for anything else.
    """
    try:
        # A unit is required: a bare number reads as a year ("2026") as much as seconds.
        seconds: float | None = parse_duration(text, allow_zero=True, unit_required=True)
    except ValueError:
        seconds = None
    if seconds is not None:
        if seconds > _MAX_LOOKBACK_SECONDS:
            raise ValueError(
                f"not a period bound: {quoted(text)} reaches back more than 1000 years"
            )
        return now - seconds
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a period bound: {quoted(text)} (use 7d, 12h, 2026-11-01 or 2026-11-01T12:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


@dataclass
class UsageGroup:
    """The totals of one group of usage rows.

    None is "none" or "not known", never a stand-in value: a report's JSON then
    holds only real names, ids and figures.
    """

    # Token id, team id, model name, operation or UTC day; None for the rows
    # with no team (by team) or no resolved model (by model: unknown models).
    key: str | None
    # The token's or team's name; the key otherwise (None with it).
    name: str | None
    requests: int = 0
    images: int = 0
    failures: int = 0
    # Of the successful requests; None when none succeeded.
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    # Sum of the known costs; None when no request of the group has one (its
    # models have no configured price), rather than a cost of 0 nobody set.
    cost_usd: float | None = None
    # Requests whose price is not configured: their cost is not in cost_usd.
    unpriced_requests: int = 0


async def usage_report(
    engine: AsyncEngine, *, since: float, until: float | None, by: str
) -> list[UsageGroup]:
    """Groups of the rows with since <= created_at < until, sorted by key (no key last).

    Args:
        engine: the database.
        since: Unix time of the period's start.
        until: Unix time of its end, or None for now.
        by: one of GROUPINGS.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUPINGS)}")
    u = usage_table
    query = sa.select(
        u.c.created_at, u.c.token_id, u.c.team_id, u.c.model, u.c.status, u.c.images,
        u.c.latency_ms, u.c.cost, u.c.operation,
    ).where(u.c.created_at >= since)  # fmt: skip
    if until is not None:
        query = query.where(u.c.created_at < until)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
        names = await _names(connection, by)
    groups: dict[str | None, UsageGroup] = {}
    latencies: dict[str | None, list[float]] = {}
    for row in rows:
        key = _key(row, by)
        group = groups.get(key)
        if group is None:
            name = key if key is None else names.get(key, key)
            group = groups[key] = UsageGroup(key=key, name=name)
            latencies[key] = []
        group.requests += 1
        group.images += row.images or 0
        group.failures += row.status != "OK"
        if row.cost is None:
            group.unpriced_requests += 1
        else:
            group.cost_usd = (group.cost_usd or 0.0) + row.cost
        if row.status == "OK":
            # Latency of answered requests: refusals (about 0 ms) and failures would skew it.
            latencies[key].append(row.latency_ms)
    for key, group in groups.items():
        ordered = sorted(latencies[key])
        group.p50_latency_ms = _percentile(ordered, 50)
        group.p95_latency_ms = _percentile(ordered, 95)
    # The group with no key (no team, no model) last.
    return sorted(groups.values(), key=lambda g: (g.key is None, g.key or ""))


def _key(row: sa.Row, by: str) -> str | None:  # type: ignore[type-arg]
    if by == "day":
        return datetime.datetime.fromtimestamp(row.created_at, datetime.UTC).strftime("%Y-%m-%d")
    if by == "operation":
        return row.operation or "generate"  # rows older than the column are generations
    value: str | None = {"token": row.token_id, "team": row.team_id, "model": row.model}[by]
    return value


async def _names(connection: AsyncConnection, by: str) -> dict[str, str]:
    table = {"token": tokens_table, "team": teams_table}.get(by)
    if table is None:
        return {}
    return {
        row.id: row.name for row in await connection.execute(sa.select(table.c.id, table.c.name))
    }


def _percentile(ordered: list[float], percent: int) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]
