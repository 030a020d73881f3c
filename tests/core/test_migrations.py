"""Migrations: they make `metadata`, adopt older databases, and let replicas race safely."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.cli import main
from aqueduct_grpc.storage.database import (
    budget_spend_table,
    metadata,
    new_engine,
    normalized_url,
    open_engine,
    sqlite_url,
    tokens_table,
    usage_table,
)
from aqueduct_grpc.storage.schema import alembic_config, current_revision, head_revision, upgrade

REPLICAS = 8
# Far more than the upgrades need; a lock that fails shows as a deadlock, not a hang.
UPGRADE_SECONDS = 30


async def schema_differences(engine: AsyncEngine) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match `metadata`."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )


async def version_rows(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        result = await connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        return [row[0] for row in result]


# Every revision shipped, oldest first.
REVISIONS = [
    script.revision
    for script in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]


def upgrades_run(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Alembic's "Running upgrade" log lines: one per revision applied."""
    return [r.getMessage() for r in caplog.records if "Running upgrade" in r.getMessage()]


async def test_a_new_database_gets_exactly_the_schema_of_metadata(database_url):
    engine = await open_engine(database_url)
    try:
        assert await schema_differences(engine) == []
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_replicas_upgrading_one_empty_database_at_once_all_succeed(database_url, caplog):
    caplog.set_level(logging.INFO, logger="alembic")
    engines = [new_engine(database_url) for _ in range(REPLICAS)]
    try:
        # Every upgrade runs to its end (or the time limit), so that a failing
        # one cannot leave the others running.
        everyone = asyncio.gather(*(upgrade(engine) for engine in engines), return_exceptions=True)
        revisions = await asyncio.wait_for(everyone, UPGRADE_SECONDS)
        assert revisions == [head_revision()] * REPLICAS
        # One replica migrated; the others waited for its lock and found nothing to do.
        applied = upgrades_run(caplog)
        assert len(applied) == len(set(applied)) == len(REVISIONS)
        assert await version_rows(engines[0]) == [head_revision()]
        assert await schema_differences(engines[0]) == []
    finally:
        for engine in engines:
            await engine.dispose()


async def test_replica_processes_starting_at_once_all_migrate_cleanly(database_url):
    # The failure: four `serve` processes on one empty database, most
    # dying on CREATE TABLE. Here: four `db upgrade` processes, the same start-up path.
    command = [sys.executable, "-c", "from aqueduct_grpc.cli import main; main()"]
    command += ["db", "upgrade", "--database-url", database_url]
    processes = [
        await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outputs = [await process.communicate() for process in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    assert {out.decode() for out, _ in outputs} == {
        f"database at revision {head_revision()} (the newest)\n"
    }
    engine = new_engine(database_url)
    try:
        assert await version_rows(engine) == [head_revision()]
    finally:
        await engine.dispose()


async def test_sqlite_database_opened_by_many_engines_at_once_is_in_wal_mode(tmp_path):
    # New files are switched to WAL by whichever connection wins the race;
    # the losers must neither fail nor leave the file in rollback mode.
    url = sqlite_url(tmp_path)
    engines = await asyncio.gather(*(open_engine(url) for _ in range(REPLICAS)))
    try:
        async with engines[-1].connect() as connection:
            mode = await connection.exec_driver_sql("PRAGMA journal_mode")
            assert mode.scalar() == "wal"
    finally:
        for engine in engines:
            await engine.dispose()


def pre_migration_schema(*, accounting: bool) -> sa.MetaData:
    """The tables `metadata.create_all` made before migrations existed, frozen here.

    Args:
        accounting: False for the first release (tokens and usage only, usage
            without team_id and cost); True for the last release before migrations.
    """
    old = sa.MetaData()
    sa.Table(
        "tokens",
        old,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.Column("allowed_models", sa.JSON),
    )
    usage_columns = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("token_id", sa.String(32), index=True),
        sa.Column("model", sa.String(200)),
        sa.Column("requested_model", sa.String(200)),
        sa.Column("n", sa.Integer),
        sa.Column("size", sa.String(32)),
        sa.Column("quality", sa.String(32)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error_reason", sa.String(64)),
        sa.Column("http_status", sa.Integer),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("total_tokens", sa.Integer),
        sa.Column("end_user", sa.String(256)),
        sa.Column("safety_identifier", sa.String(256)),
    ]
    if accounting:
        usage_columns += [sa.Column("team_id", sa.String(32)), sa.Column("cost", sa.Float)]
    sa.Table("usage", old, *usage_columns)
    if accounting:
        sa.Table(
            "teams",
            old,
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(200), nullable=False, unique=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("limits", sa.JSON),
            sa.Column("budgets", sa.JSON),
        )
        sa.Table(
            "token_policies",
            old,
            sa.Column("token_id", sa.String(32), primary_key=True),
            sa.Column("team_id", sa.String(32)),
            sa.Column("admin", sa.Boolean, nullable=False),
            sa.Column("limits", sa.JSON),
            sa.Column("budgets", sa.JSON),
        )
        sa.Table(
            "gateway_secrets",
            old,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("value", sa.String(128), nullable=False),
        )
    return old


@pytest.mark.parametrize("accounting", [False, True], ids=["first-release", "last-release"])
async def test_a_database_older_than_migrations_is_adopted_with_its_rows(database_url, accounting):
    old_engine = new_engine(database_url)
    old = pre_migration_schema(accounting=accounting)
    async with old_engine.begin() as connection:
        await connection.run_sync(old.create_all)
        await connection.execute(
            old.tables["tokens"].insert(),
            {"id": "tok_old", "name": "old", "secret_hash": "h" * 64, "created_at": 1.0},
        )
        await connection.execute(
            old.tables["usage"].insert(),
            [
                {"created_at": 2.0, "token_id": "tok_old", "status": "OK", "latency_ms": 5.0,
                 "images": 1},
                {"created_at": 3.0, "token_id": "tok_old", "status": "INTERNAL",
                 "latency_ms": 7.0, "images": 0},
            ],
        )  # fmt: skip
    await old_engine.dispose()

    engine = await open_engine(database_url)
    try:
        assert await current_revision(engine) == head_revision()
        assert await schema_differences(engine) == []
        async with engine.connect() as connection:
            tokens = (await connection.execute(sa.select(tokens_table.c.id))).all()
            usage = (
                await connection.execute(
                    sa.select(usage_table.c.id, usage_table.c.status, usage_table.c.cost).order_by(
                        usage_table.c.id
                    )
                )
            ).all()
        assert tokens == [("tok_old",)]
        assert usage == [(1, "OK", None), (2, "INTERNAL", None)]
        # Ids go on from the old rows (the sequence, or SQLite's rowid, was kept).
        async with engine.begin() as connection:
            inserted = await connection.execute(
                usage_table.insert(), {"created_at": 4.0, "status": "OK", "latency_ms": 1.0}
            )
            assert inserted.inserted_primary_key == (3,)
    finally:
        await engine.dispose()


async def test_the_spend_of_this_month_is_carried_into_the_budget_table(database_url):
    # A database at 0004 (budgets were summed in memory) gets this month's spend.
    engine = new_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(
                lambda sync: command.upgrade(_config_on(sync), "0004"),
            )
            await connection.commit()
        now = time.time()
        row = {"status": "OK", "latency_ms": 1.0, "images": 1, "token_id": "tok_a", "team_id": None}
        async with engine.begin() as connection:
            await connection.execute(
                usage_table.insert(),
                [
                    {**row, "created_at": now, "cost": 0.04, "team_id": "team_a",
                     "request_key": "a"},
                    {**row, "created_at": now, "cost": 0.02, "request_key": "b"},
                    {**row, "created_at": now, "cost": None, "request_key": "c"},
                    {**row, "created_at": now - 40 * 86400, "cost": 1.0, "request_key": "d"},
                ],
            )  # fmt: skip
        await upgrade(engine)
        async with engine.connect() as connection:
            spend = {
                (scope, owner, len(period)): value
                for scope, owner, period, value in await connection.execute(
                    sa.select(budget_spend_table)
                )
            }
        day, month = len("2026-12-01"), len("2026-12")
        assert spend == {
            ("token", "tok_a", day): pytest.approx(0.06),
            ("token", "tok_a", month): pytest.approx(0.06),
            ("team", "team_a", day): pytest.approx(0.04),
            ("team", "team_a", month): pytest.approx(0.04),
        }
    finally:
        await engine.dispose()


def _config_on(connection: sa.Connection) -> Any:
    config = alembic_config()
    config.attributes["connection"] = connection
    return config


async def test_a_database_from_a_newer_gateway_is_refused(database_url):
    engine = await open_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(ValueError, match="revision 9999, newer than this version knows"):
            await upgrade(engine)
        # The refusal rolled back and let go of the lock: the next try gets the same answer.
        with pytest.raises(ValueError, match="9999"):
            await asyncio.wait_for(upgrade(engine), 10)
    finally:
        await engine.dispose()


async def test_a_plain_postgresql_url_works(postgres_server):
    url = await postgres_server.create_database()
    try:
        plain = url.replace("postgresql+asyncpg://", "postgresql://")
        assert plain.startswith("postgresql://")
        engine = await open_engine(plain)
        try:
            assert await current_revision(engine) == head_revision()
        finally:
            await engine.dispose()
    finally:
        await postgres_server.drop_database(url)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/gw", "postgresql+asyncpg://u:p@db:5432/gw"),
        ("postgres://u:p@db/gw", "postgresql+asyncpg://u:p@db/gw"),
        (
            "postgresql+asyncpg://u:p@db/gw?ssl=require",
            "postgresql+asyncpg://u:p@db/gw?ssl=require",
        ),
        ("postgresql://u:p%40ss@db/gw", "postgresql+asyncpg://u:p%40ss@db/gw"),
        ("sqlite:////var/lib/gw.db", "sqlite+aiosqlite:////var/lib/gw.db"),
        ("sqlite:///data/gw.db", "sqlite+aiosqlite:///data/gw.db"),
        ("sqlite+aiosqlite:///gw.db", "sqlite+aiosqlite:///gw.db"),
    ],
)
def test_database_urls_get_their_async_driver(given, expected):
    assert normalized_url(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("mysql://u:secret@db/gw", "unsupported database URL scheme 'mysql'"),
        ("postgresql+psycopg2://u:secret@db/gw", "unsupported database URL scheme"),
        ("not a url", "not a database URL"),
    ],
)
def test_unsupported_database_urls_are_refused_without_echoing_them(given, message):
    with pytest.raises(ValueError, match=message) as refused:
        normalized_url(given)
    assert "secret" not in str(refused.value)


def test_a_missing_postgresql_driver_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "asyncpg" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"install aqueduct-grpc\[postgres\]"):
        normalized_url("postgresql://u:p@db/gw")


def test_db_commands_upgrade_and_report_the_revision(tmp_path: pathlib.Path, capsys):
    data = ["--data-dir", str(tmp_path)]
    main(["db", "current", *data])
    assert capsys.readouterr().out == f"none (this version's newest is {head_revision()})\n"
    main(["db", "upgrade", *data])
    assert capsys.readouterr().out == f"database at revision {head_revision()} (the newest)\n"
    main(["db", "current", *data])
    assert capsys.readouterr().out == f"{head_revision()} (the newest)\n"


def test_db_upgrade_with_an_unsupported_url_exits_with_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["db", "upgrade", "--database-url", "mysql://u:secret@db/gw"])
    assert str(exited.value) == (
        "aqueduct-grpc: unsupported database URL scheme 'mysql'"
        " (postgresql://USER:PASSWORD@HOST:PORT/DATABASE or sqlite:///PATH)"
    )
