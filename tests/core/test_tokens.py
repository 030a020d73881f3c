"""TokenStore on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct_grpc.auth.tokens import Token, TokenExists, TokenNotFound, TokenStore
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.storage.database import open_engine, tokens_table


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    opened = await open_engine(database_url)
    yield opened
    await opened.dispose()


def count_token_queries(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM tokens" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    return seen


async def reason_of(store: TokenStore, authorization: str | None) -> str:
    with pytest.raises(GatewayError) as caught:
        await store.authenticate(authorization)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    return caught.value.reason


async def test_a_burst_of_uncached_calls_makes_one_query(engine):
    store = TokenStore(engine)
    token, secret = await store.create("burst")
    queries = count_token_queries(engine)
    found = await asyncio.gather(*(store.authenticate(f"Bearer {secret}") for _ in range(200)))
    assert {t.id for t in found} == {token.id}
    assert len(queries) == 1


async def test_cache_expires_after_its_ttl(engine):
    clock = Clock()
    store = TokenStore(engine, cache_seconds=5, clock=clock)
    _, secret = await store.create("ttl")
    queries = count_token_queries(engine)
    await store.authenticate(f"Bearer {secret}")
    clock.now += 4
    await store.authenticate(f"Bearer {secret}")
    assert len(queries) == 1
    clock.now += 2
    await store.authenticate(f"Bearer {secret}")
    assert len(queries) == 2


async def test_expiry_is_checked_on_every_call_even_when_cached(engine):
    clock = Clock()
    store = TokenStore(engine, cache_seconds=3600, clock=clock)
    _, secret = await store.create("expiring", expires_in=60)
    assert (await store.authenticate(f"Bearer {secret}")).name == "expiring"
    clock.now += 61
    assert await reason_of(store, f"Bearer {secret}") == "EXPIRED_API_KEY"


async def test_revocation_by_another_store_is_seen_after_the_cache_ttl(engine):
    clock = Clock()
    server, cli = TokenStore(engine, cache_seconds=5, clock=clock), TokenStore(engine, clock=clock)
    token, secret = await cli.create("shared")
    await server.authenticate(f"Bearer {secret}")
    await cli.revoke(token.id)
    await server.authenticate(f"Bearer {secret}")  # still cached
    clock.now += 6
    assert await reason_of(server, f"Bearer {secret}") == "REVOKED_API_KEY"


async def test_scheme_is_case_insensitive_and_unknown_secrets_are_refused(engine):
    store = TokenStore(engine)
    _, secret = await store.create("case")
    assert (await store.authenticate(f"bearer {secret}")).name == "case"
    assert await reason_of(store, f"Bearer {secret[:-1]}") == "INVALID_API_KEY"
    assert await reason_of(store, None) == "MISSING_API_KEY"


async def test_token_names_are_unique_revoked_ones_included(engine):
    store = TokenStore(engine)
    first, _ = await store.create("alice")
    with pytest.raises(TokenExists) as taken:
        await store.create(" alice ")  # names are stored stripped
    assert taken.value.code == grpc.StatusCode.ALREADY_EXISTS and taken.value.param == "name"
    assert taken.value.message == (
        f"a token named 'alice' exists already ({first.id}); token names are unique: choose another"
    )
    await store.revoke("alice")
    with pytest.raises(TokenExists):
        await store.create("alice")  # an old name in the usage report means one token
    assert [t.id for t in await store.list()] == [first.id]


async def test_concurrent_creates_of_one_name_make_one_token(database_url: str):
    # Two engines, as two processes (the CLI and a server) would have.
    engines = [await open_engine(database_url) for _ in range(2)]
    try:
        stores = [TokenStore(e) for e in engines]
        results = await asyncio.gather(
            *(stores[i % 2].create("racer") for i in range(12)), return_exceptions=True
        )
        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, TokenExists)]
        assert (len(made), len(refused)) == (1, 11), results
        assert [t.name for t in await stores[0].list()] == ["racer"]
    finally:
        for opened in engines:
            await opened.dispose()


async def test_names_shared_from_before_are_addressed_by_id(engine):
    # A database from before names were unique: two tokens share one.
    async with engine.begin() as connection:
        await connection.execute(
            tokens_table.insert(),
            [
                {"id": f"tok_{n}", "name": "twin", "secret_hash": f"{n:064x}",
                 "created_at": float(n)}
                for n in (1, 2)
            ],
        )  # fmt: skip
    store = TokenStore(engine)
    for lookup in (store.find, store.revoke):
        with pytest.raises(TokenNotFound) as shared:
            await lookup("twin")
        assert shared.value.message == (
            "several tokens are named 'twin' (tok_1, tok_2, made before names were unique): "
            "name one by its id"
        )
    assert (await store.find("tok_2")).name == "twin"
    assert (await store.revoke("tok_2")).state(0) == "revoked"
    assert [t.state(0) for t in await store.list()] == ["active", "revoked"]
    with pytest.raises(TokenNotFound, match="no token has id or name 'nobody'"):
        await store.revoke("nobody")
    # PostgreSQL refuses NUL in any query: still just "no such token".
    with pytest.raises(TokenNotFound):
        await store.find("twin\x00")


@pytest.mark.parametrize(
    ("name", "expires_in"), [("  ", None), ("nul\x00name", None), ("ok", 0), ("ok", -5)]
)
async def test_create_refuses_bad_input(engine, name, expires_in):
    with pytest.raises(GatewayError) as refused:
        await TokenStore(engine).create(name, expires_in=expires_in)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.param == ("name" if expires_in is None else "expires_in_seconds")
    assert await TokenStore(engine).list() == []  # nothing half-made


async def test_a_lookup_that_overlapped_a_change_is_not_cached(engine, monkeypatch):
    # Store `a` reads the token, then (before its answer is cached) another
    # store revokes it and `a` is told something changed: what it read must
    # not be reused.
    a, other = TokenStore(engine, cache_seconds=3600), TokenStore(engine)
    token, secret = await a.create("racing")
    read, go_on = asyncio.Event(), asyncio.Event()
    find = a._find

    async def find_then_pause(digest: str) -> Token | None:
        found = await find(digest)
        read.set()
        await go_on.wait()
        return found

    monkeypatch.setattr(a, "_find", find_then_pause)
    first = asyncio.ensure_future(a.authenticate(f"Bearer {secret}"))
    await read.wait()
    await other.revoke(token.id)
    a.forget_cached()  # what the change watcher does when it sees the revocation
    go_on.set()
    assert (await first).id == token.id  # that call began before the revocation
    monkeypatch.setattr(a, "_find", find)
    assert await reason_of(a, f"Bearer {secret}") == "REVOKED_API_KEY"
