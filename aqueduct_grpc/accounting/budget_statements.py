"""The SQL of the shared budget check, compiled once for the engine's dialect.

A budget check runs on every request whose token or team has a budget, so its
statements skip SQLAlchemy's per-call work (building the expression, its
cache key, binding parameters by name): each is compiled once, per number of
budget keys (1 to 4: a token's and a team's day and month), and run with
`exec_driver_sql` and positional values, as the usage writer's INSERT is.
Building and compiling them per call cost more CPU than the rest of a request.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from aqueduct_grpc.storage.database import budget_holds_table, budget_spend_table

__all__ = ["BudgetStatements", "Compiled", "Key", "key_values"]

Key = tuple[str, str, str]  # (scope, owner id, "2026-11-25" or "2026-11")


class Compiled:
    """One statement's SQL for a dialect, and how to pass it values."""

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        """Compiles `statement` for `dialect`."""
        compiled: Any = statement.compile(dialect=dialect)  # an SQLCompiler
        self.sql = compiled.string
        self._order = compiled.positiontup if dialect.positional else None

    def values(self, named: Mapping[str, Any]) -> Any:
        """`named` in the form the driver takes for this statement."""
        if self._order is None:
            return dict(named)
        return tuple(named[name] for name in self._order)


class BudgetStatements:
    """The budget check's statements for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        """Compiles the statements that do not depend on the number of keys."""
        self._dialect = dialect
        holds, spend = budget_holds_table, budget_spend_table
        insert = _insert(dialect.name, spend)
        upsert = insert.values(
            scope=sa.bindparam("scope"),
            owner=sa.bindparam("owner"),
            period=sa.bindparam("period"),
            spent=sa.bindparam("spent"),
        )
        self.create_spend = Compiled(upsert.on_conflict_do_nothing(), dialect)
        self.add_spend = Compiled(
            upsert.on_conflict_do_update(
                index_elements=["scope", "owner", "period"],
                set_={"spent": spend.c.spent + upsert.excluded.spent},
            ),
            dialect,
        )
        self.insert_hold = Compiled(
            holds.insert().values(
                request_key=sa.bindparam("request_key"),
                scope=sa.bindparam("scope"),
                owner=sa.bindparam("owner"),
                period=sa.bindparam("period"),
                amount=sa.bindparam("amount"),
                expires_at=sa.bindparam("expires_at"),
            ),
            dialect,
        )
        self.delete_hold = Compiled(
            holds.delete().where(holds.c.request_key == sa.bindparam("request_key")), dialect
        )
        self.sweep = Compiled(
            holds.delete().where(holds.c.expires_at < sa.bindparam("now")), dialect
        )

    @functools.cache  # noqa: B019 (one instance per engine, for the process's life)
    def locked_spend(self, keys: int) -> Compiled:
        """The spend rows of `keys` keys, locked in key order until the transaction ends."""
        spend = budget_spend_table.c
        return Compiled(
            sa.select(spend.scope, spend.owner, spend.period, spend.spent)
            .where(_any_key(spend, keys))
            .order_by(spend.scope, spend.owner, spend.period)
            .with_for_update(),
            self._dialect,
        )

    @functools.cache  # noqa: B019
    def spend(self, keys: int) -> Compiled:
        """The spend rows of `keys` keys, unlocked."""
        spend = budget_spend_table.c
        return Compiled(
            sa.select(spend.scope, spend.owner, spend.period, spend.spent).where(
                _any_key(spend, keys)
            ),
            self._dialect,
        )

    @functools.cache  # noqa: B019
    def live_holds(self, keys: int) -> Compiled:
        """The sum of the live holds of each of `keys` keys."""
        holds = budget_holds_table.c
        return Compiled(
            sa.select(holds.scope, holds.owner, holds.period, sa.func.sum(holds.amount))
            .where(_any_key(holds, keys), holds.expires_at > sa.bindparam("now"))
            .group_by(holds.scope, holds.owner, holds.period),
            self._dialect,
        )


def key_values(keys: Sequence[Key], **more: Any) -> dict[str, Any]:
    """The values of `_any_key`'s parameters for `keys`, and `more`."""
    named = dict(more)
    for index, (scope, owner, period) in enumerate(keys):
        named[f"s{index}"], named[f"o{index}"], named[f"p{index}"] = scope, owner, period
    return named


def _any_key(columns: Any, keys: int) -> sa.ColumnElement[bool]:
    # ORs of the primary key's equalities: the database reads each key from
    # its index (and, unlike a tuple IN, the statement's shape is fixed).
    return sa.or_(
        *(
            sa.and_(
                columns.scope == sa.bindparam(f"s{i}"),
                columns.owner == sa.bindparam(f"o{i}"),
                columns.period == sa.bindparam(f"p{i}"),
            )
            for i in range(keys)
        )
    )


def _insert(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"no budget store for the {dialect} database")
