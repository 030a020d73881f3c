"""Usage accounting: one row per request, written in batches off the hot path.

Requests only append to an in-memory queue; one background task writes what
has queued up in a single transaction. So concurrent requests never contend
for the database (no "database is locked") and never wait for a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.storage.database import usage_table

__all__ = ["UsageLog", "UsageRecord"]

log = logging.getLogger(__name__)

# Pauses between attempts to write a batch (the last value is unused).
_RETRY_PAUSES = (0.5, 2.0, 5.0, 0.0)


@dataclass
class UsageRecord:
    """What one request did; `status` is the gRPC code name (OK on success)."""

    created_at: float
    token_id: str | None
    requested_model: str | None
    status: str = "OK"
    model: str | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    error_reason: str | None = None
    http_status: int | None = None
    latency_ms: float = 0.0
    images: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    end_user: str | None = None
    safety_identifier: str | None = None
    team_id: str | None = None
    cost: float | None = None


_COLUMNS = tuple(f.name for f in fields(UsageRecord))


class UsageLog:
    """Queues usage rows and writes them in batches from one task."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_rows: int = 500,
        linger_seconds: float = 0.05,
    ) -> None:
        """Creates the UsageLog.

        Args:
            engine: the database.
            batch_rows: the most rows written in one transaction.
            linger_seconds: how long the writer waits for more rows before a write.
        """
        self._engine = engine
        self._batch_rows = batch_rows
        self._linger_seconds = linger_seconds
        self._insert: tuple[str, Sequence[str] | None] | None = None
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._written = 0

    @property
    def written(self) -> int:
        """Rows written so far (for tests and stats)."""
        return self._written

    def record(self, row: UsageRecord) -> None:
        """Queues a row; never blocks and never fails the request."""
        self._queue.put_nowait(row)

    async def start(self) -> None:
        """Starts the writer task."""
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def flush(self) -> None:
        """Waits until every row queued so far is written."""
        await self._queue.join()

    async def close(self) -> None:
        """Writes what is queued, then stops the writer."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Let a busy gateway gather rows for a moment: one transaction per
            # batch instead of one per request.
            await asyncio.sleep(self._linger_seconds)
            while len(batch) < self._batch_rows and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write_with_retries(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write_with_retries(self, batch: list[UsageRecord]) -> None:
        for attempt, pause in enumerate(_RETRY_PAUSES):
            try:
                await self._write(batch)
                return
            except Exception:
                if attempt == len(_RETRY_PAUSES) - 1:
                    # Keep serving: the rows are logged as lost rather than
                    # retried forever while the queue grows without bound.
                    log.exception("lost %d usage rows: the database refused them", len(batch))
                    return
                log.warning("usage write failed; retrying in %.1f s", pause, exc_info=True)
                await asyncio.sleep(pause)

    async def _write(self, batch: list[UsageRecord]) -> None:
        # The INSERT is compiled once for the database's dialect and rows go
        # to the driver's executemany as plain tuples: SQLAlchemy's per-row
        # parameter processing cost a fifth of the core's CPU per request.
        if self._insert is None:
            compiled = usage_table.insert().compile(
                dialect=self._engine.dialect, column_keys=list(_COLUMNS)
            )
            positions = compiled.positiontup if self._engine.dialect.positional else None
            self._insert = (compiled.string, positions)
        sql, order = self._insert
        if order is not None:
            rows: list[Any] = [tuple(vars(row)[name] for name in order) for row in batch]
        else:
            rows = [vars(row) for row in batch]
        async with self._engine.begin() as connection:
            await connection.exec_driver_sql(sql, rows)
        self._written += len(batch)
