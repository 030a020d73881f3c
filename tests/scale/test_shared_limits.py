"""Rate limits shared by replicas through a real Redis: exact, all or none, fail closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import grpc
import pytest
from aiohttp import web

from aqueduct.images.v1 import images_pb2_grpc
from aqueduct_grpc.accounting.policy import Limits
from aqueduct_grpc.accounting.rate_limits import Charge, RateLimiter
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.server import open_core, start_grpc_server
from aqueduct_grpc.testing.fake_upstream import FakeUpstream
from gateway_http import DoorRunner, create_app
from tests.accounting import grpc_generate, priced_config, token_with
from tests.servers import RedisServer


class RestartableRedis(RedisServer):
    """A Redis of this test's own, which can be stopped and started again on its port."""

    def halt(self) -> None:
        """Stops the process; the port and folder stay for `resume`."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait()

    def resume(self) -> None:
        """Starts a new, empty Redis on the same port."""
        self._start()


def requests_charge(owner: str = "tok_1", limit: int = 100) -> Charge:
    return Charge("token", owner, "requests_per_minute", limit, 1.0)


async def test_two_limiters_on_one_redis_admit_exactly_the_limit(redis_server):
    url = await redis_server.emptied()
    replicas = [RateLimiter(url), RateLimiter(url)]
    try:
        results = await asyncio.gather(
            *(replicas[i % 2].acquire([requests_charge()]) for i in range(400))
        )
    finally:
        for limiter in replicas:
            await limiter.aclose()
    refusals = [r for r in results if r is not None]
    assert len(results) - len(refusals) == 100
    assert len(refusals) == 300
    assert all(0 < r.retry_after <= 60 for r in refusals)


async def test_a_stopped_redis_fails_closed_then_recovers(caplog):
    with RestartableRedis() as server:
        limiter = RateLimiter(server.url)
        try:
            assert await limiter.acquire([requests_charge(limit=5)]) is None
            server.halt()
            with caplog.at_level(logging.WARNING, logger="aqueduct_grpc.accounting.rate_limits"):
                for _ in range(3):
                    with pytest.raises(GatewayError) as caught:
                        await limiter.acquire([requests_charge(limit=5)])
                    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
                    assert caught.value.reason == "RATE_LIMITS_UNAVAILABLE"
                    assert caught.value.retry_after is not None
                # One line for the outage, naming where Redis is; not one per request.
                down = [r for r in caplog.records if "failed" in r.getMessage()]
                assert len(down) == 1
                assert f"127.0.0.1:{server.port}/0" in down[0].getMessage()
                server.resume()
                # Back (empty: it keeps nothing on disk), on pooled connections the
                # stop broke, and without the script it had cached.
                assert await limiter.acquire([requests_charge(limit=5)]) is None
                assert any("answers again" in r.getMessage() for r in caplog.records)
        finally:
            await limiter.aclose()


async def test_the_outage_log_never_shows_a_password(caplog):
    with RestartableRedis() as server:
        server.halt()
        limiter = RateLimiter(f"redis://:hunter2@127.0.0.1:{server.port}/0")
        try:
            with pytest.raises(GatewayError):
                await limiter.acquire([requests_charge()])
        finally:
            await limiter.aclose()
    assert caplog.records and "hunter2" not in caplog.text
    assert f"127.0.0.1:{server.port}/0" in caplog.text


async def test_two_cores_on_one_redis_admit_exactly_the_limit(
    redis_server, database_url, upstream: FakeUpstream
):
    url = await redis_server.emptied()
    config = priced_config(upstream, limits={"storage": url})
    async with contextlib.AsyncExitStack() as stack:
        stubs, secret = [], ""
        for _ in range(2):
            core = await stack.enter_async_context(open_core(config, database_url=database_url))
            stack.push_async_callback(core.limiter.aclose)
            if not secret:
                secret = await token_with(core, "shared", limits=Limits(requests_per_minute=100))
            server = await start_grpc_server(core)
            stack.push_async_callback(server.stop, 0)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            stack.push_async_callback(channel.close)
            stubs.append(images_pb2_grpc.ImageServiceStub(channel))
        codes = await asyncio.gather(*(grpc_generate(stubs[i % 2], secret) for i in range(400)))
    assert codes.count(grpc.StatusCode.OK) == 100
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 300
    assert upstream.request_count == 100


async def test_a_core_whose_redis_is_down_answers_unavailable_not_internal(
    database_url, upstream: FakeUpstream
):
    with RestartableRedis() as redis_server:
        config = priced_config(upstream, limits={"storage": redis_server.url})
        async with open_core(config, database_url=database_url) as core:
            secret = await token_with(core, "down", limits=Limits(requests_per_minute=5))
            server = await start_grpc_server(core)
            runner = DoorRunner(
                create_app(grpc_target=f"127.0.0.1:{server.port}", proto_packages=["aqueduct"])
            )
            try:
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                redis_server.halt()
                async with (
                    grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
                    aiohttp.ClientSession() as session,
                ):
                    stub = images_pb2_grpc.ImageServiceStub(channel)
                    assert await grpc_generate(stub, secret) == grpc.StatusCode.UNAVAILABLE
                    async with session.post(
                        f"http://127.0.0.1:{site.port}/v1/images/generations",
                        json={"prompt": "x", "model": "gpt-image-1"},
                        headers={"Authorization": f"Bearer {secret}"},
                    ) as response:
                        assert response.status == 503
                        assert (await response.json())["error"]["type"] == "server_error"
                    redis_server.resume()
                    assert await grpc_generate(stub, secret) == grpc.StatusCode.OK
            finally:
                await runner.cleanup()
                await server.stop(0)
                await core.limiter.aclose()
    assert upstream.request_count == 1  # nothing reached the upstream unchecked
