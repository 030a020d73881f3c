"""The S3 image store on a real S3-compatible server (moto's), shared by two cores."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import boto3
import grpc
import pytest
import yarl
from aiohttp import web

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.server import Core, GrpcServer, open_core, start_grpc_server
from aqueduct_grpc.storage.image_files import ImageSweeper
from aqueduct_grpc.storage.s3_images import S3ImageStore
from aqueduct_grpc.testing.fake_upstream import FakeUpstream, png_image
from gateway_http import DoorRunner, create_app
from tests.conftest import bearer, closed_port
from tests.grpc_errors import details_of
from tests.servers import S3Server

PNG = png_image(64, 0)
SECRET_KEY = "s3cret-access-key-never-logged"


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the shared server, with the AWS_* variables pointing at it."""
    environ = {**s3_server.client_environ(), "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    name = f"images-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=environ["AWS_DEFAULT_REGION"],
        aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRET_KEY,
    ).create_bucket(Bucket=name)
    return name


def keys_in(s3_server: S3Server, bucket: str) -> list[str]:
    """Every key in the bucket, read with another client (boto3)."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET_KEY,
    )
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def name_expiring(at: float, tail: str = "abc") -> str:
    return f"{int(at)}-{tail}.png"


async def test_put_get_and_delete_expired_round_trip(bucket, s3_server) -> None:
    store = S3ImageStore(bucket, "gw/images")
    now = time.time()
    old, new = name_expiring(now - 1, "old"), name_expiring(now + 600, "new")
    await store.put(old, PNG, expires_at=int(now - 1), content_type="image/png")
    await store.put(new, PNG, expires_at=int(now + 600), content_type="image/png")
    assert await store.get(new) == PNG and await store.get(old) == PNG
    assert await store.get(name_expiring(now, "missing")) is None
    assert await store.get("../escape.png") is None
    assert keys_in(s3_server, bucket) == sorted([f"gw/images/{old}", f"gw/images/{new}"])
    assert await store.delete_expired(now) == 1
    assert await store.delete_expired(now) == 0
    assert await store.get(old) is None and await store.get(new) == PNG


async def test_keys_that_are_not_images_are_refused_and_left_alone(bucket, s3_server) -> None:
    store = S3ImageStore(bucket, "")
    with pytest.raises(ValueError):
        await store.put("../escape.png", PNG, expires_at=time.time(), content_type="image/png")
    with pytest.raises(ValueError):  # the key's expiry must be the real one
        await store.put(
            name_expiring(time.time() + 9999), PNG, expires_at=time.time(), content_type="image/png"
        )
    boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1").put_object(
        Bucket=bucket, Key="someone-elses/1-report.png", Body=b"x"
    )
    assert await store.delete_expired(time.time() + 10**9) == 0
    assert keys_in(s3_server, bucket) == ["someone-elses/1-report.png"]


async def test_one_replica_sweeps_per_turn(bucket, s3_server) -> None:
    first, second = S3ImageStore(bucket, "p"), S3ImageStore(bucket, "p")
    assert await first.claim_sweep(7) is True
    assert await second.claim_sweep(7) is False
    assert await first.claim_sweep(7) is False
    assert await second.claim_sweep(8) is True
    # Claims are swept once an hour old, not before; they are not counted as images.
    assert await first.delete_expired(time.time()) == 0
    assert len(keys_in(s3_server, bucket)) == 2
    assert await first.delete_expired(time.time() + 7200) == 0
    assert keys_in(s3_server, bucket) == []


async def test_the_background_sweeper_deletes_expired_objects(bucket) -> None:
    store = S3ImageStore(bucket, "p")
    old = name_expiring(time.time() - 1)
    await store.put(old, PNG, expires_at=int(time.time() - 1), content_type="image/png")
    sweeper = ImageSweeper(store, interval=0.05)
    await sweeper.start()
    try:
        for _ in range(200):
            if await store.get(old) is None:
                break
            await asyncio.sleep(0.05)
        assert await store.get(old) is None
    finally:
        await sweeper.close()


@dataclasses.dataclass
class Replica:
    core: Core
    grpc: GrpcServer
    stub: images_pb2_grpc.ImageServiceStub
    door: str


@contextlib.asynccontextmanager
async def replica(config: GatewayConfig, database_url: str) -> AsyncIterator[Replica]:
    """A core on its own gRPC port with its own HTTP door, as `serve` runs one."""
    async with open_core(config, database_url=database_url) as core:
        server = await start_grpc_server(core)
        runner = DoorRunner(
            create_app(grpc_target=f"127.0.0.1:{server.port}", proto_packages=["aqueduct"])
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = images_pb2_grpc.ImageServiceStub(channel)
                yield Replica(core, server, stub, f"127.0.0.1:{site.port}")
        finally:
            await runner.cleanup()
            await server.stop(0)


def on_s3(config: GatewayConfig, bucket: str) -> GatewayConfig:
    return dataclasses.replace(config, image_store_url=f"s3://{bucket}/images")


async def test_a_url_minted_by_one_core_is_served_by_the_other(
    config, database_url, bucket, upstream: FakeUpstream
) -> None:
    shared = on_s3(config, bucket)
    async with replica(shared, database_url) as a, replica(shared, database_url) as b:
        _, secret = await a.core.tokens.create("test")
        # The caller reached "the gateway" at B's door (as through a load balancer).
        response = await a.stub.GenerateImages(
            images_pb2.GenerateImagesRequest(
                model="gpt-image-1", prompt="x", n=2, response_format="url"
            ),
            metadata=[*bearer(secret), ("host", b.door)],
        )
        urls = [yarl.URL(image.url) for image in response.data]
        for index, url in enumerate(urls):
            assert f"{url.host}:{url.port}" == b.door
            # Through B's gRPC door ...
            file = await b.stub.GetImageFile(
                images_pb2.GetImageFileRequest(name=url.name, signature=url.query["signature"])
            )
            assert file.file.data == upstream.image(index)
            # ... and through B's HTTP door, with no token: the URL is the credential.
            async with aiohttp.ClientSession() as http, http.get(str(url)) as got:
                assert got.status == 200 and await got.read() == upstream.image(index)


async def test_presigned_redirects_send_callers_to_the_store(
    config, database_url, bucket, upstream: FakeUpstream
) -> None:
    presigned = dataclasses.replace(on_s3(config, bucket), image_redirect="presigned")
    async with replica(presigned, database_url) as gateway:
        _, secret = await gateway.core.tokens.create("test")
        response = await gateway.stub.GenerateImages(
            images_pb2.GenerateImagesRequest(
                model="gpt-image-1", prompt="x", response_format="url"
            ),
            metadata=[*bearer(secret), ("host", gateway.door)],
        )
        url = yarl.URL(response.data[0].url)
        # gRPC: an empty body, and the store's URL in the metadata.
        call = gateway.stub.GetImageFile(
            images_pb2.GetImageFileRequest(name=url.name, signature=url.query["signature"])
        )
        assert not (await call).file.data
        metadata = dict(await call.initial_metadata())
        assert metadata["x-http-status"] == "302"
        location = yarl.URL(metadata["location"])
        assert location.path.endswith(f"/{bucket}/images/{url.name}")
        assert "X-Amz-Signature" in location.query
        # The presigned URL stops working when the image does (signed at X-Amz-Date).
        signed = datetime.datetime.strptime(location.query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        lapses = signed.replace(tzinfo=datetime.UTC).timestamp() + int(
            location.query["X-Amz-Expires"]
        )
        assert lapses <= int(url.name.split("-", 1)[0])
        async with aiohttp.ClientSession() as http:
            # HTTP: a redirect, which clients follow to the store itself.
            async with http.get(str(url), allow_redirects=False) as got:
                assert got.status == 302 and got.headers["Location"] == metadata["location"]
            async with http.get(str(url)) as got:
                assert got.status == 200 and got.headers["Content-Type"] == "image/png"
                assert await got.read() == upstream.image(0)
            # A forged signature is refused before any store URL is made.
            forged = url.update_query(signature="x" * 43)
            async with http.get(str(forged), allow_redirects=False) as got:
                assert got.status == 404 and "Location" not in got.headers


async def test_an_expired_object_is_swept_and_its_url_is_a_404(
    config, database_url, bucket, upstream: FakeUpstream
) -> None:
    shared = on_s3(config, bucket)
    async with replica(shared, database_url) as a, replica(shared, database_url) as b:
        # Published as if an hour and a half ago: expired half an hour since.
        stale = yarl.URL(
            await a.core.links.publish(PNG, f"http://{b.door}", now=time.time() - 5400)
        )
        assert await b.core.links.store.get(stale.name) == PNG
        assert await b.core.sweeper.sweep() == 1
        assert await a.core.links.store.get(stale.name) is None
        async with aiohttp.ClientSession() as http, http.get(str(stale)) as got:
            assert got.status == 404
            error = json.loads(await got.read())["error"]
            assert (error["type"], error["code"]) == ("not_found_error", "image_not_found")


async def test_an_unreachable_store_is_a_clear_503(
    config, database_url, bucket, monkeypatch, caplog
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    caplog.set_level(logging.DEBUG)
    async with replica(on_s3(config, bucket), database_url) as a:
        _, secret = await a.core.tokens.create("test")
        body = {"model": "gpt-image-1", "prompt": "x", "response_format": "url"}
        headers = {"Authorization": f"Bearer {secret}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://{a.door}/v1/images/generations", json=body, headers=headers
            ) as got:
                assert got.status == 503
                error = json.loads(await got.read())["error"]
        assert error["type"] == "server_error" and error["code"] == "image_store_unavailable"
        assert error["message"] == "The image store is unavailable; try again later."
        name = name_expiring(time.time() + 60)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await a.stub.GetImageFile(
                images_pb2.GetImageFileRequest(name=name, signature=a.core.links.sign(name))
            )
        assert details_of(caught.value).reason == "IMAGE_STORE_UNAVAILABLE"
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    logged = caplog.text
    assert "image store s3://" in logged
    assert SECRET_KEY not in logged and "testing" not in logged


async def test_a_missing_bucket_is_a_502_not_a_500(config, database_url, bucket) -> None:
    async with replica(on_s3(config, f"{bucket}-missing"), database_url) as a:
        _, secret = await a.core.tokens.create("test")
        body = {"model": "gpt-image-1", "prompt": "x", "response_format": "url"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://{a.door}/v1/images/generations",
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
            ) as got:
                assert got.status == 502
                error = json.loads(await got.read())["error"]
        assert error["code"] == "image_store_refused"
