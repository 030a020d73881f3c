"""Usage reports: totals equal the rows, for every grouping, in the CLI's three formats."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import json
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.accounting.usage_report import GROUPINGS, parse_moment, usage_report
from aqueduct_grpc.cli import commands as cli
from aqueduct_grpc.storage.database import open_engine, usage_table

DAY = 86400.0
NOW = datetime.datetime(2026, 11, 20, 12, tzinfo=datetime.UTC).timestamp()

# (days ago, token, team, model, status, images, latency ms, cost)
ROWS = [
    (0, "tok_a", "team_x", "m1", "OK", 2, 100.0, 0.08),
    (0, "tok_a", "team_x", "m1", "OK", 1, 300.0, 0.04),
    (0, "tok_b", "team_x", "m2", "INTERNAL", 0, 50.0, 0.0),
    (1, "tok_b", None, "m2", "OK", 4, 200.0, None),
    (1, "tok_c", None, None, "NOT_FOUND", 0, 1.0, None),
    (2, "tok_c", None, "m1", "RESOURCE_EXHAUSTED", 0, 0.5, 0.0),
    (9, "tok_a", "team_x", "m1", "OK", 1, 999.0, 0.04),  # outside a 7-day report
]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    opened = await open_engine(database_url)
    async with opened.begin() as connection:
        await connection.execute(
            usage_table.insert(),
            [
                {
                    "created_at": NOW - ago * DAY,
                    "token_id": token,
                    "team_id": team,
                    "model": model,
                    "status": status,
                    "images": images,
                    "latency_ms": latency,
                    "cost": cost,
                }
                for ago, token, team, model, status, images, latency, cost in ROWS
            ],
        )
    yield opened
    await opened.dispose()


@pytest.mark.parametrize("by", GROUPINGS)
async def test_totals_equal_the_rows(engine, by):
    groups = await usage_report(engine, since=NOW - 7 * DAY, until=NOW + 1, by=by)
    inside = [r for r in ROWS if r[0] < 7]
    assert sum(g.requests for g in groups) == len(inside)
    assert sum(g.images for g in groups) == sum(r[5] for r in inside)
    assert sum(g.failures for g in groups) == sum(r[4] != "OK" for r in inside)
    assert sum(g.cost_usd or 0 for g in groups) == pytest.approx(sum(r[7] or 0 for r in inside))
    assert sum(g.unpriced_requests for g in groups) == sum(r[7] is None for r in inside)


async def test_groups_and_percentiles(engine):
    by_token = {
        g.key: g for g in await usage_report(engine, since=NOW - 7 * DAY, until=None, by="token")
    }
    assert (by_token["tok_a"].requests, by_token["tok_a"].images) == (2, 3)
    assert by_token["tok_a"].p50_latency_ms == 100.0 and by_token["tok_a"].p95_latency_ms == 300.0
    # Only successful requests count toward latency: tok_b's failure took 50 ms.
    assert by_token["tok_b"].p50_latency_ms == 200.0 and by_token["tok_b"].p95_latency_ms == 200.0
    # Nothing of tok_c's succeeded: no percentile, rather than a latency of 0 ms.
    assert (by_token["tok_c"].p50_latency_ms, by_token["tok_c"].p95_latency_ms) == (None, None)
    by_team = await usage_report(engine, since=0, until=None, by="team")
    # The rows with no team are a group with no key (and no name), last.
    assert [(g.key, g.name, g.requests) for g in by_team] == [
        ("team_x", "team_x", 4),
        (None, None, 3),
    ]


async def test_a_cost_nobody_configured_is_none_not_zero(engine):
    by_model = {
        g.key: g for g in await usage_report(engine, since=NOW - 7 * DAY, until=None, by="model")
    }
    # The unknown model's request has no price: no cost at all.
    assert (by_model[None].cost_usd, by_model[None].unpriced_requests) == (None, 1)
    # A known 0 (a failure costs nothing) is a cost; the unpriced success is counted apart.
    assert (by_model["m2"].cost_usd, by_model["m2"].unpriced_requests) == (0.0, 1)
    assert by_model["m1"].cost_usd == pytest.approx(0.12)
    by_day = await usage_report(engine, since=NOW - 3 * DAY, until=None, by="day")
    assert [(g.key, g.requests) for g in by_day] == [
        ("2026-11-18", 1),
        ("2026-11-19", 2),
        ("2026-11-20", 3),
    ]


def test_period_bounds():
    assert parse_moment("7d", NOW) == NOW - 7 * DAY
    assert parse_moment("12h", NOW) == NOW - 12 * 3600
    assert parse_moment("2026-11-20", NOW) == NOW - 12 * 3600
    with pytest.raises(ValueError, match="not a period bound"):
        parse_moment("last tuesday", NOW)


async def test_cli_formats_agree(engine, database_url, capsys):
    async with engine.begin() as connection:
        # Figures whose float form runs to many decimals (1000/3 ms, 0.1 + 0.2 USD).
        await connection.execute(
            usage_table.insert().values(
                created_at=NOW, token_id="tok_a", model="m3", status="OK", images=1,
                latency_ms=1000 / 3, cost=0.1 + 0.2,
            )
        )  # fmt: skip
        total = await connection.scalar(sa.select(sa.func.count()).select_from(usage_table))
    assert total == len(ROWS) + 1

    def run(*argv: str) -> str:
        cli.main(["usage", "--since", "2026-01-01", *argv, "--database-url", database_url])
        return capsys.readouterr().out

    as_json = json.loads(await asyncio.to_thread(run, "--by", "model", "--format", "json"))
    as_csv = list(
        csv.DictReader(
            io.StringIO(await asyncio.to_thread(run, "--by", "model", "--format", "csv"))
        )
    )
    table = (await asyncio.to_thread(run, "--by", "model")).splitlines()
    # JSON keys and names are real ones: the rows with no model are null, not "-".
    assert [g["key"] for g in as_json["groups"]] == ["m1", "m2", "m3", None]
    assert [r["key"] for r in as_csv] == ["m1", "m2", "m3", ""]
    assert sum(g["requests"] for g in as_json["groups"]) == len(ROWS) + 1
    assert [int(r["requests"]) for r in as_csv] == [g["requests"] for g in as_json["groups"]]
    no_model = as_json["groups"][3]
    assert (no_model["name"], no_model["cost_usd"], no_model["p50_latency_ms"]) == (
        None,
        None,
        None,
    )
    # CSV: fixed decimals (0.1 ms, a millionth of a dollar); an empty cell for none.
    assert [(r["p50_latency_ms"], r["p95_latency_ms"], r["cost_usd"]) for r in as_csv] == [
        ("300.0", "999.0", "0.160000"),
        ("200.0", "200.0", "0.000000"),
        ("333.3", "333.3", "0.300000"),
        ("", "", ""),
    ]
    assert table[0].split()[:3] == ["MODEL", "NAME", "REQUESTS"] and len(table) == 5
    assert table[4].split()[:2] == ["(no", "model)"]
    assert table[4].split()[-4:] == ["-", "-", "(+1", "unpriced)"]  # no percentiles, no cost


async def test_edits_and_generations_apart(engine):
    async with engine.begin() as connection:
        await connection.execute(
            usage_table.insert(),
            [
                {"created_at": NOW, "token_id": "tok_a", "model": "m1", "status": "OK",
                 "images": 3, "latency_ms": 10.0, "operation": "edit"},
                {"created_at": NOW, "token_id": "tok_a", "model": "m1", "status": "OK",
                 "images": 1, "latency_ms": 10.0, "operation": "generate"},
            ],
        )  # fmt: skip
    groups = {
        g.key: g for g in await usage_report(engine, since=NOW - DAY, until=None, by="operation")
    }
    # Rows older than the column (the fixture's, operation NULL) were generations.
    assert groups["edit"].requests == 1 and groups["edit"].images == 3
    assert groups["generate"].requests == 1 + sum(1 for r in ROWS if r[0] <= 1)
