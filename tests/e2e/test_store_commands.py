"""`tokens` and `teams` commands on a real database: set-policy changes only what it is told."""

from __future__ import annotations

import asyncio

import pytest

from aqueduct_grpc.cli import commands as cli
from aqueduct_grpc.storage.database import open_engine, tokens_table


class Cli:
    """Runs `aqueduct-grpc` on one database; returns what it printed."""

    def __init__(self, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.database_url = database_url
        self.capsys = capsys
        self.err = ""

    async def __call__(self, *argv: str) -> str:
        await asyncio.to_thread(cli.main, [*argv, "--database-url", self.database_url], environ={})
        out, self.err = self.capsys.readouterr()
        return out

    async def refused(self, *argv: str) -> str:
        """The error line of a command that fails (exit 1)."""
        with pytest.raises(SystemExit) as exited:
            await self(*argv)
        err = self.capsys.readouterr().err
        assert exited.value.code != 0 and "Traceback" not in err
        return str(exited.value.code)


@pytest.fixture
def run(database_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(database_url, capsys)


async def test_set_policy_changes_only_the_flags_given(run: Cli):
    await run("teams", "create", "--name", "design")
    await run(
        "tokens", "create", "--name", "alice", "--team", "design", "--admin",
        "--requests-per-minute", "10", "--images-per-day", "5", "--budget-per-month-usd", "100",
    )  # fmt: skip
    token_id = (await run("tokens", "list")).splitlines()[1].split()[0]
    team_id = (await run("teams", "list")).splitlines()[1].split()[0]
    # A budget set: the limits, the other budget, the team and admin scope stay.
    out = await run("tokens", "set-policy", "alice", "--budget-per-day-usd", "5")
    assert out.splitlines() == [
        f"updated {token_id} (alice)",
        f"  team:    design ({team_id})",
        "  admin:   yes",
        "  limits:  requests_per_minute=10, images_per_day=5",
        "  budgets: per_day_usd=5, per_month_usd=100",
    ]
    # "none" drops one value; --no-team and --no-admin take those away.
    out = await run(
        "tokens", "set-policy", token_id, "--images-per-day", "none", "--no-team", "--no-admin",
        "--budget-per-month-usd", "none",
    )  # fmt: skip
    assert out.splitlines()[1:] == [
        "  team:    -",
        "  admin:   no",
        "  limits:  requests_per_minute=10",
        "  budgets: per_day_usd=5",
    ]
    out = await run("tokens", "set-policy", "alice", "--team", team_id)
    assert out.splitlines()[1] == f"  team:    design ({team_id})"
    assert out.splitlines()[3:] == ["  limits:  requests_per_minute=10", "  budgets: per_day_usd=5"]


async def test_team_set_policy_changes_only_the_flags_given(run: Cli):
    await run("teams", "create", "--name", "ops", "--images-per-day", "500")
    out = await run("teams", "set-policy", "ops", "--budget-per-month-usd", "50")
    assert out.splitlines()[1:] == ["  limits:  images_per_day=500", "  budgets: per_month_usd=50"]
    out = await run("teams", "set-policy", "ops", "--images-per-day", "none")
    assert out.splitlines()[1:] == ["  limits:  none", "  budgets: per_month_usd=50"]
    listed = (await run("teams", "list")).splitlines()
    assert listed[1].split()[1:] == ["ops", "-", "per_month_usd=50"]


async def test_tokens_list_shows_team_names(run: Cli):
    await run("teams", "create", "--name", "design")
    await run("tokens", "create", "--name", "bob", "--team", "design")
    await run("tokens", "create", "--name", "carol")
    rows = [line.split() for line in (await run("tokens", "list")).splitlines()]
    assert rows[0][-2:] == ["TEAM", "ADMIN"]
    assert {row[1]: row[-2] for row in rows[1:]} == {"bob": "design", "carol": "-"}


async def test_a_taken_token_name_is_refused(run: Cli):
    await run("tokens", "create", "--name", "dave")
    message = await run.refused("tokens", "create", "--name", "dave")
    assert message.startswith("aqueduct-grpc: a token named 'dave' exists already (tok_")
    assert message.endswith("token names are unique: choose another")
    assert len((await run("tokens", "list")).splitlines()) == 2  # the header and one token


async def test_names_shared_from_before_are_listed_and_refused_by_name(run: Cli):
    engine = await open_engine(run.database_url)
    async with engine.begin() as connection:
        await connection.execute(
            tokens_table.insert(),
            [
                {"id": f"tok_old{n}", "name": "twin", "secret_hash": f"{n:064x}",
                 "created_at": float(n)}
                for n in (1, 2)
            ],
        )  # fmt: skip
    await engine.dispose()
    listed = await run("tokens", "list")
    assert [line.split()[:2] for line in listed.splitlines()[1:]] == [
        ["tok_old1", "twin"],
        ["tok_old2", "twin"],
    ]
    assert run.err.splitlines()[-1] == (
        "note: 2 tokens are named 'twin' (made before names were unique): name them by id in"
        " revoke and set-policy"
    )
    message = await run.refused("tokens", "set-policy", "twin", "--images-per-day", "1")
    assert "several tokens are named 'twin' (tok_old1, tok_old2" in message
    out = await run("tokens", "set-policy", "tok_old2", "--images-per-day", "1")
    assert out.splitlines()[0] == "updated tok_old2 (twin)"
    assert (await run("tokens", "revoke", "tok_old1")).strip() == "revoked tok_old1 (twin)"
