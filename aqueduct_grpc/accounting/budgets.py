"""Spending per token and team per UTC day and month, and the budget check, exact across replicas.

A request is admitted when spend + holds + its own known cost stays within
every budget of its token and team. A hold is the known cost (per-image
prices) of an admitted request in flight; with token prices the cost is known
only afterwards, so the request is refused once the budget is spent.

The spend lives in the database (`budget_spend`): a finished request's cost
is added in the transaction that commits its usage row (`settle`), so the
rows and the spend never disagree, and whatever recovers a crashed process's
rows settles them the same way. Where the holds live depends on who shares
the database:

- SQLite is one process's file: holds and the spend are kept in memory as
  well (loaded at start), and the check costs no I/O.
- PostgreSQL is shared by replicas: holds are rows of `budget_holds`, and the
  check and the new hold are one transaction that first locks the owners'
  spend rows (`SELECT … FOR UPDATE`), so two replicas can never both take the
  last dollar. The row's commit deletes its hold; a hold left by a replica
  that died and whose journal was never recovered lapses after the longest a
  request can run.

Until its row is committed, a request answered by this process counts in
memory (`charge`), so the next request sees it even while the row waits.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aqueduct_grpc.accounting.budget_statements import BudgetStatements, Compiled, Key, key_values
from aqueduct_grpc.accounting.policy import Budgets
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.pricing import PriceTable
from aqueduct_grpc.accounting.usage_record import UsageRecord
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.storage.database import budget_holds_table, budget_spend_table

__all__ = ["BudgetHold", "BudgetLedger", "BudgetRefusal"]

log = logging.getLogger(__name__)

_Key = Key

_EPSILON = 1e-9  # float sums of prices: a budget met exactly is not overspent
_SWEEP_SECONDS = 60.0
_CHUNK = 500  # request keys per DELETE … IN (…)


@dataclass(frozen=True)
class BudgetRefusal:
    """Which budget is spent, and seconds until its period ends."""

    scope: str
    period: str  # "day" or "month"
    budget: float
    retry_after: float


@dataclass(frozen=True)
class BudgetHold:
    """Cost held for an admitted request until its usage row is committed."""

    request_key: str
    amount: float
    keys: tuple[_Key, ...] = ()


_NOTHING = BudgetHold("", 0.0)


class BudgetLedger:
    """Budget checks and holds in the shared database; spend settled with the usage rows."""

    def __init__(
        self,
        engine: AsyncEngine,
        prices: PriceTable,
        policies: PolicyStore,
        *,
        shared: bool,
        hold_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Creates the BudgetLedger.

        Args:
            engine: the database shared by all replicas.
            prices: prices each recorded row.
            policies: gives a token's team when a row is recorded.
            shared: whether other processes admit requests on this database
                (PostgreSQL): holds then live in it, else in memory.
            hold_seconds: how long a hold counts at most: longer than any
                request can run (a crashed process's holds lapse after it).
            clock: Unix time (tests pass their own).
        """
        self._engine = engine
        self._prices = prices
        self._policies = policies
        self._hold_seconds = hold_seconds
        self._clock = clock
        self._shared = shared
        self._sql = BudgetStatements(engine.dialect)
        # Holds taken by this process, by request key: settled with the row.
        self._holding: dict[str, BudgetHold] = {}
        # Unshared: the spend of this month, and what holds hold, per key.
        self._spent: dict[_Key, float] = {}
        self._held: dict[_Key, float] = {}
        self._month = ""
        # Cost answered here and not yet committed, beyond the request's hold.
        self._unsettled: dict[_Key, float] = {}
        self._unsettled_rows: dict[str, tuple[tuple[_Key, ...], float]] = {}
        self._swept_at = 0.0

    async def load(self) -> None:
        """Unshared: reads this month's spend into memory (before any row is settled)."""
        if self._shared:
            return
        self._month = _period_name(self._clock(), "month")
        spend = budget_spend_table.c
        query = sa.select(spend.scope, spend.owner, spend.period, spend.spent).where(
            spend.period.startswith(self._month)
        )
        async with self._engine.connect() as connection:
            for scope, owner, period, amount in await connection.execute(query):
                self._spent[(scope, owner, period)] = float(amount)

    def estimate(self, model: str, n: int, size: str | None, quality: str | None) -> float | None:
        """A request's cost when known before the upstream is called."""
        return self._prices.estimate(model, n, size, quality)

    async def reserve(
        self,
        owners: list[tuple[str, str, Budgets]],
        estimate: float | None,
        request_key: str,
    ) -> BudgetHold | BudgetRefusal:
        """Holds `estimate` against every owner's budgets, or refuses.

        Owners without budgets cost nothing: the database is not asked.

        Args:
            owners: (scope, id, budgets) of the token and its team.
            estimate: the request's cost when known in advance, else None.
            request_key: the request's usage row key (the hold's name).
        """
        now = self._clock()
        budgets: dict[_Key, tuple[str, float]] = {}
        for scope, owner, owner_budgets in owners:
            for period, budget in (
                ("day", owner_budgets.per_day_usd),
                ("month", owner_budgets.per_month_usd),
            ):
                if budget is not None:
                    budgets[(scope, owner, _period_name(now, period))] = (period, budget)
        if not budgets:
            return _NOTHING
        cost = estimate or 0.0
        keys = tuple(sorted(budgets))  # one lock order for every transaction: no deadlocks
        hold = BudgetHold(request_key, cost, keys)
        if self._shared:
            async with self._unavailable_as_503():
                refused = await self._reserve_shared(budgets, hold, now)
            if refused is None and hold.amount and now - self._swept_at > _SWEEP_SECONDS:
                self._swept_at = now
                await self._sweep(now)
        else:
            refused = self._reserve_here(budgets, hold)
        if refused is not None:
            period, budget = budgets[refused]
            _, end = _bounds(now, period)
            return BudgetRefusal(refused[0], period, budget, end - now)
        return hold if cost else _NOTHING

    async def release(self, request_key: str) -> None:
        """Drops the hold of a request that ends without its row settling it.

        A limit refused it after its budgets held, or the database refused its row.
        """
        hold = self._holding.get(request_key)
        if hold is None:
            return
        if self._shared:
            async with self._unavailable_as_503(), self._engine.begin() as connection:
                await _run(connection, self._sql.delete_hold, {"request_key": request_key})
        else:
            self._unhold(hold)
        # Only now: had the DELETE failed, the row's commit would still drop it.
        del self._holding[request_key]

    def charge(self, row: UsageRecord) -> None:
        """Prices a finished request: sets its row's team and cost.

        Until the row is committed, the part of its cost its hold does not
        cover counts in this process's memory.
        """
        if row.token_id is not None and row.team_id is None:
            row.team_id = self._policies.latest.token(row.token_id).team_id
        row.cost = self._prices.cost(
            row.model,
            succeeded=row.status == "OK",
            images=row.images,
            size=row.size,
            quality=row.quality,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
        )
        hold = self._holding.get(row.request_key)
        beyond_hold = (row.cost or 0.0) - (0.0 if hold is None else hold.amount)
        if beyond_hold > _EPSILON and row.token_id is not None:
            keys = _row_keys(row)
            for key in keys:
                self._unsettled[key] = self._unsettled.get(key, 0.0) + beyond_hold
            self._unsettled_rows[row.request_key] = (keys, beyond_hold)

    async def settle(
        self, connection: AsyncConnection, rows: Sequence[UsageRecord], *, recovered: bool
    ) -> None:
        """Adds the rows' costs to the spend and drops their holds, in the rows' transaction.

        Args:
            connection: the transaction that inserts the rows.
            rows: the rows being committed.
            recovered: rows of a process that died: any of them may hold.
        """
        spend: dict[_Key, float] = {}
        for row in rows:
            if row.cost and row.token_id is not None:
                for key in _row_keys(row):
                    spend[key] = spend.get(key, 0.0) + row.cost
        if spend:
            await _run_many(
                connection,
                self._sql.add_spend,
                [
                    {"scope": scope, "owner": owner, "period": period, "spent": amount}
                    for (scope, owner, period), amount in sorted(spend.items())
                ],
            )
        if not self._shared:
            return  # holds are in memory: `settled` drops them
        holding = [row.request_key for row in rows if recovered or row.request_key in self._holding]
        for start in range(0, len(holding), _CHUNK):
            chunk = holding[start : start + _CHUNK]
            await connection.execute(
                budget_holds_table.delete().where(budget_holds_table.c.request_key.in_(chunk))
            )

    def settled(self, rows: Iterable[UsageRecord], *, committed: bool = True) -> None:
        """Forgets what this process kept in memory for rows now committed (or given up).

        Unshared, the costs of committed rows join the spend kept in memory, as
        their transaction added them to the table.
        """
        for row in rows:
            hold = self._holding.pop(row.request_key, None)
            if not self._shared:
                if hold is not None:
                    self._unhold(hold)
                if committed and row.cost and row.token_id is not None:
                    self._add_spent(row)
            entry = self._unsettled_rows.pop(row.request_key, None)
            if entry is None:
                continue
            keys, amount = entry
            _subtract(self._unsettled, keys, amount)

    async def spent(self, scope: str, owner: str, period: str) -> float:
        """What `owner` spent in the current day or month (committed rows only)."""
        key = (scope, owner, _period_name(self._clock(), period))
        if not self._shared:
            return self._spent.get(key, 0.0)
        async with self._engine.connect() as connection:
            found = await _run(connection, self._sql.spend(1), key_values((key,)))
            return _totals(found).get(key, 0.0)

    def _reserve_here(
        self, budgets: dict[_Key, tuple[str, float]], hold: BudgetHold
    ) -> _Key | None:
        """Unshared: the check and the hold in memory; the key that refuses, if any."""
        for key in hold.keys:
            spent = self._spent.get(key, 0.0) + self._held.get(key, 0.0)
            spent += self._unsettled.get(key, 0.0)
            if _over(spent, hold.amount, budgets[key][1]):
                return key
        if hold.amount:
            for key in hold.keys:
                self._held[key] = self._held.get(key, 0.0) + hold.amount
            self._holding[hold.request_key] = hold
        return None

    async def _reserve_shared(
        self, budgets: dict[_Key, tuple[str, float]], hold: BudgetHold, now: float
    ) -> _Key | None:
        """Shared: the check and the hold in one transaction; the key that refuses, if any."""
        sql, keys = self._sql, hold.keys
        async with self._engine.connect() as connection:
            if hold.amount:
                committed = await self._locked_spend(connection, keys)
            else:
                committed = _totals(await _run(connection, sql.spend(len(keys)), key_values(keys)))
            held = await _run(connection, sql.live_holds(len(keys)), key_values(keys, now=now))
            for key, amount in _totals(held).items():
                committed[key] = committed.get(key, 0.0) + amount
            for key in keys:
                spent = committed.get(key, 0.0) + self._unsettled.get(key, 0.0)
                if _over(spent, hold.amount, budgets[key][1]):
                    return key  # leaving the block rolls back
            if not hold.amount:
                return None
            # Known before the insert can commit: even if this call is cancelled
            # now, the row's commit drops whatever hold got written.
            self._holding[hold.request_key] = hold
            expires_at = now + self._hold_seconds
            await _run_many(
                connection,
                sql.insert_hold,
                [
                    {"request_key": hold.request_key, "scope": scope, "owner": owner}
                    | {"period": period, "amount": hold.amount, "expires_at": expires_at}
                    for scope, owner, period in keys
                ],
            )
            await connection.commit()
        return None

    def _unhold(self, hold: BudgetHold) -> None:
        _subtract(self._held, hold.keys, hold.amount)

    def _add_spent(self, row: UsageRecord) -> None:
        month = _period_name(row.created_at, "month")
        if month > self._month:
            # A new month: earlier days and months can no longer be charged.
            self._month = month
            self._spent = {k: v for k, v in self._spent.items() if k[2].startswith(month)}
        elif month < self._month:
            return
        for key in _row_keys(row):
            self._spent[key] = self._spent.get(key, 0.0) + (row.cost or 0.0)

    async def _locked_spend(
        self, connection: AsyncConnection, keys: tuple[_Key, ...]
    ) -> dict[_Key, float]:
        """Starts a transaction holding the owners' spend rows (made if missing); their spend.

        Rows are locked in key order, as the usage writer's upserts take them,
        so the two never wait on each other in a cycle. A missing row is
        created first in a transaction of its own, holding nothing else:
        inserting it while holding the others could deadlock with a writer.
        """
        locked, values = self._sql.locked_spend(len(keys)), key_values(keys)
        for attempt in range(2):
            if connection.dialect.name == "sqlite":
                # The database's one write lock, taken now rather than at the first write.
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            found = _totals(await _run(connection, locked, values))
            missing = [key for key in keys if key not in found]
            if not missing or attempt:
                return found
            # On this connection (a second one per check could exhaust the pool).
            await connection.rollback()
            await _run_many(
                connection,
                self._sql.create_spend,
                [{"scope": s, "owner": o, "period": p, "spent": 0.0} for s, o, p in missing],
            )
            await connection.commit()
        raise AssertionError("unreachable")  # the loop returns on its second pass

    async def _sweep(self, now: float) -> None:
        """Deletes lapsed holds, in a transaction of its own; a failure only waits for the next."""
        try:
            async with self._engine.begin() as connection:
                await _run(connection, self._sql.sweep, {"now": now})
        except Exception:
            log.warning("could not delete lapsed budget holds; will retry", exc_info=True)

    @contextlib.asynccontextmanager
    async def _unavailable_as_503(self) -> AsyncIterator[None]:
        """A database that fails the check is a retryable 503, as a rate-limit store's is."""
        try:
            yield
        except (sa.exc.SQLAlchemyError, OSError, TimeoutError) as error:
            log.warning("budget check failed (%s)", type(error).__name__)
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "The gateway cannot check budgets right now; retry shortly.",
                reason="BUDGETS_UNAVAILABLE",
                retry_after=1.0,
            ) from None


async def _run(connection: AsyncConnection, statement: Compiled, values: dict[str, Any]) -> Any:
    return await connection.exec_driver_sql(statement.sql, statement.values(values))


async def _run_many(
    connection: AsyncConnection, statement: Compiled, rows: list[dict[str, Any]]
) -> None:
    await connection.exec_driver_sql(statement.sql, [statement.values(row) for row in rows])


def _totals(rows: Iterable[Any]) -> dict[_Key, float]:
    """{key: amount} from rows of (scope, owner, period, amount)."""
    return {(scope, owner, period): float(amount) for scope, owner, period, amount in rows}


def _over(spent: float, cost: float, budget: float) -> bool:
    """Whether a request costing `cost` (0: not known yet) no longer fits."""
    return spent >= budget or spent + cost > budget + _EPSILON


def _subtract(totals: dict[_Key, float], keys: Iterable[_Key], amount: float) -> None:
    for key in keys:
        left = totals.get(key, 0.0) - amount
        if left > _EPSILON:
            totals[key] = left
        else:
            totals.pop(key, None)


def _row_keys(row: UsageRecord) -> tuple[_Key, ...]:
    """The spend a finished row counts toward: its token's and team's day and month."""
    keys = []
    for scope, owner in (("token", row.token_id), ("team", row.team_id)):
        if owner is not None:
            for period in ("day", "month"):
                keys.append((scope, owner, _period_name(row.created_at, period)))
    return tuple(keys)


def _period_name(at: float, period: str) -> str:
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def _bounds(at: float, period: str) -> tuple[float, float]:
    """Start and end (Unix time) of the UTC day or month holding `at`."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start.timestamp(), start.timestamp() + days * 86400
