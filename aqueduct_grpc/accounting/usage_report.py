"""Usage reports: the usage rows of a period, grouped by token, team, model or day.

Shared by the `aqueduct-grpc usage` command and the admin API, so both give
the same figures. Percentiles are computed here rather than in SQL so that
SQLite and PostgreSQL agree.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aqueduct_grpc.errors import quoted
from aqueduct_grpc.storage.database import teams_table, tokens_table, usage_table

__all__ = ["GROUPINGS", "UsageGroup", "parse_moment", "usage_report"]

GROUPINGS = ("token", "team", "model", "operation", "day")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# Beyond this a period bound is a typo, and would overflow the int64 fields.
_MAX_LOOKBACK_SECONDS = 1000 * 366 * 86_400


def parse_moment(text: str, now: float) -> float:
    """Unix time for "7d"/"12h" (that long before `now`) or an ISO date/time (UTC if naive).

    Raises ValueError for anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
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
    """The totals of one group of usage rows."""

    key: str  # token id, team id, model name or UTC day ("-" when none)
    name: str  # token or team name; the key otherwise
    requests: int = 0
    images: int = 0
    failures: int = 0
    # Of the successful requests (0 when none succeeded).
    p50_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    cost_usd: float = 0.0
    # Requests whose price is not configured: their cost is not in cost_usd.
    unpriced_requests: int = 0


async def usage_report(
    engine: AsyncEngine, *, since: float, until: float | None, by: str
) -> list[UsageGroup]:
    """Groups of the rows with since <= created_at < until, sorted by key.

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
    groups: dict[str, UsageGroup] = {}
    latencies: dict[str, list[float]] = {}
    for row in rows:
        key = _key(row, by)
        group = groups.get(key)
        if group is None:
            group = groups[key] = UsageGroup(key=key, name=names.get(key, key))
            latencies[key] = []
        group.requests += 1
        group.images += row.images or 0
        group.failures += row.status != "OK"
        if row.cost is None:
            group.unpriced_requests += 1
        else:
            group.cost_usd += row.cost
        if row.status == "OK":
            # Latency of answered requests: refusals (about 0 ms) and failures would skew it.
            latencies[key].append(row.latency_ms)
    for key, group in groups.items():
        ordered = sorted(latencies[key])
        group.p50_latency_ms = _percentile(ordered, 50)
        group.p95_latency_ms = _percentile(ordered, 95)
    return [groups[key] for key in sorted(groups)]


def _key(row: sa.Row, by: str) -> str:  # type: ignore[type-arg]
    if by == "day":
        return datetime.datetime.fromtimestamp(row.created_at, datetime.UTC).strftime("%Y-%m-%d")
    if by == "operation":
        return row.operation or "generate"  # rows older than the column are generations
    value = {"token": row.token_id, "team": row.team_id, "model": row.model}[by]
    return value if value is not None else "-"


async def _names(connection: AsyncConnection, by: str) -> dict[str, str]:
    table = {"token": tokens_table, "team": teams_table}.get(by)
    if table is None:
        return {}
    return {
        row.id: row.name for row in await connection.execute(sa.select(table.c.id, table.c.name))
    }


def _percentile(ordered: list[float], percent: int) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]
