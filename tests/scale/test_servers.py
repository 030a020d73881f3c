"""The real servers of tests/servers.py start, answer, and leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator

import asyncpg
import boto3
import pytest
import redis.asyncio
from aiohttp import ClientSession, web

from tests import servers
from tests.servers import (
    HAProxy,
    MissingServer,
    PostgresServer,
    RedisServer,
    S3Server,
    ServerFailed,
    answers_tcp,
)


def assert_gone(server: PostgresServer | RedisServer | S3Server | HAProxy) -> None:
    """The process has exited, its port is closed and its folder removed."""
    assert not server.running
    assert not answers_tcp(server.port)
    assert not server.folder.exists()


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL in the form asyncpg takes."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def test_postgres_gives_fresh_databases_and_stops():
    with PostgresServer() as server:
        first, second = await server.create_database(), await server.create_database()
        assert first != second
        connection = await asyncpg.connect(libpq_url(first))
        try:
            assert await connection.fetchval("SELECT 1") == 1
            tables = await connection.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            assert tables == 0
        finally:
            await connection.close()
        await server.drop_database(first)
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await asyncpg.connect(libpq_url(first))
    assert_gone(server)


async def test_redis_answers_and_stops():
    with RedisServer() as server:
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            assert await client.ping()
            await client.set("key", "value")
            assert await client.get("key") == b"value"
        finally:
            await client.aclose()
    assert_gone(server)


def test_s3_keeps_an_object_and_stops():
    with S3Server() as server:
        environ = server.client_environ()
        s3 = boto3.client(
            "s3",
            endpoint_url=environ["AWS_ENDPOINT_URL"],
            aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"],
            region_name=environ["AWS_DEFAULT_REGION"],
        )
        s3.create_bucket(Bucket="images")
        s3.put_object(Bucket="images", Key="a/b.png", Body=b"\x89PNG bytes")
        assert s3.get_object(Bucket="images", Key="a/b.png")["Body"].read() == b"\x89PNG bytes"
    assert_gone(server)


async def named_backend(name: str, *, healthy: bool = True) -> web.AppRunner:
    """A tiny HTTP server on a free port that answers its name, and /healthz."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text=name)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy else 503)

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def address(runner: web.AppRunner) -> tuple[str, int]:
    host, port = runner.addresses[0][:2]
    return host, port


@pytest.fixture
async def backends() -> AsyncIterator[list[web.AppRunner]]:
    runners = [
        await named_backend("a"),
        await named_backend("b"),
        await named_backend("sick", healthy=False),
    ]
    yield runners
    for runner in runners:
        await runner.cleanup()


async def answers(session: ClientSession, url: str, count: int) -> list[str]:
    """Who answered each of `count` requests, one after the other."""
    names = []
    for _ in range(count):
        async with session.get(url) as response:
            names.append(await response.text())
    return names


async def test_haproxy_round_robins_and_stops(backends):
    with HAProxy([address(backends[0]), address(backends[1])]) as proxy:
        async with ClientSession() as session:
            # One kept-alive client connection, yet each request goes to the next backend.
            names = await answers(session, proxy.url, 6)
    assert names in (["a", "b"] * 3, ["b", "a"] * 3)
    assert_gone(proxy)


async def test_haproxy_health_check_leaves_out_a_sick_backend(backends):
    with HAProxy([address(b) for b in backends], health_check="/healthz") as proxy:
        async with ClientSession() as session:
            # A backend counts as up until its first check fails (within 200 ms).
            for _ in range(100):
                if "sick" not in await answers(session, proxy.url, 3):
                    break
                await asyncio.sleep(0.1)
            assert sorted(await answers(session, proxy.url, 4)) == ["a", "a", "b", "b"]
    assert_gone(proxy)


def test_a_missing_binary_names_its_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingServer, match="apt-get install -y redis-server"):
        RedisServer()


def test_a_server_that_cannot_start_says_why_and_leaves_nothing(monkeypatch, tmp_path):
    # The port is taken by a socket that never answers, so Redis exits at once.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        monkeypatch.setattr(servers, "free_port", lambda: taken.getsockname()[1])
        monkeypatch.setattr(servers.tempfile, "tempdir", str(tmp_path))
        with pytest.raises(ServerFailed, match=r"(?s)redis exited with 1.*Address already in use"):
            RedisServer()
    assert list(tmp_path.iterdir()) == []


def test_folders_left_by_a_killed_test_run_are_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(servers.tempfile, "tempdir", str(tmp_path))
    with subprocess.Popen(["true"]) as finished:
        pass  # once reaped, its pid stands for a test run that is gone
    orphan, alive = tmp_path / "aqueduct-redis-orphan", tmp_path / "aqueduct-redis-alive"
    for folder, pid in ((orphan, finished.pid), (alive, os.getpid())):
        folder.mkdir()
        (folder / servers.OWNER_FILE).write_text(str(pid))
    with RedisServer() as server:
        assert sorted(tmp_path.iterdir()) == sorted([alive, server.folder])


async def test_the_session_servers_of_conftest_answer(postgres_server, redis_server, s3_server):
    url = await postgres_server.create_database()
    connection = await asyncpg.connect(libpq_url(url))
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()
        await postgres_server.drop_database(url)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    async with ClientSession() as session, session.get(s3_server.endpoint_url) as listing:
        assert listing.status == 200 and b"ListAllMyBucketsResult" in await listing.read()
