"""The usage journal and group commit: no crash loses a request, none is counted twice."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.accounting.budgets import BudgetLedger
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.pricing import PriceTable
from aqueduct_grpc.accounting.usage_journal import INTERRUPTED, UsageJournal
from aqueduct_grpc.accounting.usage_log import UsageLog, _refused
from aqueduct_grpc.accounting.usage_record import UsageRecord
from aqueduct_grpc.storage.database import open_engine, sqlite_url, usage_table


def row(**fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "created_at": time.time(),
        "token_id": "tok_1",
        "requested_model": "m",
        **fields,
    }
    return UsageRecord(**values)  # type: ignore[arg-type]


def usage_log(engine: AsyncEngine, folder: pathlib.Path) -> UsageLog:
    """A UsageLog that answers after commit, journaling in `folder/journal`."""
    ledger = BudgetLedger(
        engine, PriceTable([]), PolicyStore(engine), shared=False, hold_seconds=600
    )
    return UsageLog(
        engine, UsageJournal(folder / "journal"), ledger=ledger, answer_after_commit=True
    )


def die_after(folder: pathlib.Path, script: str) -> None:
    """Runs `script` in a process with a journal `j` open in `folder`, then SIGKILLs it."""
    program = (
        textwrap.dedent(
            f"""
        import os, signal, time
        from aqueduct_grpc.accounting.usage_journal import UsageJournal
        from aqueduct_grpc.accounting.usage_record import UsageRecord
        j = UsageJournal({str(folder)!r})
        j.open()
        """
        )
        + textwrap.dedent(script)
        + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr.decode()


def test_a_killed_process_leaves_what_it_owed(tmp_path: pathlib.Path):
    die_after(
        tmp_path,
        """
        def row(key, **f):
            return UsageRecord(created_at=1.0, token_id="tok_1", requested_model="m",
                               request_key=key, **f)
        admitted = row("a", n=2)
        j.started(admitted)
        admitted.model = "priced"
        j.admitted(admitted, team_id="team_1", estimate=0.08)
        j.started(row("b"))               # in flight, not yet admitted
        done = row("c", images=1)
        j.started(done)
        j.spilled(done)                   # finished, but the database was down
        os.write(j._fd, b'{"start": {"created_')  # a line cut short by the kill
        """,
    )
    survivor = UsageJournal(tmp_path)
    survivor.open()
    [claimed] = list(survivor.claim_dead())
    rows = {r.request_key: r for r in claimed.rows()}
    assert set(rows) == {"a", "b", "c"}
    assert (rows["a"].status, rows["a"].model, rows["a"].team_id, rows["a"].cost) == (
        INTERRUPTED,
        "priced",
        "team_1",
        0.08,
    )
    assert (rows["b"].status, rows["b"].cost) == (INTERRUPTED, None)
    assert (rows["c"].status, rows["c"].images) == ("OK", 1)
    claimed.remove()
    assert list(survivor.claim_dead()) == []
    survivor.close()
    assert list(tmp_path.iterdir()) == []  # nothing owed, nothing left


def test_rows_without_a_model_or_a_token_are_recovered_too(tmp_path: pathlib.Path):
    # A request for the default model has no requested_model, and journal lines
    # leave None out: recovery once failed on them, and then on the whole journal.
    die_after(
        tmp_path,
        """
        j.started(UsageRecord(created_at=1.0, token_id=None, requested_model=None,
                              request_key="open", operation="list_models"))
        done = UsageRecord(created_at=1.0, token_id="tok_1", requested_model=None,
                           request_key="done", images=1)
        j.started(done)
        j.spilled(done)
        """,
    )
    survivor = UsageJournal(tmp_path)
    survivor.open()
    [claimed] = list(survivor.claim_dead())
    rows = {r.request_key: r for r in claimed.rows()}
    assert (rows["open"].status, rows["open"].requested_model, rows["open"].token_id) == (
        INTERRUPTED,
        None,
        None,
    )
    assert (rows["done"].status, rows["done"].images, rows["done"].requested_model) == (
        "OK",
        1,
        None,
    )
    claimed.remove()
    survivor.close()


def test_a_live_process_journal_is_not_claimed(tmp_path: pathlib.Path):
    live = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from aqueduct_grpc.accounting.usage_journal import UsageJournal\n"
            f"j = UsageJournal({str(tmp_path)!r}); j.open(); print('open', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with live:  # closes its pipes
        try:
            assert live.stdout is not None and live.stdout.readline() == "open\n"
            other = UsageJournal(tmp_path)
            other.open()
            assert list(other.claim_dead()) == []
            other.close()
        finally:
            live.kill()
            live.wait()
    # Once it is gone, its (empty) journal is claimable.
    other = UsageJournal(tmp_path)
    other.open()
    claims = list(other.claim_dead())
    assert len(claims) == 1 and claims[0].rows() == []
    claims[0].remove()
    other.close()


async def test_recovery_writes_each_row_exactly_once(tmp_path: pathlib.Path):
    engine = await open_engine(sqlite_url(tmp_path / "db"))
    try:
        # "x" was committed just before the crash; "y" was still in flight.
        async with engine.begin() as connection:
            await connection.execute(
                usage_table.insert().values(
                    created_at=1.0,
                    token_id="tok_1",
                    requested_model="m",
                    status="OK",
                    latency_ms=1.0,
                    images=1,
                    request_key="x",
                )
            )
        die_after(
            tmp_path / "journal",
            """
            for key in ("x", "y"):
                j.started(UsageRecord(created_at=1.0, token_id="tok_1", requested_model="m",
                                      request_key=key))
            """,
        )
        usage = usage_log(engine, tmp_path)
        await usage.start()  # recovers at start
        assert await usage.recover() == 0  # and never twice
        await usage.close()
        async with engine.connect() as connection:
            found = (
                await connection.execute(
                    sa.select(usage_table.c.request_key, usage_table.c.status).order_by(
                        usage_table.c.request_key
                    )
                )
            ).all()
        assert [tuple(r) for r in found] == [("x", "OK"), ("y", INTERRUPTED)]
    finally:
        await engine.dispose()


async def test_one_refused_row_does_not_take_the_batch_with_it(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
):
    engine = await open_engine(sqlite_url(tmp_path / "db"))
    usage = usage_log(engine, tmp_path)
    await usage.start()
    try:
        await usage.commit(row(request_key="taken"))
        # Handed over together, so they share one transaction, which the
        # duplicate key makes the database refuse.
        batch = [row(request_key=f"k{i}") for i in range(5)] + [row(request_key="taken")]
        for r in batch:
            usage.begin(r)
        await asyncio.gather(*(usage.commit(r) for r in batch))
        async with engine.connect() as connection:
            keys = (await connection.execute(sa.select(usage_table.c.request_key))).scalars()
            assert sorted(keys) == sorted(["taken", "k0", "k1", "k2", "k3", "k4"])
        assert "the database refused a usage row" in caplog.text
    finally:
        await usage.close()
        await engine.dispose()


async def test_a_value_the_database_refuses_costs_only_its_own_row(
    tmp_path: pathlib.Path, database_url: str
):
    # PostgreSQL refuses a string past its column (asyncpg: a plain DBAPIError);
    # SQLite takes it. Either way the other rows of the batch are written.
    engine = await open_engine(database_url)
    usage = usage_log(engine, tmp_path)
    await usage.start()
    try:
        good = [row(request_key=f"g{i}") for i in range(5)]
        bad = row(request_key="bad", end_user="u" * 300)
        await asyncio.gather(*(usage.commit(r) for r in [*good, bad]))
        async with engine.connect() as connection:
            keys = set((await connection.execute(sa.select(usage_table.c.request_key))).scalars())
        assert {r.request_key for r in good} <= keys
        assert usage.owed == 0  # nothing left waiting in the journal
    finally:
        await usage.close()
        await engine.dispose()


def test_a_row_waiting_for_the_database_is_journaled_once(tmp_path: pathlib.Path):
    journal = UsageJournal(tmp_path)
    journal.open()
    waiting = row(request_key="w")
    journal.started(waiting)
    journal.ended(waiting)
    for _ in range(3):  # the database refuses it at each retry
        journal.spilled(waiting)
    [path] = tmp_path.glob("*.jsonl")
    assert path.read_text().count('"row"') == 1
    journal.finished(waiting)
    journal.close()


@pytest.mark.parametrize(
    ("sqlstate", "for_good"),
    [
        ("22001", True),  # string too long for its column
        ("23505", True),  # unique violation
        ("42703", True),  # no such column
        ("40P01", False),  # deadlock: the next try may well pass
        ("53300", False),  # too many connections
        ("55P03", False),  # lock not available
        ("57P01", False),  # the server is shutting down
    ],
)
def test_only_errors_about_the_data_drop_a_row(sqlstate: str, for_good: bool):
    # asyncpg's errors reach SQLAlchemy as one DBAPIError class whatever
    # happened; the SQLSTATE it carries says whether a retry can succeed.
    class DriverError(Exception):
        def __init__(self) -> None:
            super().__init__("from the server")
            self.sqlstate = sqlstate

    error = sa.exc.DBAPIError("INSERT ...", None, DriverError())
    assert _refused(error) is for_good
