"""Spending per token and team per UTC day and month, and the budget check.

The ledger prices each finished request's usage row (so the row and the
budget agree on the cost) and adds it to the running totals, which start from
the usage table at start-up. A request is admitted when the period's spend,
plus what admitted requests in flight will cost, plus its own cost when known
in advance (per-image prices), stays within the budget; with token prices the
cost is known only afterwards, so the request is refused once the budget is
spent. Holds make the check exact under concurrency in one process;
several replicas each see the shared database as of their start plus their
own spending (see README).
"""

from __future__ import annotations

import calendar
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.accounting.policy import Budgets
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.pricing import PriceTable
from aqueduct_grpc.accounting.usage_record import UsageRecord
from aqueduct_grpc.storage.database import usage_table

__all__ = ["BudgetHold", "BudgetLedger", "BudgetRefusal"]

_Key = tuple[str, str, str]  # (scope, owner id, "2026-11-25" or "2026-11")


@dataclass(frozen=True)
class BudgetRefusal:
    """Which budget is spent, and seconds until its period ends."""

    scope: str
    period: str  # "day" or "month"
    budget: float
    retry_after: float


@dataclass(frozen=True)
class BudgetHold:
    """Cost held for an admitted request until it finishes."""

    keys: tuple[_Key, ...]
    amount: float


_NOTHING = BudgetHold((), 0.0)


class BudgetLedger:
    """Running spend totals, in memory, started from the usage table."""

    def __init__(
        self,
        prices: PriceTable,
        policies: PolicyStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Creates the BudgetLedger.

        Args:
            prices: prices each recorded row.
            policies: gives a token's team when a row is recorded.
            clock: Unix time (tests pass their own).
        """
        self._prices = prices
        self._policies = policies
        self._clock = clock
        self._spent: dict[_Key, float] = {}
        self._held: dict[_Key, float] = {}
        self._month = ""

    async def load(self, engine: AsyncEngine) -> None:
        """Adds the spending of this month recorded in the database."""
        month_start, _ = _bounds(self._clock(), "month")
        query = sa.select(
            usage_table.c.created_at, usage_table.c.token_id, usage_table.c.team_id,
            usage_table.c.cost,
        ).where(usage_table.c.created_at >= month_start, usage_table.c.cost > 0)  # fmt: skip
        async with engine.connect() as connection:
            for row in await connection.execute(query):
                self._add(row.created_at, row.token_id, row.team_id, row.cost)

    def charge(self, row: UsageRecord) -> None:
        """Prices a finished request: sets its row's team and cost, adds the cost to the spend."""
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
        if row.cost:
            self._add(row.created_at, row.token_id, row.team_id, row.cost)

    def estimate(self, model: str, n: int, size: str | None, quality: str | None) -> float | None:
        """A request's cost when known before the upstream is called."""
        return self._prices.estimate(model, n, size, quality)

    def reserve(
        self,
        owners: list[tuple[str, str, Budgets]],
        estimate: float | None,
    ) -> BudgetHold | BudgetRefusal:
        """Holds `estimate` against every owner's budgets, or refuses.

        Args:
            owners: (scope, id, budgets) of the token and its team.
            estimate: the request's cost when known in advance, else None.
        """
        now = self._clock()
        cost = estimate or 0.0
        keys: list[_Key] = []
        for scope, owner, budgets in owners:
            for period, budget in (("day", budgets.per_day_usd), ("month", budgets.per_month_usd)):
                if budget is None:
                    continue
                key = (scope, owner, _period_name(now, period))
                committed = self._spent.get(key, 0.0) + self._held.get(key, 0.0)
                if committed >= budget or committed + cost > budget + 1e-9:
                    _, end = _bounds(now, period)
                    return BudgetRefusal(scope, period, budget, end - now)
                keys.append(key)
        if not keys or not cost:
            return _NOTHING
        for key in keys:
            self._held[key] = self._held.get(key, 0.0) + cost
        return BudgetHold(tuple(keys), cost)

    def release(self, hold: BudgetHold) -> None:
        """Drops the hold of a request that has ended."""
        for key in hold.keys:
            left = self._held.get(key, 0.0) - hold.amount
            if left > 1e-12:
                self._held[key] = left
            else:
                self._held.pop(key, None)

    def spent(self, scope: str, owner: str, period: str) -> float:
        """What `owner` spent in the current day or month (for the admin API and tests)."""
        return self._spent.get((scope, owner, _period_name(self._clock(), period)), 0.0)

    def _add(self, at: float, token_id: str | None, team_id: str | None, cost: float) -> None:
        month = _period_name(at, "month")
        if month > self._month:
            # A new month: earlier days and months can no longer be charged.
            self._month = month
            self._spent = {k: v for k, v in self._spent.items() if k[2].startswith(month)}
        elif month < self._month:
            return
        for scope, owner in (("token", token_id), ("team", team_id)):
            if owner is not None:
                for period in ("day", "month"):
                    key = (scope, owner, _period_name(at, period))
                    self._spent[key] = self._spent.get(key, 0.0) + cost


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
