"""The `aqueduct-grpc` command line: its parser, and dispatch to `serve` and the store commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Sequence

from aqueduct_grpc.accounting.usage_report import GROUPINGS
from aqueduct_grpc.cli.serve import run_serve
from aqueduct_grpc.cli.store_commands import run_db, run_teams, run_tokens, run_usage
from aqueduct_grpc.config import ConfigError
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images.edit_inputs import MAX_INPUT_IMAGE_BYTES
from aqueduct_grpc.storage.database import sqlite_url

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
            help="postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH; overrides --data-dir"
            " (default: SQLite in the data dir, or $AQUEDUCT_DATABASE_URL)",
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
        default=64 * 1024 * 1024,
        help="largest HTTP request body the door accepts (default 64 MiB, the core's "
        "message limit: room for edits' uploads; over it: 413)",
    )
    serve.add_argument(
        "--max-part-bytes",
        type=int,
        default=MAX_INPUT_IMAGE_BYTES,
        help="largest file in a multipart upload (default 50 MiB, OpenAI's image limit)",
    )
    serve.add_argument(
        "--max-body-bytes-in-flight",
        type=int,
        default=32 * 1024 * 1024,
        help="bytes of large request bodies (uploads) each HTTP door holds at once; "
        "further uploads wait their turn (default 32 MiB)",
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

    db = commands.add_parser("db", help="the database schema").add_subparsers(
        dest="db_command", required=True
    )
    storage(db.add_parser("upgrade", help="apply the migrations it lacks (serve does it too)"))
    storage(db.add_parser("current", help="print its migration revision, and the newest"))

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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    database_url = args.database_url or sqlite_url(args.data_dir)
    try:
        if args.command == "serve":
            _run(run_serve(args, database_url))
        elif args.command == "teams":
            _run(run_teams(args, database_url))
        elif args.command == "usage":
            _run(run_usage(args, database_url))
        elif args.command == "db":
            _run(run_db(args, database_url))
        else:
            _run(run_tokens(args, database_url))
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
