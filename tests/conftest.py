"""Shared fixtures: real servers, a real fake upstream, a real core on port 0, tokens."""

from __future__ import annotations

import pathlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import openai
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings

from aqueduct.images.v1 import images_pb2_grpc
from aqueduct_grpc.config import GatewayConfig, parse_config
from aqueduct_grpc.server import Core, GrpcServer, open_core, start_grpc_server
from aqueduct_grpc.storage.database import sqlite_url
from aqueduct_grpc.testing.fake_upstream import FakeUpstream
from gateway_http import DoorRunner, create_app
from tests.servers import PostgresServer, RedisServer, S3Server

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak-1234567890"

# Property-based suites: bounded by default (CI), longer on demand with
# `pytest --hypothesis-profile=long`. No deadline: examples go through real
# servers, whose timing is not what these tests are about.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=2000)
settings.load_profile("ci")


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def router_config(upstream: FakeUpstream) -> dict[str, Any]:
    """A LiteLLM-style router config like an Aqueduct deployment's, pointing at `upstream`."""
    return {
        "model_list": [
            {
                "model_name": "gpt-image-1",
                "litellm_params": {
                    "model": "openai/gpt-image-1",
                    "api_base": upstream.base_url,
                    "api_key": "os.environ/TEST_UPSTREAM_KEY",
                    "timeout": 30,
                },
                "model_info": {"mode": "image_generation", "aliases": ["house-image"]},
            },
            {
                "model_name": "forwarding-image",
                "litellm_params": {
                    "model": "openai/gpt-image-1-mini",
                    "api_base": upstream.base_url,
                    "api_key": "os.environ/TEST_UPSTREAM_KEY",
                },
                "model_info": {"mode": "image_generation", "unknown_parameters": "forward"},
            },
            {
                "model_name": "slow-image",
                "litellm_params": {
                    "model": "openai/gpt-image-1",
                    "api_base": upstream.base_url,
                    "api_key": "os.environ/TEST_UPSTREAM_KEY",
                    "timeout": 0.5,
                },
                "model_info": {"mode": "image_generation"},
            },
            {
                # Two deployments: the first refuses connections, so every
                # other call must fail over to the second.
                "model_name": "failover-image",
                "litellm_params": {
                    "model": "openai/dead",
                    "api_base": f"http://127.0.0.1:{closed_port()}/v1",
                },
                "model_info": {"mode": "image_generation"},
            },
            {
                "model_name": "failover-image",
                "litellm_params": {
                    "model": "openai/alive",
                    "api_base": upstream.base_url,
                    "api_key": "os.environ/TEST_UPSTREAM_KEY",
                },
            },
            {
                "model_name": "gpt-4o",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_key": "os.environ/TEST_UPSTREAM_KEY",
                },
                "model_info": {"mode": "chat"},
            },
            {
                "model_name": "aqueduct-demo",
                "litellm_params": {"model": "builtin/demo"},
                "model_info": {"mode": "image_generation", "aliases": ["demo"]},
            },
        ]
    }


# Real servers, one each per test run, started only when a test asks for them.
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[str]:
    """A fresh empty database: a SQLite file, or a new database on the shared PostgreSQL."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.create_database()
    yield url
    await server.drop_database(url)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def config(upstream: FakeUpstream) -> GatewayConfig:
    return parse_config(
        router_config(upstream), source="test", environ={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    )


@pytest.fixture
async def gateway(config: GatewayConfig, database_url: str) -> AsyncIterator[Core]:
    async with open_core(config, database_url=database_url) as opened:
        yield opened


@pytest.fixture
async def core(gateway: Core) -> AsyncIterator[GrpcServer]:
    server = await start_grpc_server(gateway, host="127.0.0.1", port=0)
    yield server
    await server.stop(0)


@pytest.fixture
async def channel(core: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    limit = 64 * 1024 * 1024
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{core.port}",
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    ) as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> images_pb2_grpc.ImageServiceStub:
    return images_pb2_grpc.ImageServiceStub(channel)


@pytest.fixture
async def secret(gateway: Core) -> str:
    _, value = await gateway.tokens.create("test")
    return value


@pytest.fixture
async def http_door(core: GrpcServer) -> AsyncIterator[str]:
    """The real HTTP app on a real loopback port, in front of the real core."""
    runner = DoorRunner(
        create_app(grpc_target=f"127.0.0.1:{core.port}", proto_packages=["aqueduct"])
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site.port}"
    await runner.cleanup()


@pytest.fixture
async def client(http_door: str, secret: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{http_door}/v1", api_key=secret, max_retries=0, timeout=60
    ) as sdk:
        yield sdk


def bearer(secret: str) -> list[tuple[str, str]]:
    """The gRPC metadata carrying the token."""
    return [("authorization", f"Bearer {secret}")]
