"""Teams and per-token policies in the database, served from an in-memory snapshot.

The hot path reads a snapshot of every team and token policy (dict lookups);
it is reloaded when older than `cache_seconds`, so changes made by another
process (the CLI) take effect within that time, and at once for changes made
through this store. A token created since the snapshot was loaded (by another
process) is never taken for one without a policy: the snapshot knows which
tokens existed when it was loaded, and one asked for a token it never saw is
reloaded first (`snapshot(knowing=…)`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aqueduct_grpc.accounting.policy import (
    KEEP,
    Budgets,
    Limits,
    PolicyPatch,
    TeamPolicy,
    TokenPolicy,
    parse_budgets,
    parse_limits,
)
from aqueduct_grpc.auth.tokens import TokenNotFound
from aqueduct_grpc.errors import GatewayError, invalid_argument, quoted
from aqueduct_grpc.storage.changes import bump
from aqueduct_grpc.storage.database import (
    stored_name,
    teams_table,
    token_policies_table,
    tokens_table,
)

__all__ = ["PolicySnapshot", "PolicyStore", "TeamExists", "TeamNotFound", "check_policy"]


class TeamNotFound(GatewayError):
    """No team has that id or name."""

    def __init__(self, message: str) -> None:
        """Creates the TeamNotFound.

        Args:
            message: which id or name was not found.
        """
        super().__init__(grpc.StatusCode.NOT_FOUND, message, reason="NOT_FOUND", param="team")


class TeamExists(GatewayError):
    """A team with that name exists already."""

    def __init__(self, message: str) -> None:
        """Creates the TeamExists.

        Args:
            message: which name is taken.
        """
        super().__init__(
            grpc.StatusCode.ALREADY_EXISTS, message, reason="TEAM_EXISTS", param="name"
        )


@dataclass(frozen=True)
class PolicySnapshot:
    """Every team and token policy at one moment, and which tokens existed then."""

    teams: dict[str, TeamPolicy] = field(default_factory=dict)
    tokens: dict[str, TokenPolicy] = field(default_factory=dict)
    # Every token id in the database at that moment: a token in here without a
    # policy row has the defaults; one not in here was not loaded yet.
    token_ids: frozenset[str] = frozenset()

    def knows(self, token_id: str) -> bool:
        """Whether the token existed when the snapshot was loaded."""
        return token_id in self.token_ids or token_id in self.tokens

    def token(self, token_id: str) -> TokenPolicy:
        """The token's policy (the defaults when it has none).

        Only meaningful for a token the snapshot `knows`: get the snapshot
        with `PolicyStore.snapshot(knowing=[token_id])`.
        """
        return self.tokens.get(token_id) or TokenPolicy(token_id=token_id)

    def team(self, team_id: str | None) -> TeamPolicy | None:
        """The team, if there is one."""
        return None if team_id is None else self.teams.get(team_id)


class PolicyStore:
    """Reads and writes teams and token policies."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Creates the PolicyStore.

        Args:
            engine: the database.
            cache_seconds: how long a snapshot is reused.
            clock: monotonic seconds (tests pass their own).
        """
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._snapshot = PolicySnapshot()
        self._fresh_until = float("-inf")
        self._loading: asyncio.Future[PolicySnapshot] | None = None
        # Bumped by every change made here: a load that overlapped a change
        # must not mark its (possibly older) snapshot fresh.
        self._generation = 0
        self._loading_generation = 0
        # Loads started so far, and the ordinal of the one in flight: a load
        # that started after a moment sees every token that existed then.
        self._loads_started = 0
        self._loading_ordinal = 0

    @property
    def latest(self) -> PolicySnapshot:
        """The last snapshot loaded, without waiting (for bookkeeping after a request)."""
        return self._snapshot

    async def snapshot(self, *, knowing: Collection[str] = ()) -> PolicySnapshot:
        """A snapshot at most `cache_seconds` old that knows every token in `knowing`.

        Args:
            knowing: ids of tokens whose policies the caller will read. One the
                snapshot never saw (created since, e.g. by the CLI) makes it
                reload before it answers, so the token runs with its own
                policy at once, never with the defaults.
        """
        if self._clock() < self._fresh_until:
            snapshot = self._snapshot
        else:
            snapshot = await asyncio.shield(self._shared_load())
        # Every load that starts from here on sees every token that exists now.
        mark = self._loads_started
        while not all(snapshot.knows(token_id) for token_id in knowing):
            # Concurrent calls for new tokens share one load. One that was
            # already running may predate the token: then another follows.
            loading = self._shared_load()
            ordinal = self._loading_ordinal
            snapshot = await asyncio.shield(loading)
            if ordinal > mark:
                break  # loaded since we looked: a token still unknown does not exist
        return snapshot

    def _shared_load(self) -> asyncio.Future[PolicySnapshot]:
        """The load in flight, or a new one.

        One load at a time: a burst of calls waits for the same query. A load
        that began before the latest change made here is not reused.
        """
        if self._loading is None or self._loading_generation != self._generation:
            loading = asyncio.ensure_future(self._load())
            self._loads_started += 1
            self._loading, self._loading_generation = loading, self._generation
            self._loading_ordinal = self._loads_started
            loading.add_done_callback(self._loaded)
        return self._loading

    def _loaded(self, loading: asyncio.Future[PolicySnapshot]) -> None:
        if self._loading is loading:
            self._loading = None

    async def _load(self) -> PolicySnapshot:
        started = self._clock()
        generation = self._generation
        async with self._engine.connect() as connection:
            # Token ids first: a token created between the two reads is then
            # unknown to this snapshot (and reloaded when asked for), never
            # known without its policy.
            token_ids = frozenset(await connection.scalars(sa.select(tokens_table.c.id)))
            teams = {t.id: t for t in await _teams(connection)}
            rows = await connection.execute(token_policies_table.select())
            tokens = {row.token_id: _token_policy(row) for row in rows}
        snapshot = PolicySnapshot(teams=teams, tokens=tokens, token_ids=token_ids)
        if generation == self._generation:  # else a change overlapped: not current
            self._snapshot = snapshot
            self._fresh_until = started + self._cache_seconds
        return snapshot

    def forget_cached(self) -> None:
        """Drops the snapshot (another process changed policies): the next read reloads."""
        self._invalidate()

    def _invalidate(self) -> None:
        self._generation += 1
        self._fresh_until = float("-inf")

    async def create_team(
        self, name: str, *, limits: Limits | None = None, budgets: Budgets | None = None
    ) -> TeamPolicy:
        """Creates a team; raises TeamExists when the name is taken."""
        limits = limits or Limits()
        budgets = budgets or Budgets()
        check_policy(limits, budgets)
        name = stored_name(name, "team")
        team = TeamPolicy(
            id="team_" + secrets.token_hex(8),
            name=name,
            created_at=time.time(),
            limits=limits,
            budgets=budgets,
        )
        async with self._engine.begin() as connection:
            taken = await connection.scalar(
                sa.select(teams_table.c.id).where(teams_table.c.name == team.name)
            )
            if taken is not None:
                raise TeamExists(f"a team named {quoted(team.name)} exists already")
            await connection.execute(
                teams_table.insert().values(
                    id=team.id,
                    name=team.name,
                    created_at=team.created_at,
                    limits=limits.as_dict(),
                    budgets=budgets.as_dict(),
                )
            )
            await bump(connection)
        self._invalidate()
        return team

    async def list_teams(self) -> list[TeamPolicy]:
        """Every team, oldest first."""
        async with self._engine.connect() as connection:
            return await _teams(connection)

    async def find_team(self, id_or_name: str) -> TeamPolicy:
        """The team with that id or name; raises TeamNotFound."""
        async with self._engine.connect() as connection:
            return await _find_team(connection, id_or_name)

    async def set_team_policy(
        self, id_or_name: str, *, limits: Limits, budgets: Budgets
    ) -> TeamPolicy:
        """Replaces a team's limits and budgets."""
        check_policy(limits, budgets)
        team = await self.find_team(id_or_name)
        async with self._engine.begin() as connection:
            await connection.execute(
                teams_table.update()
                .where(teams_table.c.id == team.id)
                .values(limits=limits.as_dict(), budgets=budgets.as_dict())
            )
            await bump(connection)
        self._invalidate()
        return TeamPolicy(team.id, team.name, team.created_at, limits, budgets)

    async def update_team_policy(self, id_or_name: str, patch: PolicyPatch) -> TeamPolicy:
        """Changes the limits and budgets a patch names, keeping the others; returns the team.

        Read and written in one transaction that first takes the change
        counter's lock, so two updates of different fields never undo each other.
        """
        async with self._engine.begin() as connection:
            await bump(connection)  # first: concurrent changes wait here, then read this one
            team = await _find_team(connection, id_or_name)
            limits, budgets = patch.limits_over(team.limits), patch.budgets_over(team.budgets)
            check_policy(limits, budgets)
            await connection.execute(
                teams_table.update()
                .where(teams_table.c.id == team.id)
                .values(limits=limits.as_dict(), budgets=budgets.as_dict())
            )
        self._invalidate()
        return TeamPolicy(team.id, team.name, team.created_at, limits, budgets)

    async def update_token_policy(self, token_id: str, patch: PolicyPatch) -> TokenPolicy:
        """Changes the parts of a token's policy a patch names, keeping the others.

        Read and written in one transaction, as `update_team_policy`. A team
        named by the patch is found by id or name (TeamNotFound otherwise).
        """
        async with self._engine.begin() as connection:
            await bump(connection)  # first: concurrent changes wait here, then read this one
            exists = await connection.scalar(
                sa.select(tokens_table.c.id).where(tokens_table.c.id == token_id)
            )
            if exists is None:
                raise TokenNotFound(f"no token has id {quoted(token_id)}")
            row = (
                await connection.execute(
                    token_policies_table.select().where(token_policies_table.c.token_id == token_id)
                )
            ).first()
            current = TokenPolicy(token_id=token_id) if row is None else _token_policy(row)
            team_id = current.team_id
            if patch.team is None:
                team_id = None
            elif patch.team is not KEEP:
                team_id = (await _find_team(connection, patch.team)).id
            policy = TokenPolicy(
                token_id=token_id,
                team_id=team_id,
                admin=current.admin if patch.admin is KEEP else patch.admin,
                limits=patch.limits_over(current.limits),
                budgets=patch.budgets_over(current.budgets),
            )
            check_policy(policy.limits, policy.budgets)
            await _store_token_policy(connection, policy, exists=row is not None)
        self._invalidate()
        return policy

    async def token_policy(self, token_id: str) -> TokenPolicy:
        """The token's stored policy (defaults when it has none)."""
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    token_policies_table.select().where(token_policies_table.c.token_id == token_id)
                )
            ).first()
        return TokenPolicy(token_id=token_id) if row is None else _token_policy(row)

    async def set_token_policy(self, policy: TokenPolicy) -> TokenPolicy:
        """Stores a token's whole policy (team id, admin scope, overrides)."""
        check_policy(policy.limits, policy.budgets)
        async with self._engine.begin() as connection:
            exists = await connection.scalar(
                sa.select(tokens_table.c.id).where(tokens_table.c.id == policy.token_id)
            )
            if exists is None:
                raise TokenNotFound(f"no token has id {policy.token_id!r}")
            await _store_token_policy(connection, policy, exists=None)
            await bump(connection)
        self._invalidate()
        return policy


def check_policy(limits: Limits, budgets: Budgets) -> None:
    """Refuses values that loading would refuse (negative, NaN): raises INVALID_ARGUMENT.

    Checked on the way in, so a bad value never reaches the database, where it
    would make every later load of the policies fail.
    """
    for parse, values, name in (
        (parse_limits, limits.as_dict(), "limits"),
        (parse_budgets, budgets.as_dict(), "budgets"),
    ):
        try:
            parse(values, name)
        except ValueError as error:
            raise invalid_argument(str(error), name) from None


async def _store_token_policy(
    connection: AsyncConnection, policy: TokenPolicy, *, exists: bool | None
) -> None:
    """Writes a token's policy row (`exists`: whether it has one; None: not known)."""
    values = {
        "team_id": policy.team_id,
        "admin": policy.admin,
        "limits": policy.limits.as_dict(),
        "budgets": policy.budgets.as_dict(),
    }
    if exists is not False:
        updated = await connection.execute(
            token_policies_table.update()
            .where(token_policies_table.c.token_id == policy.token_id)
            .values(**values)
        )
        if updated.rowcount:
            return
    await connection.execute(
        token_policies_table.insert().values(token_id=policy.token_id, **values)
    )


async def _find_team(connection: AsyncConnection, id_or_name: str) -> TeamPolicy:
    """The team with that id or name; raises TeamNotFound."""
    for team in await _teams(connection):
        if id_or_name in (team.id, team.name):
            return team
    raise TeamNotFound(f"no team has id or name {quoted(id_or_name)}")


async def _teams(connection: AsyncConnection) -> list[TeamPolicy]:
    rows = await connection.execute(teams_table.select().order_by(teams_table.c.created_at))
    return [
        TeamPolicy(
            id=row.id,
            name=row.name,
            created_at=row.created_at,
            limits=parse_limits(row.limits, "teams.limits"),
            budgets=parse_budgets(row.budgets, "teams.budgets"),
        )
        for row in rows
    ]


def _token_policy(row: sa.Row) -> TokenPolicy:  # type: ignore[type-arg]
    return TokenPolicy(
        token_id=row.token_id,
        team_id=row.team_id,
        admin=bool(row.admin),
        limits=parse_limits(row.limits, "token_policies.limits"),
        budgets=parse_budgets(row.budgets, "token_policies.budgets"),
    )
