"""The database: table definitions and the async engine.

SQLAlchemy Core keeps one schema for the embedded SQLite default
(`sqlite+aiosqlite`) and PostgreSQL (`postgresql+asyncpg`): only the URL
changes. `metadata` is the newest schema; the migrations in
`aqueduct_grpc/storage/migrations` bring a database to it, and a change here
needs a new revision there.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aqueduct_grpc.errors import invalid_argument
from aqueduct_grpc.storage.schema import upgrade

__all__ = [
    "NAME_CHARS",
    "budget_holds_table",
    "budget_spend_table",
    "changes_table",
    "gateway_secrets_table",
    "metadata",
    "models_seen_table",
    "new_engine",
    "normalized_url",
    "open_engine",
    "sqlite_url",
    "stored_name",
    "teams_table",
    "token_policies_table",
    "tokens_table",
    "usage_table",
]

metadata = sa.MetaData()

# Token and team names: PostgreSQL refuses longer values, so they are checked first.
NAME_CHARS = 200


def stored_name(name: str, what: str) -> str:
    """A token's or team's name as stored (stripped); raises INVALID_ARGUMENT if unfit."""
    name = name.strip()
    if not name:
        raise invalid_argument(f"a {what} needs a name", "name")
    if "\x00" in name:
        # PostgreSQL's text cannot hold it; no name needs it.
        raise invalid_argument(f"a {what}'s name must not contain NUL characters", "name")
    if len(name) > NAME_CHARS:
        raise invalid_argument(
            f"a {what}'s name must be at most {NAME_CHARS} characters (got {len(name)})", "name"
        )
    return name


tokens_table = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(NAME_CHARS), nullable=False),
    # sha256 of the secret; the secret itself is shown once and never stored.
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    # JSON list of model names/aliases, NULL = every model.
    sa.Column("allowed_models", sa.JSON, nullable=True),
)

usage_table = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("token_id", sa.String(32), nullable=True, index=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("requested_model", sa.String(200), nullable=True),
    sa.Column("n", sa.Integer, nullable=True),
    sa.Column("size", sa.String(32), nullable=True),
    sa.Column("quality", sa.String(32), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error_reason", sa.String(64), nullable=True),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("images", sa.Integer, nullable=False, default=0),
    sa.Column("input_tokens", sa.BigInteger, nullable=True),
    sa.Column("output_tokens", sa.BigInteger, nullable=True),
    sa.Column("total_tokens", sa.BigInteger, nullable=True),
    sa.Column("end_user", sa.String(256), nullable=True),
    sa.Column("safety_identifier", sa.String(256), nullable=True),
    # Added for accounting; revision 0001 adds them to databases older than migrations.
    sa.Column("team_id", sa.String(32), nullable=True),
    # USD; NULL when the model's price is not configured (never a guess).
    sa.Column("cost", sa.Float, nullable=True),
    # The request's own key (see UsageRecord): crash recovery writes a row
    # only if no row has its key. NULL on rows older than revision 0002.
    sa.Column("request_key", sa.String(32), nullable=True, unique=True, index=True),
    # "generate" or "edit"; NULL on rows older than revision 0007 (all generations).
    sa.Column("operation", sa.String(16), nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True, index=True),
)

teams_table = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(NAME_CHARS), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # JSON objects of the limits/budgets that are set (see policy.py).
    sa.Column("limits", sa.JSON, nullable=True),
    sa.Column("budgets", sa.JSON, nullable=True),
)

# A token's team, admin scope and overrides. A table of its own rather than
# columns on `tokens`: a token without a row here has the defaults.
token_policies_table = sa.Table(
    "token_policies",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("team_id", sa.String(32), nullable=True),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("limits", sa.JSON, nullable=True),
    sa.Column("budgets", sa.JSON, nullable=True),
)


def sqlite_url(data_dir: str | pathlib.Path) -> str:
    """The URL of the embedded database inside `data_dir` (created if missing)."""
    folder = pathlib.Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{folder.resolve() / 'aqueduct.db'}"


def normalized_url(url: str) -> str:
    """The async SQLAlchemy URL for a database URL as a user writes it.

    `postgresql://`, `postgres://` and `postgresql+asyncpg://` become
    `postgresql+asyncpg://`; `sqlite:///PATH` and `sqlite+aiosqlite:///PATH`
    become `sqlite+aiosqlite:///PATH`. The rest of the URL is kept.

    Args:
        url: The database URL (`--database-url`, `AQUEDUCT_DATABASE_URL`).

    Returns:
        The URL with the async driver SQLAlchemy needs.

    Raises:
        ValueError: The URL is not one of those forms, or its driver is not
            installed. The message never contains the URL (it may hold a password).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL (expected {_URL_FORMS})") from None
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r} ({_URL_FORMS})")
    backend, module = driver.split("+")
    if importlib.util.find_spec(module) is None:
        extra = " (install aqueduct-grpc[postgres])" if backend == "postgresql" else ""
        raise ValueError(f"the {backend} database needs the {module} driver{extra}")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


# The schemes accepted, and the async driver each one runs on.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}
_URL_FORMS = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE or sqlite:///PATH"


def new_engine(url: str) -> AsyncEngine:
    """An engine on the database at `url`, without touching its schema (see `open_engine`).

    Raises:
        ValueError: As `normalized_url`.
    """
    url = normalized_url(url)
    options: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # A database that stops answering must fail calls, not hang them: answers
        # wait for their usage commits (asyncpg's own defaults wait forever).
        options["connect_args"] = {"timeout": 10, "command_timeout": 30}
        # Every request with a budget holds a connection for its check, besides
        # the usage writer's: with SQLAlchemy's default 5 (+10 overflow) the
        # overflow connections were closed and reopened under load, and each
        # connect (and re-preparing statements on it) cost a core milliseconds.
        options["pool_size"] = 20
        options["max_overflow"] = 20
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
    return engine


async def open_engine(url: str) -> AsyncEngine:
    """Connects, and brings the schema to the newest migration (creating it if empty).

    Args:
        url: The database URL, in any form `normalized_url` accepts.

    Returns:
        An engine on a database whose tables are those of `metadata`.

    Raises:
        ValueError: As `normalized_url`.
    """
    engine = new_engine(url)
    try:
        await upgrade(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI and the server use the file at once; busy_timeout makes
    # a second writer wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as error:
        # Connections opening a new file together race to switch it to WAL,
        # and SQLite refuses the losers at once (no busy wait). The mode is
        # kept in the file, so the winner's switch is theirs too.
        if "locked" not in str(error):
            raise
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# Secrets the gateway generates for itself (e.g. the key that signs image
# URLs), kept in the database so that replicas sharing it agree on them.
gateway_secrets_table = sa.Table(
    "gateway_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

# One row: bumped by every change to tokens and policies (see changes.py).
changes_table = sa.Table(
    "changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
)

# What each token and team spent per UTC day ("2026-12-01") and month
# ("2026-12"), kept with the usage rows it sums (see accounting/budgets.py):
# every replica's budget check locks and reads these rows.
budget_spend_table = sa.Table(
    "budget_spend",
    metadata,
    sa.Column("scope", sa.String(8), primary_key=True),  # "token" or "team"
    sa.Column("owner", sa.String(32), primary_key=True),
    sa.Column("period", sa.String(10), primary_key=True),
    sa.Column("spent", sa.Float, nullable=False),
)

# The known cost of admitted requests in flight, per budget they count
# toward, until their usage row is committed (or `expires_at`, if the
# process that took them died and nothing recovered its journal).
budget_holds_table = sa.Table(
    "budget_holds",
    metadata,
    sa.Column("request_key", sa.String(32), primary_key=True),
    sa.Column("scope", sa.String(8), primary_key=True),
    sa.Column("period", sa.String(10), primary_key=True),
    sa.Column("owner", sa.String(32), nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Index("ix_budget_holds_owner", "scope", "owner", "period"),
)

# When each model name was first served, so that a model's `created` (OpenAI's
# model listing) stays the same across restarts and replicas.
models_seen_table = sa.Table(
    "models_seen",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("first_seen", sa.BigInteger, nullable=False),
)
