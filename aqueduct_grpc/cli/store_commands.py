"""The commands on the stores: `tokens`, `teams`, `usage` and `db`, run against the database.

They use the same stores and report code as the admin API, so both give the
same results.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import sys
import time
from collections.abc import Sequence

from aqueduct_grpc.accounting.policy import Budgets, Limits, TokenPolicy, removed_by
from aqueduct_grpc.accounting.policy_store import PolicyStore, check_policy
from aqueduct_grpc.accounting.usage_report import UsageGroup, parse_moment, usage_report
from aqueduct_grpc.auth.tokens import TokenNotFound, TokenStore
from aqueduct_grpc.storage.database import new_engine, open_engine
from aqueduct_grpc.storage.schema import current_revision, head_revision, upgrade

__all__ = ["run_db", "run_teams", "run_tokens", "run_usage"]


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})


def _budgets(args: argparse.Namespace) -> Budgets:
    return Budgets(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Budgets)})


async def run_tokens(args: argparse.Namespace, database_url: str) -> None:
    """`tokens create|list|revoke|set-policy`."""
    engine = await open_engine(database_url)
    try:
        store = TokenStore(engine)
        policies = PolicyStore(engine)
        if args.tokens_command == "create":
            models = (
                [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
            )
            policy = await _token_policy(args, policies)
            # Checked before the token exists: a refused policy leaves no token behind.
            check_policy(policy.limits, policy.budgets)
            token, secret = await store.create(args.name, expires_in=args.expires_in, models=models)
            await policies.set_token_policy(dataclasses.replace(policy, token_id=token.id))
            print(
                f"created {token.id} ({token.name}); its secret, shown only now:", file=sys.stderr
            )
            print(secret)
        elif args.tokens_command == "list":
            _print_tokens(await store.list(), (await policies.snapshot()).tokens)
        elif args.tokens_command == "set-policy":
            matches = [t for t in await store.list() if args.token in (t.id, t.name)]
            if len(matches) != 1:
                raise TokenNotFound(f"no single token has id or name {args.token!r}")
            before = await policies.token_policy(matches[0].id)
            policy = await _token_policy(args, policies)
            policy = await policies.set_token_policy(
                dataclasses.replace(policy, token_id=matches[0].id)
            )
            print(f"set the policy of {matches[0].id} ({matches[0].name})")
            _print_removed(removed_by(before, policy))
        else:
            token = await store.revoke(args.token)
            print(f"revoked {token.id} ({token.name})")
    finally:
        await engine.dispose()


async def _token_policy(args: argparse.Namespace, policies: PolicyStore) -> TokenPolicy:
    team_id = (await policies.find_team(args.team)).id if args.team else None
    return TokenPolicy(
        token_id="", team_id=team_id, admin=args.admin, limits=_limits(args), budgets=_budgets(args)
    )


async def run_teams(args: argparse.Namespace, database_url: str) -> None:
    """`teams create|list|set-policy`."""
    engine = await open_engine(database_url)
    try:
        policies = PolicyStore(engine)
        if args.teams_command == "create":
            team = await policies.create_team(
                args.name, limits=_limits(args), budgets=_budgets(args)
            )
            print(f"created {team.id} ({team.name})")
        elif args.teams_command == "set-policy":
            before = await policies.find_team(args.team)
            team = await policies.set_team_policy(
                before.id, limits=_limits(args), budgets=_budgets(args)
            )
            print(f"set the policy of {team.id} ({team.name})")
            _print_removed(removed_by(before, team))
        else:
            rows = [("ID", "NAME", "LIMITS", "BUDGETS")]
            for t in await policies.list_teams():
                rows.append((t.id, t.name, _describe(t.limits), _describe(t.budgets)))
            _print_table(rows)
    finally:
        await engine.dispose()


def _print_removed(notices: list[str]) -> None:
    # On stderr: a replacement that drops parts is worth a warning, not output.
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)


def _describe(value: Limits | Budgets) -> str:
    return ",".join(f"{k}={v:g}" for k, v in value.as_dict().items()) or "-"


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
    _print_usage(groups, args.by, args.format)


async def run_db(args: argparse.Namespace, database_url: str) -> None:
    """`db upgrade|current`: migrate the schema, or say which revision it is at."""
    engine = new_engine(database_url)
    try:
        if args.db_command == "upgrade":
            print(f"database at revision {await upgrade(engine)} (the newest)")
            return
        current, head = await current_revision(engine), head_revision()
        if current == head:
            print(f"{current} (the newest)")
        else:
            # Not migrated yet, behind, or made by a newer version of the gateway.
            print(f"{current or 'none'} (this version's newest is {head})")
    finally:
        await engine.dispose()


def _print_usage(groups: list[UsageGroup], by: str, form: str) -> None:
    records = [dataclasses.asdict(g) for g in groups]
    if form == "json":
        print(json.dumps({"by": by, "groups": records}, indent=2))
        return
    if form == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([f.name for f in dataclasses.fields(UsageGroup)])
        writer.writerows([list(r.values()) for r in records])
        return
    rows = [(by.upper(), "NAME", "REQUESTS", "IMAGES", "FAILURES", "P50 MS", "P95 MS", "COST USD")]
    for g in groups:
        cost = f"{g.cost_usd:.4f}" + (
            f" (+{g.unpriced_requests} unpriced)" if g.unpriced_requests else ""
        )
        rows.append(
            (g.key, g.name, str(g.requests), str(g.images), str(g.failures),
             f"{g.p50_latency_ms:.0f}", f"{g.p95_latency_ms:.0f}", cost)
        )  # fmt: skip
    _print_table(rows)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_tokens(tokens: list, policies: dict[str, TokenPolicy]) -> None:  # type: ignore[type-arg]
    now = datetime.datetime.now(datetime.UTC).timestamp()

    def when(ts: float | None) -> str:
        if ts is None:
            return "-"
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M")

    rows = [("ID", "NAME", "STATE", "CREATED (UTC)", "EXPIRES (UTC)", "MODELS", "TEAM", "ADMIN")]
    for t in tokens:
        models = ",".join(t.allowed_models) if t.allowed_models else "*"
        policy = policies.get(t.id) or TokenPolicy(token_id=t.id)
        rows.append(
            (t.id, t.name, t.state(now), when(t.created_at), when(t.expires_at), models,
             policy.team_id or "-", "yes" if policy.admin else "no")
        )  # fmt: skip
    _print_table(rows)
