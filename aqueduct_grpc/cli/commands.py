"""The `aqueduct-grpc` command line: its parser, and dispatch to the commands.

Every flag has help and shows its default; every value is checked as it is
parsed (`cli.arguments`), so a mistake is exit 2 with one line. `--log-level`
is accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aqueduct_grpc.accounting.usage_report import GROUPINGS, parse_moment
from aqueduct_grpc.cli import arguments
from aqueduct_grpc.cli.arguments import Parser, clearable, usage_error
from aqueduct_grpc.cli.config_command import run_config
from aqueduct_grpc.cli.database_location import locate_database
from aqueduct_grpc.cli.serve import run_serve
from aqueduct_grpc.cli.store_commands import run_db, run_teams, run_tokens
from aqueduct_grpc.cli.usage_command import run_usage
from aqueduct_grpc.config import EMBEDDED_DEFAULT, ConfigError, load_model_names
from aqueduct_grpc.durations import parse_duration
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images.edit_inputs import MAX_INPUT_IMAGE_BYTES
from aqueduct_grpc.suggestions import did_you_mean
from gateway_http.log_format import LOG_FORMATS, configure_logging, write_queued_lines

__all__ = ["build_parser", "main", "parse_duration"]

_MIB = 1024 * 1024

# The commands that make something, and so may create a missing database.
_CREATING = {("tokens", "create"), ("teams", "create"), ("db", "upgrade")}


def _moment(text: str) -> str:
    """`--since`/`--until`: checked now (a mistake is exit 2), read when the report runs."""
    try:
        parse_moment(text, time.time())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The parser of `aqueduct-grpc`; defaults named by `environ` (AQUEDUCT_*) come from it."""
    parser = Parser(
        prog="aqueduct-grpc", description="OpenAI-compatible image-generation gateway (gRPC core)."
    )
    _global_options(parser, default=environ.get("AQUEDUCT_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
        _global_options(sub, default=argparse.SUPPRESS)  # given here, it wins; else the outer one
        return sub

    def group(name: str, help_text: str, dest: str) -> Any:
        return command(commands, name, help_text).add_subparsers(
            dest=dest, required=True, metavar="COMMAND"
        )

    serve = command(commands, "serve", "run the gRPC core and the HTTP door")
    _config_option(serve, environ, "the models to serve")
    _serve_options(serve)
    _storage_options(serve)

    tokens = group("tokens", "manage bearer tokens", "tokens_command")
    create = command(tokens, "create", "create a token and print its secret once")
    create.add_argument("--name", required=True, help="its name (unique)")
    create.add_argument(
        "--expires-in", type=arguments.duration(), help="lifetime, e.g. 12h, 30d (default: never)"
    )
    create.add_argument(
        "--models", help="comma-separated models/aliases it may use (default: every model)"
    )
    _config_option(create, environ, "the models --models may name")
    create.add_argument("--team", help="team id or name it belongs to (default: none)")
    create.add_argument("--admin", action="store_true", help="may call the admin API")
    _policy_options(create, who="token", clearing=False)
    _storage_options(create)
    _storage_options(command(tokens, "list", "list tokens (never their secrets)"))
    revoke = command(tokens, "revoke", "revoke a token by id or name")
    revoke.add_argument("token", help="token id (tok_…) or name")
    _storage_options(revoke)
    set_policy = command(
        tokens, "set-policy", "change a token's team, admin scope, limits or budgets"
    )
    set_policy.add_argument("token", help="token id (tok_…) or name")
    membership = set_policy.add_mutually_exclusive_group()
    membership.add_argument("--team", help="move it to this team (id or name)")
    membership.add_argument("--no-team", action="store_true", help="take it out of its team")
    set_policy.add_argument(
        "--admin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give (--admin) or take away (--no-admin) admin scope",
    )
    _policy_options(set_policy, who="token", clearing=True)
    _storage_options(set_policy)

    teams = group("teams", "manage teams", "teams_command")
    team_create = command(teams, "create", "create a team")
    team_create.add_argument("--name", required=True, help="its name (unique)")
    _policy_options(team_create, who="team", clearing=False)
    _storage_options(team_create)
    _storage_options(command(teams, "list", "list teams"))
    team_set = command(teams, "set-policy", "change a team's limits or budgets")
    team_set.add_argument("team", help="team id or name")
    _policy_options(team_set, who="team", clearing=True)
    _storage_options(team_set)

    db = group("db", "the database schema", "db_command")
    _storage_options(command(db, "upgrade", "apply the migrations it lacks (serve does it too)"))
    _storage_options(command(db, "current", "print its migration revision, and the newest"))

    usage = command(commands, "usage", "usage report for a period")
    usage.add_argument(
        "--since", type=_moment, default="7d", help="start: 7d, 12h or an ISO date/time (UTC)"
    )
    usage.add_argument("--until", type=_moment, help="end, in the same forms (default: now)")
    usage.add_argument("--by", choices=GROUPINGS, default="token", help="what to group by")
    usage.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    _storage_options(usage)

    config = group("config", "the YAML config", "config_command")
    check = command(config, "check", "check a config and print it as the gateway reads it")
    check.add_argument("file", help="the YAML file (LiteLLM's model_list, gateway, limits, …)")
    return parser


def _global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--log-level",
        type=arguments.log_level,
        default=default,
        help="logging level (default: $AQUEDUCT_LOG_LEVEL, else INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto" if default is not argparse.SUPPRESS else argparse.SUPPRESS,
        help="log layout (auto: JSON when stderr is not a terminal, else logfmt)",
    )


def _config_option(parser: argparse.ArgumentParser, environ: Mapping[str, str], what: str) -> None:
    parser.add_argument(
        "--config",
        default=environ.get("AQUEDUCT_CONFIG"),
        help=f"YAML config (LiteLLM's model_list) with {what} "
        "(default: $AQUEDUCT_CONFIG, else the embedded demo model)",
    )


def _serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", default="127.0.0.1", help="address both doors listen on")
    serve.add_argument(
        "--grpc-port", type=arguments.port, default=50051, help="gRPC port (0: one the OS picks)"
    )
    serve.add_argument(
        "--http-port", type=arguments.port, default=8080, help="HTTP port (0: one the OS picks)"
    )
    serve.add_argument(
        "--http-workers",
        type=arguments.count,
        default=1,
        help="HTTP door processes, sharing the port (0: gRPC only)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=arguments.positive_count,
        default=64 * _MIB,
        help="largest HTTP request body the door accepts: the core's message limit, room "
        "for edits' uploads (over it: 413)",
    )
    serve.add_argument(
        "--max-part-bytes",
        type=arguments.positive_count,
        default=MAX_INPUT_IMAGE_BYTES,
        help="largest file in a multipart upload (OpenAI's image limit)",
    )
    serve.add_argument(
        "--max-body-bytes-in-flight",
        type=arguments.positive_count,
        default=32 * _MIB,
        help="bytes of large request bodies (uploads) each HTTP door holds at once; "
        "further uploads wait their turn",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="write no access log (by default each door logs one structured line per request)",
    )
    counting = serve.add_mutually_exclusive_group()
    counting.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="count nothing: no /metrics on the HTTP door, no core metrics",
    )
    counting.add_argument(
        "--metrics-port",
        type=arguments.port,
        help="serve the core's Prometheus metrics on this port (0: one the OS picks; "
        "default: none; the HTTP door serves its own on /metrics)",
    )
    serve.add_argument(
        "--console",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the web console at /console/ (and redirect / there)",
    )
    serve.add_argument(
        "--call-timeout",
        type=arguments.duration(),
        help="deadline the HTTP door gives each call to the core, e.g. 300s (default: none; "
        "each model's upstream timeout still bounds it)",
    )
    serve.add_argument(
        "--grace",
        type=arguments.duration(allow_zero=True),
        default=10.0,
        help="seconds in-flight calls get to finish on SIGTERM/SIGINT (or 30s, 2m)",
    )


def _storage_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--data-dir",
        help="folder of the embedded database (and of serve's journal and images) "
        "(default: $AQUEDUCT_DATA_DIR, else ./data)",
    )
    sub.add_argument(
        "--database-url",
        help="postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH, instead of the "
        "data dir's database (default: $AQUEDUCT_DATABASE_URL)",
    )


def _policy_options(sub: argparse.ArgumentParser, *, who: str, clearing: bool) -> None:
    """Flags for limits and budgets; with `clearing`, "none" drops a value set before."""

    def after(part: str) -> str:
        unset = f"the config's default ({part}:)" if who == "token" else "no limit"
        if clearing:
            return f" (not given: unchanged; none: drop it, so {unset} applies)"
        return f" (default: {unset})"

    limit = clearable(arguments.limit) if clearing else arguments.limit
    budget = clearable(arguments.budget) if clearing else arguments.budget
    for name, what in (
        ("requests_per_minute", "requests per minute"),
        ("images_per_minute", "images per minute (n counts)"),
        ("images_per_day", "images per UTC day"),
    ):
        sub.add_argument(
            "--" + name.replace("_", "-"), type=limit, dest=name, help=what + after("limits")
        )
    for name, what in (("per_day_usd", "USD per UTC day"), ("per_month_usd", "USD per UTC month")):
        sub.add_argument(
            "--budget-" + name.replace("_", "-"),
            type=budget,
            dest=name,
            help=what + after("budgets"),
        )


def _check_models(args: argparse.Namespace, prog: str) -> None:
    """`tokens create --models`: every name must be a model or alias of the config (exit 2)."""
    wanted = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    if not wanted:
        return
    known = load_model_names(args.config)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        source = args.config or EMBEDDED_DEFAULT
        first = unknown[0]
        usage_error(
            f"{prog} tokens create",
            f"--models: no model {first!r}{did_you_mean(first, known)}"
            + (f" (nor {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else "")
            + f"; the models of {source} are {', '.join(known)}"
            + ("" if args.config else " (give the server's config: --config or $AQUEDUCT_CONFIG)"),
        )


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> None:
    """Entry point of the console script.

    Args:
        argv: the arguments (default: the command line's).
        environ: the environment (default: the process's), for AQUEDUCT_* defaults.
    """
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        if args.command == "config":
            run_config(args)
            return
        if args.command == "tokens" and args.tokens_command == "create":
            _check_models(args, parser.prog)
        location = locate_database(
            data_dir=args.data_dir, database_url=args.database_url, environ=env
        )
        if args.command == "serve":
            _run(run_serve(args, location))
            return
        sub = getattr(args, f"{args.command}_command", None)
        name = " ".join(filter(None, (args.command, sub)))
        url = location.url_for(name, creates=(args.command, sub) in _CREATING)
        runners: dict[str, Callable[[argparse.Namespace, str], Awaitable[None]]] = {
            "tokens": run_tokens,
            "teams": run_teams,
            "usage": run_usage,
            "db": run_db,
        }
        _run(runners[args.command](args, url))
    except ConfigError as error:
        for problem in error.problems:
            print(f"aqueduct-grpc: {problem}", file=sys.stderr)
        sys.exit(1)
    except (GatewayError, ValueError, OSError) as error:
        sys.exit(f"aqueduct-grpc: {error}")
    except KeyboardInterrupt:
        sys.exit(130)  # interrupted before a stop was handled: quietly, as shells expect


def _run(coroutine: Awaitable[None]) -> None:
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coroutine)  # type: ignore[arg-type]
            return
        uvloop.run(coroutine)  # type: ignore[arg-type]
    finally:
        write_queued_lines()
