"""Changes to tokens and policies, seen by every process sharing the database within a second.

Every write to tokens, teams or policies bumps one counter in the same
transaction (`bump`). Each serving process polls it (`ChangeWatcher`, twice
a second by default: one indexed single-row read) and drops its caches when
it moved. So a revocation or a new limit made on any replica, through the
admin API or by the CLI, holds everywhere within the poll interval, on
SQLite and PostgreSQL alike, with no extra server. The caches' own expiry
stays as the fallback if the database is briefly unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aqueduct_grpc.storage.database import changes_table

__all__ = ["ChangeWatcher", "bump"]

log = logging.getLogger(__name__)


async def bump(connection: AsyncConnection) -> None:
    """Marks a change to tokens or policies, inside the transaction that makes it."""
    await connection.execute(
        changes_table.update()
        .where(changes_table.c.id == 1)
        .values(generation=changes_table.c.generation + 1)
    )


class ChangeWatcher:
    """Polls the change counter and calls `on_change` callbacks when it moves."""

    def __init__(
        self,
        engine: AsyncEngine,
        on_change: Sequence[Callable[[], None]],
        *,
        interval: float = 0.5,
    ) -> None:
        """Creates the ChangeWatcher; `start()` starts polling.

        Args:
            engine: the shared database.
            on_change: what to call when another process changed something
                (each drops a cache).
            interval: seconds between polls.
        """
        self._engine = engine
        self._on_change = on_change
        self._interval = interval
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Reads the current counter, then polls it in the background."""
        self._seen = await self._read()
        self._task = asyncio.create_task(self._run(), name="change-watcher")

    async def close(self) -> None:
        """Stops polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def poll(self) -> bool:
        """Checks once; returns whether something changed (and the caches were dropped)."""
        generation = await self._read()
        if generation == self._seen:
            return False
        self._seen = generation
        for callback in self._on_change:
            callback()
        return True

    async def _read(self) -> int:
        async with self._engine.connect() as connection:
            value = await connection.scalar(
                sa.select(changes_table.c.generation).where(changes_table.c.id == 1)
            )
        return int(value or 0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll()
            except Exception as error:
                # The caches still expire by themselves meanwhile.
                log.warning("could not poll for token/policy changes: %s", type(error).__name__)
