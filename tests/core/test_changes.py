"""Revocations and policy changes made anywhere hold on every core sharing the database.

Core B caches authentications and policies for an hour: only the change
counter can make it see what core A or the CLI changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from aqueduct.admin.v1 import admin_pb2, admin_pb2_grpc
from aqueduct.images.v1 import images_pb2_grpc
from aqueduct_grpc.accounting.policy import TokenPolicy
from aqueduct_grpc.cli import main as cli_main
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.server import Core, open_core, start_grpc_server
from tests.accounting import grpc_generate
from tests.conftest import bearer

SETTLE_SECONDS = 30  # a guard against hanging, not a measure: the poll runs every 0.5 s


@contextlib.asynccontextmanager
async def serving(config: GatewayConfig, url: str) -> AsyncIterator[tuple[Core, grpc.aio.Channel]]:
    async with open_core(config, database_url=url) as core:
        server = await start_grpc_server(core, port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield core, channel
        finally:
            await server.stop(0)


async def until(probe: Callable[[], Awaitable[bool]]) -> None:
    """Waits until `probe()` holds, polling every 50 ms."""
    async with asyncio.timeout(SETTLE_SECONDS):
        while not await probe():  # noqa: ASYNC110 (the probe asks another core: no event to wait on)
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("revoker", ["other core", "cli"])
async def test_a_revocation_holds_on_every_core(config, database_url, revoker):
    cached = dataclasses.replace(config, token_cache_seconds=3600.0)
    async with serving(config, database_url) as (a, _), serving(cached, database_url) as (_, b):
        token, secret = await a.tokens.create("soon-revoked")
        on_b = images_pb2_grpc.ImageServiceStub(b)
        assert await grpc_generate(on_b, secret) == grpc.StatusCode.OK  # now cached on B
        if revoker == "cli":
            await asyncio.to_thread(
                cli_main, ["tokens", "revoke", token.id, "--database-url", database_url]
            )
        else:
            await a.tokens.revoke(token.id)

        async def refused() -> bool:
            return await grpc_generate(on_b, secret) == grpc.StatusCode.UNAUTHENTICATED

        await until(refused)


async def test_a_policy_change_holds_on_every_core(config, database_url):
    cached = dataclasses.replace(config, token_cache_seconds=3600.0)
    async with serving(config, database_url) as (a, _), serving(cached, database_url) as (_, b):
        token, secret = await a.tokens.create("promoted")
        admin = admin_pb2_grpc.AdminServiceStub(b)

        async def admitted() -> bool:
            try:
                await admin.ListTeams(admin_pb2.ListTeamsRequest(), metadata=bearer(secret))
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                return False
            return True

        assert not await admitted()  # B has loaded (and caches) its policy
        await a.policies.set_token_policy(TokenPolicy(token_id=token.id, admin=True))
        await until(admitted)
