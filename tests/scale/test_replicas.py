"""Two `serve` replicas on one PostgreSQL, one Redis and one bucket, behind a real HAProxy.

Both replicas share one `--data-dir` (their journals live side by side in it),
so when one is killed the survivor claims its journal on its next 5 s retry:
the crash test needs no restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import pathlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
import pytest
import pytest_asyncio
import sqlalchemy as sa
import yarl

from aqueduct_grpc.accounting.usage_journal import INTERRUPTED
from aqueduct_grpc.storage.database import new_engine, usage_table
from aqueduct_grpc.testing.fake_upstream import FakeUpstream, Succeed
from tests.serve_process import Served
from tests.servers import HAProxy, PostgresServer, RedisServer, S3Server, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "gpt-image-1"
PRICED_MODEL = "priced-image"
IMAGE_PRICE = 0.04
BUDGET_IMAGES = 10
GUARD_SECONDS = 30
CONCURRENT = 400
PER_MINUTE = 100
IN_FLIGHT_ON_B = 4  # held by the upstream on B when B is killed
LOAD_WORKERS = 16
ANSWERED_BEFORE_KILL = 150
ANSWERED_AFTER_KILL = 100


@dataclasses.dataclass
class Cluster:
    """The running replicas and what the tests need to reach them."""

    a: Served
    b: Served
    a_url: str
    b_url: str
    front: str  # HAProxy
    admin: str  # the first token's secret (admin scope)
    database_url: str
    upstream: FakeUpstream
    http: aiohttp.ClientSession


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def new_bucket(s3_server: S3Server) -> str:
    environ = s3_server.client_environ()
    name = f"replicas-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=environ["AWS_DEFAULT_REGION"],
        aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=name)
    return name


def write_config(path: pathlib.Path, upstream: FakeUpstream, redis_url: str, bucket: str) -> None:
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        f"    litellm_params: {{model: openai/gpt-image-1, api_base: {upstream.base_url}}}\n"
        f"  - model_name: {PRICED_MODEL}\n"
        f"    litellm_params: {{model: openai/gpt-image-1, api_base: {upstream.base_url}}}\n"
        f"    model_info: {{cost_per_image: {{'1024x1024': {IMAGE_PRICE}}}}}\n"
        "limits:\n"
        f"  storage: {redis_url}\n"
        "gateway:\n"
        f"  image_store_url: s3://{bucket}/images\n"
    )


async def started(served: Served, port: int) -> None:
    found = await asyncio.to_thread(served.wait_for, r"HTTP door listening on (http://\S+)")
    assert found.group(1) == f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    s3_server: S3Server,
) -> AsyncIterator[Cluster]:
    folder = tmp_path_factory.mktemp("replicas")
    database_url = await postgres_server.create_database()
    bucket = new_bucket(s3_server)
    try:
        async with contextlib.AsyncExitStack() as stack:
            upstream = await stack.enter_async_context(FakeUpstream())
            config = folder / "config.yaml"
            write_config(config, upstream, redis_server.url, bucket)
            options = ("--config", str(config), "--database-url", database_url)
            data_dir = folder / "data"  # shared: see the module's docstring
            environ = s3_server.client_environ()
            a_port, b_port = free_port(), free_port()

            a = Served(data_dir, *options, http_port=a_port, environ=environ)
            stack.callback(a.close)
            admin = (await asyncio.to_thread(a.wait_for, r"^\s+(aqk-\S+)\s*$")).group(1)
            await started(a, a_port)
            b = Served(data_dir, *options, http_port=b_port, environ=environ)
            stack.callback(b.close)
            await started(b, b_port)
            assert not any("aqk-" in line for line in b.output)

            proxy = HAProxy([("127.0.0.1", a_port), ("127.0.0.1", b_port)], health_check="/healthz")
            stack.callback(proxy.stop)
            http = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            )
            yield Cluster(
                a=a,
                b=b,
                a_url=f"http://127.0.0.1:{a_port}",
                b_url=f"http://127.0.0.1:{b_port}",
                front=proxy.url,
                admin=admin,
                database_url=database_url,
                upstream=upstream,
                http=http,
            )
    finally:
        await postgres_server.drop_database(database_url)


async def generate(cluster: Cluster, base: str, secret: str, **extra: Any) -> int:
    """One generation through `base`; its HTTP status (0: the connection broke)."""
    body = {"model": MODEL, "prompt": "x", **extra}
    try:
        async with cluster.http.post(
            f"{base}/v1/images/generations", json=body, headers=bearer(secret)
        ) as response:
            await response.read()
            return response.status
    except aiohttp.ClientError:
        return 0


async def admin_create_token(cluster: Cluster, base: str, name: str) -> tuple[str, str]:
    """(id, secret) of a new token made through `base`'s admin API."""
    async with cluster.http.post(
        f"{base}/admin/v1/tokens", json={"name": name}, headers=bearer(cluster.admin)
    ) as response:
        assert response.status == 200, await response.text()
        made = await response.json()
    return made["token"]["id"], made["secret"]


async def cli_create_token(database_url: str, name: str, *flags: str) -> str:
    """A token made by `aqueduct-grpc tokens create`; returns its secret."""
    command = [sys.executable, "-m", "aqueduct_grpc", "tokens", "create", "--name", name]
    result = await asyncio.to_thread(
        subprocess.run,
        [*command, *flags, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1].strip()


async def usage_of(database_url: str, token_id: str) -> list[tuple[str, str | None]]:
    """(status, request_key) of every usage row of a token."""
    engine = new_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.select(usage_table.c.status, usage_table.c.request_key).where(
                    usage_table.c.token_id == token_id
                )
            )
            return [(status, key) for status, key in result]
    finally:
        await engine.dispose()


async def test_400_concurrent_requests_over_two_replicas_get_exactly_the_limit(cluster):
    # Made by the CLI just now: no replica has seen it before its first request.
    secret = await cli_create_token(
        cluster.database_url, "limited", "--requests-per-minute", str(PER_MINUTE)
    )
    before = cluster.upstream.request_count
    async with asyncio.timeout(60):
        codes = await asyncio.gather(
            *(generate(cluster, cluster.front, secret) for _ in range(CONCURRENT))
        )
    assert collections.Counter(codes) == {200: PER_MINUTE, 429: CONCURRENT - PER_MINUTE}
    assert cluster.upstream.request_count - before == PER_MINUTE


async def test_a_per_image_budget_is_never_overspent_across_replicas(cluster):
    budget = IMAGE_PRICE * BUDGET_IMAGES
    secret = await cli_create_token(
        cluster.database_url, "budgeted", "--budget-per-day-usd", str(budget)
    )
    before = cluster.upstream.request_count
    priced = {"model": PRICED_MODEL, "size": "1024x1024"}
    # Half straight to each replica, all at once: they compete for the same dollars.
    bases = [cluster.a_url, cluster.b_url] * 100
    async with asyncio.timeout(60):
        codes = await asyncio.gather(*(generate(cluster, base, secret, **priced) for base in bases))
    assert collections.Counter(codes) == {200: BUDGET_IMAGES, 429: len(bases) - BUDGET_IMAGES}
    assert cluster.upstream.request_count - before == BUDGET_IMAGES
    engine = new_engine(cluster.database_url)
    try:
        async with engine.connect() as connection:
            spent = (
                await connection.execute(
                    sa.select(sa.func.sum(usage_table.c.cost)).where(
                        usage_table.c.model == PRICED_MODEL
                    )
                )
            ).scalar()
    finally:
        await engine.dispose()
    assert spent == pytest.approx(budget)


async def test_a_url_minted_by_a_is_served_by_b(cluster):
    async with cluster.http.post(
        f"{cluster.a_url}/v1/images/generations",
        json={"model": MODEL, "prompt": "x", "n": 2, "response_format": "url"},
        headers=bearer(cluster.admin),
    ) as response:
        assert response.status == 200, await response.text()
        data = (await response.json())["data"]
    assert len(data) == 2
    a_port, b_port = yarl.URL(cluster.a_url).port, yarl.URL(cluster.b_url).port
    for index, image in enumerate(data):
        url = yarl.URL(image["url"])
        assert url.port == a_port  # minted for A's own address
        # The URL is the credential: no token.
        async with cluster.http.get(url.with_port(b_port)) as got:
            assert got.status == 200
            assert await got.read() == cluster.upstream.image(index)


async def test_a_token_revoked_through_a_is_refused_by_b(cluster):
    token_id, secret = await admin_create_token(cluster, cluster.a_url, "to-revoke")
    models = f"{cluster.b_url}/v1/models"
    async with cluster.http.get(models, headers=bearer(secret)) as response:
        assert response.status == 200
    async with cluster.http.post(
        f"{cluster.a_url}/admin/v1/tokens/{token_id}:revoke", headers=bearer(cluster.admin)
    ) as response:
        assert response.status == 200, await response.text()
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            async with cluster.http.get(models, headers=bearer(secret)) as response:
                if response.status == 401:
                    break
                assert response.status == 200
            await asyncio.sleep(0.05)
    assert await generate(cluster, cluster.b_url, secret) == 401


async def test_kill_9_of_b_under_load_loses_no_answered_request(cluster):
    token_id, secret = await admin_create_token(cluster, cluster.a_url, "crash-load")
    upstream = cluster.upstream
    # Held by the upstream on B until B dies.
    upstream.plan(*[Succeed(delay=120)] * IN_FLIGHT_ON_B)
    held_from = upstream.request_count
    held = [
        asyncio.ensure_future(generate(cluster, cluster.b_url, secret))
        for _ in range(IN_FLIGHT_ON_B)
    ]
    async with asyncio.timeout(GUARD_SECONDS):
        await upstream.wait_for_requests(held_from + IN_FLIGHT_ON_B)

    answered = 0
    statuses: collections.Counter[int] = collections.Counter()
    enough = asyncio.Event()
    target = ANSWERED_BEFORE_KILL
    stop = asyncio.Event()

    async def keep_generating() -> None:
        nonlocal answered
        while not stop.is_set():
            status = await generate(cluster, cluster.front, secret)
            statuses[status] += 1
            if status == 200:
                answered += 1
                if answered >= target:
                    enough.set()

    load = [asyncio.ensure_future(keep_generating()) for _ in range(LOAD_WORKERS)]
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            await enough.wait()
        cluster.b.process.kill()
        await asyncio.to_thread(cluster.b.process.wait)
        # The survivor carries the load on (HAProxy sends it everything once B is down).
        enough.clear()
        target = answered + ANSWERED_AFTER_KILL
        async with asyncio.timeout(GUARD_SECONDS):
            await enough.wait()
    finally:
        stop.set()
        await asyncio.gather(*load)
    assert 200 not in await asyncio.gather(*held)  # cut off with B
    assert statuses[200] == answered
    # Cut off by the kill (0), or refused by B's door outliving its core or by
    # HAProxy before its check saw B down (503, 502): never a 500.
    assert set(statuses) <= {200, 0, 502, 503}

    # A alone serves every request now: ten in a row through HAProxy.
    in_a_row = 0
    async with asyncio.timeout(GUARD_SECONDS):
        while in_a_row < 10:
            in_a_row = in_a_row + 1 if await generate(cluster, cluster.front, secret) == 200 else 0

    # A claims B's journal (same data folder) on its next retry.
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            rows = await usage_of(cluster.database_url, token_id)
            if sum(status == INTERRUPTED for status, _ in rows) >= IN_FLIGHT_ON_B:
                break
            await asyncio.sleep(0.2)
    by_status = collections.Counter(status for status, _ in rows)
    assert by_status["OK"] >= answered + in_a_row
    keys = [key for _, key in rows]
    assert None not in keys and len(keys) == len(set(keys))
