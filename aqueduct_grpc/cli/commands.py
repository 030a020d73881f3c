"""The `aqueduct-grpc` command: `serve`, `tokens create|list|revoke`, `teams`, `usage`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from aqueduct_grpc.accounting.policy import Budgets, Limits, TokenPolicy
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.usage_report import GROUPINGS, UsageGroup, parse_moment, usage_report
from aqueduct_grpc.auth.tokens import TokenNotFound, TokenStore
from aqueduct_grpc.config import ConfigError, load_config
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.server import open_core, start_grpc_server
from aqueduct_grpc.storage.database import open_engine, sqlite_url

__all__ = ["main", "parse_duration"]

log = logging.getLogger("aqueduct_grpc")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "90s", "15m", "12h", "30d" or "2w"."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 3600s, 12h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aqueduct-grpc", description="OpenAI-compatible image-generation gateway (gRPC core)."
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        default=os.environ.get("AQUEDUCT_LOG_LEVEL", "INFO").upper(),
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def storage(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--data-dir",
            default=os.environ.get("AQUEDUCT_DATA_DIR", "data"),
            help="folder of the embedded database (default: ./data, or $AQUEDUCT_DATA_DIR)",
        )
        sub.add_argument(
            "--database-url",
            default=os.environ.get("AQUEDUCT_DATABASE_URL"),
            help="SQLAlchemy async URL; overrides --data-dir (default: SQLite in the data dir)",
        )

    serve = commands.add_parser("serve", help="run the gRPC core and the HTTP door")
    serve.add_argument("--config", help="YAML config (LiteLLM model_list); default: demo model")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--grpc-port", type=int, default=50051)
    serve.add_argument("--http-port", type=int, default=8080)
    serve.add_argument(
        "--http-workers",
        type=int,
        default=1,
        help="HTTP door processes (0: gRPC only); each is a `gateway-http` child process",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=1024 * 1024,
        help="largest HTTP request body the door accepts (default 1 MiB; over it: 413)",
    )
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to finish calls on stop")
    storage(serve)

    tokens = commands.add_parser("tokens", help="manage bearer tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create a token and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--expires-in", type=parse_duration, help="e.g. 12h, 30d (default: never)")
    create.add_argument("--models", help="comma-separated models/aliases it may use (default: all)")
    create.add_argument("--team", help="team id or name it belongs to")
    create.add_argument("--admin", action="store_true", help="may call the admin API")
    policy_options(create)
    storage(create)
    storage(tokens.add_parser("list", help="list tokens (never their secrets)"))
    revoke = tokens.add_parser("revoke", help="revoke a token by id or name")
    revoke.add_argument("token", help="token id (tok_…) or name")
    storage(revoke)
    set_policy = tokens.add_parser(
        "set-policy", help="replace a token's team, admin scope, limits and budgets"
    )
    set_policy.add_argument("token", help="token id (tok_…) or name")
    set_policy.add_argument("--team", help="team id or name (default: none)")
    set_policy.add_argument("--admin", action="store_true", help="may call the admin API")
    policy_options(set_policy)
    storage(set_policy)

    teams = commands.add_parser("teams", help="manage teams").add_subparsers(
        dest="teams_command", required=True
    )
    team_create = teams.add_parser("create", help="create a team")
    team_create.add_argument("--name", required=True)
    policy_options(team_create)
    storage(team_create)
    storage(teams.add_parser("list", help="list teams"))
    team_set = teams.add_parser("set-policy", help="replace a team's limits and budgets")
    team_set.add_argument("team", help="team id or name")
    policy_options(team_set)
    storage(team_set)

    usage = commands.add_parser("usage", help="usage report for a period")
    usage.add_argument("--since", default="7d", help="7d, 12h or an ISO date (default 7d)")
    usage.add_argument("--until", help="same forms (default: now)")
    usage.add_argument("--by", choices=GROUPINGS, default="token")
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    storage(usage)
    return parser


def policy_options(sub: argparse.ArgumentParser) -> None:
    """Flags for limits and budgets (unset: the default, or none for a team)."""
    for name in ("requests_per_minute", "images_per_minute", "images_per_day"):
        sub.add_argument("--" + name.replace("_", "-"), type=int, dest=name)
    for name in ("per_day_usd", "per_month_usd"):
        sub.add_argument("--budget-" + name.replace("_", "-"), type=float, dest=name)


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})


def _budgets(args: argparse.Namespace) -> Budgets:
    return Budgets(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Budgets)})


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    database_url = args.database_url or sqlite_url(args.data_dir)
    try:
        if args.command == "serve":
            _run(_serve(args, database_url))
        elif args.command == "teams":
            _run(_teams(args, database_url))
        elif args.command == "usage":
            _run(_usage(args, database_url))
        else:
            _run(_tokens(args, database_url))
    except ConfigError as error:
        sys.exit(f"aqueduct-grpc: {error}")
    except (GatewayError, ValueError, OSError) as error:
        sys.exit(f"aqueduct-grpc: {error}")
    except KeyboardInterrupt:
        pass


def _run(coroutine: object) -> None:
    try:
        import uvloop

        uvloop.run(coroutine)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coroutine)  # type: ignore[arg-type]


async def _tokens(args: argparse.Namespace, database_url: str) -> None:
    engine = await open_engine(database_url)
    try:
        store = TokenStore(engine)
        policies = PolicyStore(engine)
        if args.tokens_command == "create":
            models = (
                [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
            )
            policy = await _token_policy(args, policies)
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
            policy = await _token_policy(args, policies)
            await policies.set_token_policy(dataclasses.replace(policy, token_id=matches[0].id))
            print(f"set the policy of {matches[0].id} ({matches[0].name})")
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


async def _teams(args: argparse.Namespace, database_url: str) -> None:
    engine = await open_engine(database_url)
    try:
        policies = PolicyStore(engine)
        if args.teams_command == "create":
            team = await policies.create_team(
                args.name, limits=_limits(args), budgets=_budgets(args)
            )
            print(f"created {team.id} ({team.name})")
        elif args.teams_command == "set-policy":
            team = await policies.set_team_policy(
                args.team, limits=_limits(args), budgets=_budgets(args)
            )
            print(f"set the policy of {team.id} ({team.name})")
        else:
            rows = [("ID", "NAME", "LIMITS", "BUDGETS")]
            for t in await policies.list_teams():
                rows.append((t.id, t.name, _describe(t.limits), _describe(t.budgets)))
            _print_table(rows)
    finally:
        await engine.dispose()


def _describe(value: Limits | Budgets) -> str:
    return ",".join(f"{k}={v:g}" for k, v in value.as_dict().items()) or "-"


async def _usage(args: argparse.Namespace, database_url: str) -> None:
    now = time.time()
    since = parse_moment(args.since, now)
    until = parse_moment(args.until, now) if args.until else now
    engine = await open_engine(database_url)
    try:
        groups = await usage_report(engine, since=since, until=until, by=args.by)
    finally:
        await engine.dispose()
    _print_usage(groups, args.by, args.format)


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


async def _serve(args: argparse.Namespace, database_url: str) -> None:
    config = load_config(args.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    image_dir = pathlib.Path(args.data_dir) / "images"
    async with open_core(config, database_url=database_url, image_dir=image_dir) as gateway:
        if await gateway.tokens.count() == 0:
            token, secret = await gateway.tokens.create("default")
            # The operator's first token: it may use the admin API to make others.
            await gateway.policies.set_token_policy(TokenPolicy(token_id=token.id, admin=True))
            print(
                f"\nNo tokens yet: created token {token.id} ('default'). "
                f"Its secret, shown only once:\n\n    {secret}\n\n"
                "Create more with `aqueduct-grpc tokens create --name NAME`.\n",
                flush=True,
            )
        grpc_server = await start_grpc_server(gateway, host=args.host, port=args.grpc_port)
        doors = _start_http_doors(args, grpc_server.port)
        models = ", ".join(m.name for m in config.models)
        print(
            f"aqueduct-grpc serving {models}: gRPC on {args.host}:{grpc_server.port}"
            + (f", HTTP on http://{args.host}:{args.http_port}" if doors else ""),
            flush=True,
        )
        try:
            await _wait(stop, doors)
        finally:
            log.info("shutting down")
            for door in doors:
                with contextlib.suppress(ProcessLookupError):
                    door.terminate()
            await grpc_server.stop(args.grace)
            for door in doors:
                await asyncio.to_thread(door.wait)


def _start_http_doors(args: argparse.Namespace, grpc_port: int) -> list[subprocess.Popen[bytes]]:
    # The HTTP door runs in its own process(es): on a multi-core machine the
    # JSON work and the gRPC core then do not share one event loop.
    target_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    if ":" in target_host:
        target_host = f"[{target_host}]"
    command = [
        sys.executable,
        "-m",
        "gateway_http",
        "--grpc-target",
        f"{target_host}:{grpc_port}",
        "--host",
        args.host,
        "--port",
        str(args.http_port),
        "--log-level",
        args.log_level,
        "--max-body-bytes",
        str(args.max_body_bytes),
    ]
    if args.http_workers > 1:
        command.append("--reuse-port")
    # Each door exits with `serve`, even if `serve` is killed outright.
    with_parent = [sys.executable, "-m", "aqueduct_grpc.cli.child_process", str(os.getpid())]
    return [subprocess.Popen([*with_parent, *command]) for _ in range(args.http_workers)]


async def _wait(stop: asyncio.Event, doors: list[subprocess.Popen[bytes]]) -> None:
    """Returns on a stop signal, or when an HTTP door process dies."""
    while not stop.is_set():
        for door in doors:
            if door.poll() is not None:
                raise SystemExit(f"aqueduct-grpc: the HTTP door exited with code {door.returncode}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
