"""Brings a database's schema to the newest migration, once, however many replicas try at once.

The revisions live in `aqueduct_grpc/storage/migrations` (see its docstring to
add one). Alembic runs from code: no `alembic.ini` is needed.
"""

from __future__ import annotations

import pathlib

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = pathlib.Path(__file__).with_name("migrations")

# Any fixed 64-bit number will do, as long as nothing else in the database uses
# it for an advisory lock: this one spells "aqueduc" in ASCII.
_PG_LOCK_KEY = 0x61717565647563


def alembic_config() -> Config:
    """Alembic's configuration, pointing at the migrations shipped in this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the gateway."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # there is always revision 0001
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision, or None if it has never been migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def upgrade(engine: AsyncEngine) -> str:
    """Runs the revisions the database lacks, and returns its revision (the head).

    Replicas starting together on one database all call this: each one first
    takes a database-wide lock, so one of them migrates while the others wait,
    then find the schema at the head and do nothing.

    Args:
        engine: The database's engine (SQLite or PostgreSQL).

    Returns:
        The revision the database is at afterwards.
    """
    async with engine.connect() as connection:
        # Leaving the block without the commit (an error) rolls everything back.
        await _lock(connection)
        await connection.run_sync(_upgrade)
        revision = await connection.run_sync(_current)
        await connection.commit()
    assert revision is not None
    return revision


async def _lock(connection: AsyncConnection) -> None:
    # The lock is the first statement of the transaction the migrations run
    # in, and lasts until it ends. It is also what keeps Alembic's module-level
    # `context` and `op` to one upgrade at a time when several engines in one
    # process upgrade at once: the others are still waiting here.
    if connection.dialect.name == "postgresql":
        # The transaction-scoped advisory lock is released by COMMIT or
        # ROLLBACK, so a failed upgrade can never leave it held on a pooled
        # connection. PostgreSQL's DDL is transactional: waiters see all or nothing.
        await connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
        )
    elif connection.dialect.name == "sqlite":
        # BEGIN IMMEDIATE takes the write lock at once (a plain BEGIN would only
        # take it at the first write, after reading a stale alembic_version);
        # other writers wait for it for the engine's busy_timeout.
        await connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        raise ValueError(f"no migration lock for the {connection.dialect.name} database")


def _upgrade(connection: sa.Connection) -> None:
    config = alembic_config()
    current = _current(connection)
    if current is not None and current not in _revisions(config):
        # A newer gateway has migrated this database (a rolling upgrade): its
        # tables may not be the ones this version knows, so do not run on them.
        raise ValueError(
            f"the database is at revision {current}, newer than this version knows"
            f" ({head_revision()}): run the newer aqueduct-grpc"
        )
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _revisions(config: Config) -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
