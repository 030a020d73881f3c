"""Images by URL end to end: the SDK's `response_format="url"`, plain GETs of the URLs, gRPC."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import openai
import pytest
import yarl

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.config import parse_config
from aqueduct_grpc.server import Core, open_core, start_grpc_server
from aqueduct_grpc.testing.fake_upstream import FakeUpstream, Succeed
from tests.conftest import UPSTREAM_KEY, bearer, router_config


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, Any]:
    """A plain GET with no token: the signed URL is the credential."""
    async with http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_sdk_gets_urls_whose_bytes_are_the_upstreams(
    client, http, http_door, upstream: FakeUpstream
):
    result = await client.images.generate(
        model="gpt-image-1", prompt="a lighthouse", n=2, response_format="url"
    )
    # gpt-image models refuse response_format: the gateway hosts the images itself.
    assert "response_format" not in upstream.requests[0].json
    assert all(image.b64_json is None for image in result.data)
    urls = [str(image.url) for image in result.data]
    assert all(url.startswith(f"{http_door}/v1/images/files/") for url in urls)
    assert len(set(urls)) == 2
    for index, url in enumerate(urls):
        status, body, headers = await fetch(http, url)
        assert status == 200 and body == upstream.image(index)
        assert headers["Content-Type"] == "image/png"
        assert headers["X-Content-Type-Options"] == "nosniff"
        max_age = int(headers["Cache-Control"].split("max-age=")[1].split(",")[0])
        assert 3500 < max_age <= 3600  # the default: an hour, as OpenAI's URLs
        assert UPSTREAM_KEY not in url and str(upstream.port) not in url


async def test_builtin_model_by_url(client, http):
    result = await client.images.generate(
        model="demo", prompt="x", size="256x256", output_format="jpeg", response_format="url"
    )
    status, body, headers = await fetch(http, str(result.data[0].url))
    assert status == 200 and body.startswith(b"\xff\xd8\xff")
    assert headers["Content-Type"] == "image/jpeg"


async def url_of(client: openai.AsyncOpenAI) -> yarl.URL:
    result = await client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
    return yarl.URL(str(result.data[0].url))


def assert_not_found(status: int, body: bytes) -> None:
    assert status == 404
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("not_found_error", "image_not_found")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.with_query(signature=url.query["signature"][:-2] + "AA"),
        lambda url: url.with_query(signature=""),
        lambda url: url.with_query(signature="ünïcode"),
        lambda url: url.with_query(None),
        # A later expiry with the old signature: the expiry is signed too.
        lambda url: url.with_name(
            str(int(url.name.split("-")[0]) + 3600) + "-" + url.name.split("-", 1)[1]
        ),
        lambda url: url.with_name("1-" + url.name.split("-", 1)[1]),
        lambda url: url.with_name("..%2F..%2Faqueduct.db"),
    ],
)
async def test_tampered_urls_are_404_with_the_openai_envelope(client, http, tamper):
    url = await url_of(client)
    assert (await fetch(http, str(url)))[0] == 200
    status, body, _ = await fetch(http, str(tamper(url)))
    assert_not_found(status, body)


async def test_expired_url_is_404_even_while_its_file_remains(
    client, http, http_door, gateway: Core, upstream
):
    url = await url_of(client)
    # The same image published as if an hour and a half ago: its URL has expired.
    stale = await gateway.links.publish(upstream.image(0), http_door, now=time.time() - 5400)
    status, body, _ = await fetch(http, stale)
    assert_not_found(status, body)
    assert (await fetch(http, str(url)))[0] == 200


async def test_sweep_deletes_expired_files_only(client, http, http_door, gateway, upstream):
    url = await url_of(client)
    stale = yarl.URL(
        await gateway.links.publish(upstream.image(0), http_door, now=time.time() - 5400)
    )
    assert await gateway.links.store.get(stale.name) == upstream.image(0)
    assert await gateway.sweeper.sweep() == 1
    assert await gateway.sweeper.sweep() == 0
    assert await gateway.links.store.get(stale.name) is None
    assert (await fetch(http, str(url)))[0] == 200


async def test_urls_follow_the_forwarded_host_and_proto(client, http_door, secret, http):
    headers = {
        "Authorization": f"Bearer {secret}",
        "X-Forwarded-Host": "images.example.test",
        "X-Forwarded-Proto": "https",
    }
    async with http.post(
        f"{http_door}/v1/images/generations",
        json={"model": "gpt-image-1", "prompt": "x", "response_format": "url"},
        headers=headers,
    ) as resp:
        url = yarl.URL((await resp.json())["data"][0]["url"])
    assert (url.scheme, url.host, url.path.rsplit("/", 1)[0]) == (
        "https",
        "images.example.test",
        "/v1/images/files",
    )
    # The path and query work on the real door whatever host the proxy used.
    async with http.get(f"{http_door}{url.path_qs}") as resp:
        assert resp.status == 200


async def test_upstream_urls_are_rehosted_whatever_the_client_asked(
    client, http, http_door, upstream: FakeUpstream, gateway
):
    upstream.response_format = "url"  # a legacy model answering with its own URLs
    as_b64 = await client.images.generate(model="gpt-image-1", prompt="x", n=2)
    assert [base64.b64decode(str(d.b64_json)) for d in as_b64.data] == [
        upstream.image(0),
        upstream.image(1),
    ]
    assert all(d.url is None for d in as_b64.data)
    assert len(upstream.file_requests) == 2
    by_url = await client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
    url = str(by_url.data[0].url)
    assert url.startswith(http_door) and upstream.root_url not in url
    status, body, _ = await fetch(http, url)
    assert status == 200 and body == upstream.image(0)


async def test_upstream_url_on_another_host_is_never_fetched(client, upstream: FakeUpstream):
    # Same server, other name: a different origin, so the gateway must refuse it.
    upstream.default = Succeed(response_format="url", url_root=f"http://localhost:{upstream.port}")
    with pytest.raises(openai.InternalServerError) as caught:
        await client.images.generate(model="gpt-image-1", prompt="x")
    error = caught.value.response.json()["error"]
    assert caught.value.status_code == 502 and error["code"] == "upstream_url_refused"
    assert "localhost" not in error["message"]
    assert upstream.file_requests == []


async def test_upstream_image_over_the_size_cap_is_refused(upstream: FakeUpstream, capped_core):
    stub, secret = capped_core
    upstream.response_format = "url"
    upstream.image_bytes = 50_000
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="x"),
            metadata=bearer(secret),
        )
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "larger than the gateway accepts" in str(caught.value.details())


@pytest.fixture
async def capped_core(upstream: FakeUpstream, database_url: str) -> AsyncIterator[Any]:
    """A core whose upstream answers are capped at 20 kB (the URL reply fits; the image not)."""
    raw = router_config(upstream)
    raw["gateway"] = {"max_upstream_response_bytes": 20_000}
    config = parse_config(raw, source="test", environ={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    async with open_core(config, database_url=database_url) as gateway:
        server = await start_grpc_server(gateway)
        _, secret = await gateway.tokens.create("t")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield images_pb2_grpc.ImageServiceStub(channel), secret
        await server.stop(0)


async def test_grpc_callers_get_urls_and_can_fetch_the_bytes(stub, secret, upstream, http):
    metadata = [*bearer(secret), ("x-forwarded-host", "gw.example.test")]
    response = await stub.GenerateImages(
        images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="x", response_format="url"),
        metadata=metadata,
    )
    url = yarl.URL(response.data[0].url)
    assert url.host == "gw.example.test" and not response.data[0].HasField("b64_json")
    # The RPC takes the URL's name and signature, and needs no token.
    call = stub.GetImageFile(
        images_pb2.GetImageFileRequest(name=url.name, signature=url.query["signature"])
    )
    fetched = await call
    assert fetched.file.data == upstream.image(0) and fetched.file.content_type == "image/png"
    assert dict(await call.initial_metadata())["cache-control"].startswith("private, max-age=")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetImageFile(images_pb2.GetImageFileRequest(name=url.name, signature="x"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_grpc_caller_without_a_known_address_gets_a_clear_error(stub, secret, upstream):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(
                model="gpt-image-1", prompt="x", response_format="url"
            ),
            metadata=bearer(secret),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "public_base_url" in str(caught.value.details())
    assert upstream.request_count == 0
