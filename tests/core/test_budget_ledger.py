"""Budgets in the shared database: ledgers (replicas) on one database agree on holds and spend."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.accounting.budgets import BudgetHold, BudgetLedger, BudgetRefusal
from aqueduct_grpc.accounting.policy import Budgets
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.pricing import PriceTable, parse_prices
from aqueduct_grpc.accounting.usage_journal import UsageJournal
from aqueduct_grpc.accounting.usage_log import UsageLog
from aqueduct_grpc.accounting.usage_record import UsageRecord
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.storage.database import budget_holds_table, new_engine, open_engine
from tests.conftest import closed_port
from tests.servers import PostgresServer

PRICE = 0.04
PRICES = PriceTable([("priced", parse_prices({"cost_per_image": {"1024x1024": PRICE}}, "test"))])


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(database_url)
    yield engine
    await engine.dispose()


def ledger(
    engine: AsyncEngine, *, shared: bool = True, hold_seconds: float = 600, clock=time.time
) -> BudgetLedger:
    return BudgetLedger(
        engine, PRICES, PolicyStore(engine), shared=shared, hold_seconds=hold_seconds, clock=clock
    )


def token_budget(per_day: float) -> list[tuple[str, str, Budgets]]:
    return [("token", "tok_1", Budgets(per_day_usd=per_day))]


def finished(key: str, *, images: int = 1, status: str = "OK") -> UsageRecord:
    return UsageRecord(
        created_at=time.time(),
        token_id="tok_1",
        requested_model="priced",
        model="priced",
        status=status,
        images=images,
        size="1024x1024",
        request_key=key,
    )


async def holds(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        keys = await connection.execute(sa.select(budget_holds_table.c.request_key))
        return sorted(keys.scalars())


async def test_two_ledgers_on_one_database_never_hold_more_than_the_budget(engine):
    # Two replicas, 40 requests at once, room for exactly 5 images.
    replicas = [ledger(engine), ledger(engine)]
    results = await asyncio.gather(
        *(replicas[i % 2].reserve(token_budget(PRICE * 5), PRICE, f"r{i}") for i in range(40))
    )
    held = [r for r in results if isinstance(r, BudgetHold)]
    refused = [r for r in results if isinstance(r, BudgetRefusal)]
    assert len(held) == 5 and len(refused) == 35
    assert {r.scope for r in refused} == {"token"} and {r.period for r in refused} == {"day"}
    assert len(await holds(engine)) == 5


async def test_a_settled_row_turns_its_hold_into_spend(engine, tmp_path: pathlib.Path):
    one = ledger(engine)
    other = ledger(engine)  # another replica, reading the same totals
    usage = UsageLog(
        engine, UsageJournal(tmp_path / "journal"), ledger=one, answer_after_commit=True
    )
    await usage.start()
    try:
        assert isinstance(await one.reserve(token_budget(PRICE * 2), PRICE, "a"), BudgetHold)
        row = finished("a")
        one.charge(row)
        assert row.cost == pytest.approx(PRICE)
        await usage.commit(row)
        assert await holds(engine) == []
        assert await other.spent("token", "tok_1", "day") == pytest.approx(PRICE)
        assert await other.spent("token", "tok_1", "month") == pytest.approx(PRICE)
        # One more image fits the other replica's check; a third does not.
        assert isinstance(await other.reserve(token_budget(PRICE * 2), PRICE, "b"), BudgetHold)
        refusal = await one.reserve(token_budget(PRICE * 2), PRICE, "c")
        assert isinstance(refusal, BudgetRefusal) and refusal.retry_after <= 86_400
    finally:
        await usage.close()


async def test_a_failed_request_releases_its_hold_and_costs_nothing(engine, tmp_path):
    one = ledger(engine)
    usage = UsageLog(
        engine, UsageJournal(tmp_path / "journal"), ledger=one, answer_after_commit=True
    )
    await usage.start()
    try:
        await one.reserve(token_budget(PRICE), PRICE, "a")
        row = finished("a", images=0, status="UNAVAILABLE")
        one.charge(row)
        await usage.commit(row)
        assert await holds(engine) == []
        assert await one.spent("token", "tok_1", "day") == 0.0
        assert isinstance(await one.reserve(token_budget(PRICE), PRICE, "b"), BudgetHold)
    finally:
        await usage.close()


async def test_release_gives_the_room_back(engine):
    one = ledger(engine)
    assert isinstance(await one.reserve(token_budget(PRICE), PRICE, "a"), BudgetHold)
    assert isinstance(await one.reserve(token_budget(PRICE), PRICE, "b"), BudgetRefusal)
    await one.release("a")
    assert isinstance(await one.reserve(token_budget(PRICE), PRICE, "b"), BudgetHold)


async def test_a_hold_lapses_once_no_request_can_still_be_running(engine):
    now = [time.time()]
    one = ledger(engine, hold_seconds=60, clock=lambda: now[0])
    assert isinstance(await one.reserve(token_budget(PRICE), PRICE, "lost"), BudgetHold)
    now[0] += 61  # the process that took it died, and nothing recovered its journal
    assert isinstance(await one.reserve(token_budget(PRICE), PRICE, "next"), BudgetHold)
    # The lapsed hold was swept as well.
    assert await holds(engine) == ["next"]


async def test_an_answered_row_not_yet_committed_counts_in_memory(engine):
    # Token prices: no hold, the cost is known only at the end. Until the row
    # is committed (SQLite answers first), this process remembers it.
    prices = PriceTable(
        [
            (
                "tokens",
                parse_prices({"input_cost_per_token": 0.01, "output_cost_per_token": 0.01}, "test"),
            )
        ]
    )
    one = BudgetLedger(engine, prices, PolicyStore(engine), shared=True, hold_seconds=600)
    assert await one.reserve(token_budget(0.05), None, "a") == BudgetHold("", 0.0)
    row = finished("a")
    row.model, row.input_tokens, row.output_tokens = "tokens", 10, 0
    one.charge(row)
    assert row.cost == pytest.approx(0.10)
    assert isinstance(await one.reserve(token_budget(0.05), None, "b"), BudgetRefusal)
    one.settled([row])  # as if it were committed elsewhere, without its spend
    assert isinstance(await one.reserve(token_budget(0.05), None, "b"), BudgetHold)


async def test_owners_without_budgets_never_touch_the_database():
    # A server that refuses connections (an unopenable SQLite file would
    # leave aiosqlite's thread to fail after the test's loop is gone).
    unreachable = new_engine(f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    try:
        one = ledger(unreachable)
        assert await one.reserve([("token", "t", Budgets())], PRICE, "a") == BudgetHold("", 0.0)
        with pytest.raises(GatewayError) as caught:  # with a budget, it is asked
            await one.reserve(token_budget(1.0), PRICE, "b")
        # A database that cannot answer is a retryable 503, never a 500.
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.reason == "BUDGETS_UNAVAILABLE"
    finally:
        await unreachable.dispose()


async def test_recovered_rows_settle_spend_and_drop_holds(engine, tmp_path):
    # A process took a hold, then died mid-request: the journal it left is
    # recovered at the next start, its INTERRUPTED row is charged the known
    # price, and the hold goes with that row's commit.
    dead = ledger(engine)
    await dead.reserve(token_budget(PRICE * 3), PRICE, "k")
    journal = UsageJournal(tmp_path / "journal")
    journal.open()
    row = UsageRecord(created_at=time.time(), token_id="tok_1", requested_model="priced")
    row.request_key = "k"
    journal.started(row)
    row.model = "priced"
    journal.admitted(row, team_id=None, estimate=PRICE)
    journal.close()  # keeps the files of a request in flight, unlocked: a dead owner
    survivor = ledger(engine)
    usage = UsageLog(
        engine, UsageJournal(tmp_path / "journal"), ledger=survivor, answer_after_commit=True
    )
    await usage.start()
    try:
        assert await holds(engine) == []
        assert await survivor.spent("token", "tok_1", "day") == pytest.approx(PRICE)
    finally:
        await usage.close()


async def test_unshared_holds_and_spend_in_memory_and_the_table_for_restarts(engine, tmp_path):
    # SQLite's case: one process, checks without I/O; the spend still reaches
    # the table with the rows, and the next start reads it back.
    one = ledger(engine, shared=False)
    await one.load()
    usage = UsageLog(
        engine, UsageJournal(tmp_path / "journal"), ledger=one, answer_after_commit=False
    )
    await usage.start()
    try:
        budget = token_budget(PRICE * 2)
        assert isinstance(await one.reserve(budget, PRICE, "a"), BudgetHold)
        assert isinstance(await one.reserve(budget, PRICE, "b"), BudgetHold)
        assert isinstance(await one.reserve(budget, PRICE, "c"), BudgetRefusal)
        assert await holds(engine) == []  # nothing in the database
        await one.release("b")  # refused by a limit after all
        first = finished("a")
        one.charge(first)
        await usage.commit(first)  # answered; the row is written a little later
        assert isinstance(await one.reserve(budget, PRICE, "c"), BudgetHold)
        assert isinstance(await one.reserve(budget, PRICE, "d"), BudgetRefusal)
        await usage.flush()
        assert await one.spent("token", "tok_1", "day") == pytest.approx(PRICE)
    finally:
        await usage.close()
    restarted = ledger(engine, shared=False)
    await restarted.load()
    assert await restarted.spent("token", "tok_1", "month") == pytest.approx(PRICE)
    # The hold of "c" died with its process: only the spend counts now.
    assert isinstance(await restarted.reserve(budget, PRICE, "e"), BudgetHold)
    assert isinstance(await restarted.reserve(budget, PRICE, "f"), BudgetRefusal)


@pytest.fixture
async def pg_engine(postgres_server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """PostgreSQL alone: SQLite has one writer at a time, so no lock order to get wrong."""
    url = await postgres_server.create_database()
    opened = await open_engine(url)
    yield opened
    await opened.dispose()
    await postgres_server.drop_database(url)


async def test_a_check_creating_a_teams_rows_never_deadlocks_with_the_usage_writer(pg_engine):
    engine = pg_engine
    # The token has spend rows, its team none yet. The usage writer has
    # upserted the team's rows (they sort first) and is about to do the
    # token's; a check locking the token's rows and then creating the team's
    # would wait on the writer while the writer waits on it.
    one = ledger(engine)
    sql = one._sql
    now = time.time()
    day, month = (time.strftime(f, time.gmtime(now)) for f in ("%Y-%m-%d", "%Y-%m"))

    def spend(scope: str, owner: str, period: str) -> object:
        return sql.add_spend.values(
            {"scope": scope, "owner": owner, "period": period, "spent": 0.04}
        )

    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            sql.add_spend.sql, [spend("token", "tok_1", p) for p in (month, day)]
        )
    writer = await engine.connect()
    try:
        await writer.begin()
        for period in sorted((day, month)):
            await writer.exec_driver_sql(sql.add_spend.sql, spend("team", "team_1", period))
        owners = [
            ("token", "tok_1", Budgets(per_day_usd=10.0)),
            ("team", "team_1", Budgets(per_day_usd=10.0)),
        ]
        check = asyncio.create_task(one.reserve(owners, PRICE, "r"))
        await asyncio.sleep(0.3)  # the check is now waiting for the writer
        for period in sorted((day, month)):
            await writer.exec_driver_sql(sql.add_spend.sql, spend("token", "tok_1", period))
        await writer.commit()
        assert isinstance(await asyncio.wait_for(check, 30), BudgetHold)
    finally:
        await writer.close()
