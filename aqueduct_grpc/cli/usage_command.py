"""`aqueduct-grpc usage`: the usage report of a period, as a table, CSV or JSON.

The figures are the admin API's (the same `usage_report`). What is not known
stays unknown in every format: a group none of whose requests has a price
has no cost (JSON null, an empty CSV cell, "-" in the table), not 0; one with
no successful request has no latency percentiles. CSV numbers have fixed
decimals (latency to 0.1 ms, cost to a millionth of a dollar).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time

from aqueduct_grpc.accounting.usage_report import UsageGroup, parse_moment, usage_report
from aqueduct_grpc.cli.store_commands import print_table
from aqueduct_grpc.storage.database import open_engine

__all__ = ["run_usage"]

_LATENCY_DECIMALS = 1
_COST_DECIMALS = 6


async def run_usage(args: argparse.Namespace, database_url: str) -> None:
    """`usage`: the report for a period, as a table, CSV or JSON."""
    now = time.time()
    since = parse_moment(args.since, now)
    until = parse_moment(args.until, now) if args.until else now
    engine = await open_engine(database_url)
    try:
        groups = await usage_report(engine, since=since, until=until, by=args.by)
    finally:
        await engine.dispose()
    if args.format == "json":
        records = [dataclasses.asdict(g) for g in groups]
        print(json.dumps({"by": args.by, "groups": records}, indent=2))
    elif args.format == "csv":
        _print_csv(groups)
    else:
        _print_table(groups, args.by)


def _fixed(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _print_csv(groups: list[UsageGroup]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([f.name for f in dataclasses.fields(UsageGroup)])
    for g in groups:
        writer.writerow(
            [g.key or "", g.name or "", g.requests, g.images, g.failures,
             _fixed(g.p50_latency_ms, _LATENCY_DECIMALS),
             _fixed(g.p95_latency_ms, _LATENCY_DECIMALS),
             _fixed(g.cost_usd, _COST_DECIMALS), g.unpriced_requests]
        )  # fmt: skip


def _print_table(groups: list[UsageGroup], by: str) -> None:
    # Rows without a key: no team, or a request whose model never resolved.
    none = {"team": "(no team)", "model": "(no model)"}.get(by, "(none)")
    rows: list[tuple[str, ...]] = [
        (by.upper(), "NAME", "REQUESTS", "IMAGES", "FAILURES", "P50 MS", "P95 MS", "COST USD")
    ]
    for g in groups:
        cost = "-" if g.cost_usd is None else f"{g.cost_usd:.4f}"
        if g.unpriced_requests:
            cost += f" (+{g.unpriced_requests} unpriced)"
        latency = ["-" if v is None else f"{v:.0f}" for v in (g.p50_latency_ms, g.p95_latency_ms)]
        rows.append(
            (g.key or none, g.name or none, str(g.requests), str(g.images), str(g.failures),
             *latency, cost)
        )  # fmt: skip
    print_table(rows)
