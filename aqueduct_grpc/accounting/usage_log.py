"""Usage accounting: one row per request, durable before the request is answered.

Every request is in the process's journal (`usage_journal`) from its start.
When it ends, its answer waits until its row is durable:

- On a database server (PostgreSQL), until the row is committed there, since
  a replica's own disk may die with it. Group commit: the writer task commits
  whatever rows have gathered meanwhile in one transaction, so concurrent
  requests share commits and each answer waits for at most one commit more
  than its own.
- On SQLite, the database is a file on this machine like the journal, so
  the row's journal line (one `write()`, microseconds) is as durable as its
  commit; rows then reach the database in batches, off the answer's path.

If the process dies, the next one to claim its journal writes the rows it
owed, and the requests that were in flight as INTERRUPTED. While the
database refuses rows they wait in the journal and are retried, without
holding up answers.

A row's cost reaches the budgets' shared spend in the transaction that
commits the row (`BudgetLedger.settle`), rows recovered from a crash included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.accounting.budgets import BudgetLedger
from aqueduct_grpc.accounting.usage_journal import UsageJournal
from aqueduct_grpc.accounting.usage_record import USAGE_COLUMNS, UsageRecord
from aqueduct_grpc.storage.database import usage_table

__all__ = ["UsageLog"]

log = logging.getLogger(__name__)


def _refused(error: Exception) -> bool:
    """Whether the database will never take the rows (as opposed to being unreachable).

    Retrying such rows would only keep them, and the rows behind them, waiting.
    asyncpg reports most bad values as a plain DBAPIError, and Python-side
    conversions fail before the driver (an int past 64 bits).
    """
    if isinstance(error, (OverflowError, ValueError, TypeError)):
        return True
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        # PostgreSQL says: only bad data (22), a violated constraint (23) or a
        # statement it cannot run (42) is for good. A deadlock (40), too many
        # connections (53), a lock timeout (55) or a shutdown (57) passes.
        return sqlstate[:2] in ("22", "23", "42")
    return (
        isinstance(error, sa.exc.DBAPIError)
        and not isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError))
        and not error.connection_invalidated
    )


class UsageLog:
    """Commits usage rows in groups from one task, with the journal as the fallback."""

    def __init__(
        self,
        engine: AsyncEngine,
        journal: UsageJournal,
        *,
        ledger: BudgetLedger,
        answer_after_commit: bool,
        batch_rows: int = 500,
        linger_seconds: float = 0.05,
        retry_seconds: float = 5.0,
        observe_commit: Callable[[float], None] | None = None,
    ) -> None:
        """Creates the UsageLog; `start()` starts it.

        Args:
            engine: the database.
            journal: this process's journal of requests in flight.
            ledger: settles each row's cost into the budgets' spend.
            answer_after_commit: whether an answer waits for its row's commit
                (a database server) or only for its journal line (SQLite).
            batch_rows: the most rows committed in one transaction.
            linger_seconds: when answers do not wait for commits, how long
                the writer gathers rows before a write (larger batches).
            retry_seconds: how often rows the database refused, and the
                journals of dead processes sharing the folder, are retried.
            observe_commit: told the seconds each batch's commit took (metrics).
        """
        self._engine = engine
        self._journal = journal
        self._ledger = ledger
        self._answer_after_commit = answer_after_commit
        self._batch_rows = batch_rows
        self._observe_commit = observe_commit
        self._linger_seconds = linger_seconds
        self._retry_seconds = retry_seconds
        self._insert: tuple[str, Sequence[str] | None] | None = None
        self._pending: list[tuple[UsageRecord, asyncio.Future[None] | None]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._written = 0

    @property
    def owed(self) -> int:
        """Finished rows waiting in the journal because the database did not take them."""
        return len(self._journal.owed())

    @property
    def written(self) -> int:
        """Rows written so far by this process (for tests and stats)."""
        return self._written

    async def start(self) -> None:
        """Opens the journal, writes what dead processes owed, starts the writer."""
        self._journal.open()
        await self.recover()
        self._tasks = [
            asyncio.create_task(self._run(), name="usage-writer"),
            asyncio.create_task(self._retry_forever(), name="usage-retry"),
        ]

    def begin(self, row: UsageRecord) -> None:
        """Notes a request that has started; its row must be committed once it ends."""
        self._journal.started(row)

    def admitted(self, row: UsageRecord, *, team_id: str | None, estimate: float | None) -> None:
        """Notes an admitted request's team and known cost (charged if it is interrupted)."""
        self._journal.admitted(row, team_id=team_id, estimate=estimate)

    @property
    def pending_rows(self) -> int:
        """Rows waiting for their database commit."""
        return len(self._pending)

    async def commit(self, row: UsageRecord, *, wait: bool = True) -> None:
        """Returns once the row is durable: committed, or journaled where that is as good.

        While the database refuses rows, they are journaled and retried.
        `wait=False`: returns once the row is journaled, committed later in
        a batch (for rows no money depends on, such as model listings).
        """
        self._idle.clear()
        self._wake.set()
        if not (self._answer_after_commit and wait):
            self._journal.ended(row)
            self._pending.append((row, None))  # nobody waits for this commit
            return
        done = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        # Shielded: a caller cancelled meanwhile leaves its row to be written.
        await asyncio.shield(done)

    async def flush(self) -> None:
        """Waits until every row handed over so far is committed or journaled."""
        await self._idle.wait()

    async def close(self) -> None:
        """Writes what is pending, stops the tasks and closes the journal."""
        await self.flush()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._retry_owed()
        self._journal.close()

    async def recover(self) -> int:
        """Writes the rows that dead processes' journals owe; returns how many were missing."""
        missing = 0
        for claimed in self._journal.claim_dead():
            try:
                rows = claimed.rows()
                fresh = await self._not_yet_written(rows)
                await self._store(fresh, journaled=False)
                missing += len(fresh)
                claimed.remove()
            except Exception:
                claimed.release()  # a later attempt (or process) will claim it again
                log.warning("could not recover a usage journal yet; will retry", exc_info=True)
            except BaseException:
                claimed.release()  # cancelled (closing): leave it for the next claim
                raise
        if missing:
            log.warning("recovered %d usage rows from a process that stopped abruptly", missing)
        return missing

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._answer_after_commit:
                # Nobody waits for these commits: gather rows, write fewer batches.
                await asyncio.sleep(self._linger_seconds)
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._batch_rows]
                del self._pending[: self._batch_rows]
                started = time.perf_counter()
                try:
                    await self._store([row for row, _ in batch], journaled=True)
                    if self._observe_commit is not None:
                        self._observe_commit(time.perf_counter() - started)
                except Exception:
                    # Never let the writer die: every later answer would wait on it.
                    log.exception("could not store %d usage rows", len(batch))
                finally:
                    for _, done in batch:
                        if done is not None and not done.done():
                            done.set_result(None)
            self._idle.set()

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(self._retry_seconds)
            try:
                await self._retry_owed()
                await self.recover()
            except Exception:
                log.warning("usage retry failed; will retry", exc_info=True)

    async def _retry_owed(self) -> None:
        owed = self._journal.owed()
        if owed:
            await self._store(owed, journaled=True)

    async def _store(self, rows: list[UsageRecord], *, journaled: bool) -> None:
        """Writes rows: all in one transaction, else one by one around refused ones.

        A row the database cannot take now stays in the journal (when it came
        from it) for a retry; a row it will never take is logged, so that it
        does not hold up the others.
        """
        if not rows:
            return
        try:
            await self._write(rows, recovered=not journaled)
        except Exception as error:
            if _refused(error):
                for row in rows:
                    await self._store_one(row, journaled=journaled)
                return
            log.warning(
                "usage database unavailable (%s); %d rows kept in the journal",
                type(error).__name__,
                len(rows),
            )
            if journaled:
                for row in rows:
                    self._journal.spilled(row)
            else:
                raise
        else:
            for row in rows:
                self._journal.finished(row)

    async def _store_one(self, row: UsageRecord, *, journaled: bool) -> None:
        try:
            await self._write([row], recovered=not journaled)
        except Exception as error:
            if not _refused(error):
                if not journaled:
                    raise
                self._journal.spilled(row)
                return
            cause = getattr(error, "orig", None) or error
            log.error(
                "the database refused a usage row (%s, request_key %s); it is dropped",
                type(cause).__name__,
                row.request_key,
            )
            with contextlib.suppress(Exception):  # else the hold lapses at its expiry
                await self._ledger.release(row.request_key)
            self._ledger.settled([row], committed=False)
            self._journal.finished(row)
        else:
            self._journal.finished(row)

    async def _not_yet_written(self, rows: list[UsageRecord]) -> list[UsageRecord]:
        keys = [row.request_key for row in rows]
        present: set[str] = set()
        async with self._engine.connect() as connection:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                result = await connection.execute(
                    sa.select(usage_table.c.request_key).where(usage_table.c.request_key.in_(chunk))
                )
                present.update(result.scalars())
        return [row for row in rows if row.request_key not in present]

    async def _write(self, batch: list[UsageRecord], *, recovered: bool) -> None:
        # The INSERT is compiled once for the database's dialect and rows go
        # to the driver's executemany as plain tuples: SQLAlchemy's per-row
        # parameter processing cost a fifth of the core's CPU per request.
        if self._insert is None:
            compiled = usage_table.insert().compile(
                dialect=self._engine.dialect, column_keys=list(USAGE_COLUMNS)
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
            await self._ledger.settle(connection, batch, recovered=recovered)
        self._ledger.settled(batch)
        self._written += len(batch)
