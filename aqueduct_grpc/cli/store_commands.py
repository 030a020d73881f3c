"""The commands on the stores: `tokens`, `teams` and `db`, run against the database.

They use the same stores as the admin API, so both give the same results.
`set-policy` changes only what its flags name (as the API's PATCH does) and
prints the whole policy that results.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import sys
from collections.abc import Sequence
from typing import Any

from aqueduct_grpc.accounting.policy import (
    KEEP,
    Budgets,
    Keep,
    Limits,
    PolicyPatch,
    TeamPolicy,
    TokenPolicy,
)
from aqueduct_grpc.accounting.policy_store import PolicySnapshot, PolicyStore, check_policy
from aqueduct_grpc.auth.tokens import Token, TokenStore
from aqueduct_grpc.cli.arguments import CLEAR
from aqueduct_grpc.storage.database import new_engine, open_engine
from aqueduct_grpc.storage.schema import current_revision, head_revision, upgrade

__all__ = ["print_table", "run_db", "run_teams", "run_tokens"]


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})


def _budgets(args: argparse.Namespace) -> Budgets:
    return Budgets(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Budgets)})


def _changes(args: argparse.Namespace, kind: type) -> dict[str, Any]:
    """The limits or budgets a set-policy's flags change (None: "none", dropped)."""
    changes = {}
    for f in dataclasses.fields(kind):
        value = getattr(args, f.name)
        if value is not None:
            changes[f.name] = None if value is CLEAR else value
    return changes


async def run_tokens(args: argparse.Namespace, database_url: str) -> None:
    """`tokens create|list|revoke|set-policy`."""
    engine = await open_engine(database_url)
    try:
        store = TokenStore(engine)
        policies = PolicyStore(engine)
        if args.tokens_command == "create":
            models = _model_list(args.models)
            team_id = (await policies.find_team(args.team)).id if args.team else None
            policy = TokenPolicy(
                token_id="", team_id=team_id, admin=args.admin, limits=_limits(args),
                budgets=_budgets(args),
            )  # fmt: skip
            # Checked before the token exists: a refused policy leaves no token behind.
            check_policy(policy.limits, policy.budgets)
            token, secret = await store.create(args.name, expires_in=args.expires_in, models=models)
            await policies.set_token_policy(dataclasses.replace(policy, token_id=token.id))
            print(
                f"created {token.id} ({token.name}); its secret, shown only now:", file=sys.stderr
            )
            print(secret)
        elif args.tokens_command == "list":
            tokens = await store.list()
            _print_tokens(tokens, await policies.snapshot())
            _note_shared_names(tokens)
        elif args.tokens_command == "set-policy":
            token = await store.find(args.token)
            team: str | Keep | None = None if args.no_team else (args.team or KEEP)
            patch = PolicyPatch(
                limits=_changes(args, Limits),
                budgets=_changes(args, Budgets),
                team=team,
                admin=KEEP if args.admin is None else args.admin,
            )
            policy = await policies.update_token_policy(token.id, patch)
            print(f"updated {token.id} ({token.name})")
            teams = {t.id: t for t in await policies.list_teams()}
            _print_policy(_token_policy_lines(policy, teams))
        else:
            token = await store.revoke(args.token)
            print(f"revoked {token.id} ({token.name})")
    finally:
        await engine.dispose()


def _model_list(text: str | None) -> list[str] | None:
    """`--models a,b` as names (None: every model)."""
    if not text:
        return None
    return [m.strip() for m in text.split(",") if m.strip()] or None


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
            patch = PolicyPatch(limits=_changes(args, Limits), budgets=_changes(args, Budgets))
            team = await policies.update_team_policy(args.team, patch)
            print(f"updated {team.id} ({team.name})")
            _print_policy(_team_policy_lines(team))
        else:
            rows = [("ID", "NAME", "LIMITS", "BUDGETS")]
            for t in await policies.list_teams():
                rows.append((t.id, t.name, _describe(t.limits), _describe(t.budgets)))
            print_table(rows)
    finally:
        await engine.dispose()


def _token_policy_lines(policy: TokenPolicy, teams: dict[str, TeamPolicy]) -> list[tuple[str, str]]:
    team = teams.get(policy.team_id) if policy.team_id else None
    return [
        ("team", "-" if policy.team_id is None else _team_label(policy.team_id, team)),
        ("admin", "yes" if policy.admin else "no"),
        ("limits", _describe(policy.limits, unset="none of its own (the defaults apply)")),
        ("budgets", _describe(policy.budgets, unset="none of its own (the defaults apply)")),
    ]


def _team_policy_lines(team: TeamPolicy) -> list[tuple[str, str]]:
    return [
        ("limits", _describe(team.limits, unset="none")),
        ("budgets", _describe(team.budgets, unset="none")),
    ]


def _team_label(team_id: str, team: TeamPolicy | None) -> str:
    return f"{team.name} ({team_id})" if team is not None else team_id


def _print_policy(lines: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"  {(label + ':').ljust(width)} {value}")


def _describe(value: Limits | Budgets, unset: str = "-") -> str:
    return ", ".join(f"{k}={v:g}" for k, v in value.as_dict().items()) or unset


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


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Prints rows as columns, the first row being the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_tokens(tokens: list[Token], snapshot: PolicySnapshot) -> None:
    now = datetime.datetime.now(datetime.UTC).timestamp()

    def when(ts: float | None) -> str:
        if ts is None:
            return "-"
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M")

    rows = [("ID", "NAME", "STATE", "CREATED (UTC)", "EXPIRES (UTC)", "MODELS", "TEAM", "ADMIN")]
    for t in tokens:
        models = ",".join(t.allowed_models) if t.allowed_models else "*"
        policy = snapshot.token(t.id)
        team = snapshot.team(policy.team_id)
        team_name = team.name if team is not None else (policy.team_id or "-")
        rows.append(
            (t.id, t.name, t.state(now), when(t.created_at), when(t.expires_at), models,
             team_name, "yes" if policy.admin else "no")
        )  # fmt: skip
    print_table(rows)


def _note_shared_names(tokens: list[Token]) -> None:
    # Names are unique now; a database from before may still hold duplicates.
    counts = collections.Counter(t.name for t in tokens)
    for name, times in sorted(counts.items()):
        if times > 1:
            print(
                f"note: {times} tokens are named {name!r} (made before names were unique): "
                "name them by id in revoke and set-policy",
                file=sys.stderr,
            )
