"""Streamed generation end to end: the SDK's `stream=True` through the HTTP door, and gRPC."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import aiohttp
import grpc
import openai
import pytest
import sqlalchemy as sa
from PIL import Image

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import GatewayConfig, parse_config
from aqueduct_grpc.server import Core
from aqueduct_grpc.storage.database import usage_table
from aqueduct_grpc.testing.fake_upstream import Fail, FailMidStream, FakeUpstream, Succeed
from tests.conftest import UPSTREAM_KEY, bearer, router_config
from tests.grpc_errors import details_of
from tests.key_forms import assert_no_key, key_forms

PARTIAL = "image_generation.partial_image"
COMPLETED = "image_generation.completed"


@pytest.fixture
def config(upstream: FakeUpstream) -> GatewayConfig:
    """The shared router config, with gpt-image-1 declared able to stream (as it is)."""
    raw = router_config(upstream)
    raw["model_list"][0]["model_info"]["supports_streaming"] = True
    return parse_config(raw, source="test", environ={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})


async def usage_rows(gateway: Core) -> list[Any]:
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        return list(await connection.execute(sa.select(usage_table).order_by(usage_table.c.id)))


async def first_usage_rows(gateway: Core) -> list[Any]:
    """The usage rows once there are some: a cut-off stream is accounted as it unwinds."""
    for _ in range(400):
        rows = await usage_rows(gateway)
        if rows:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError("no usage row was recorded")


async def test_sdk_iterates_the_upstreams_events_unchanged(client, upstream: FakeUpstream, gateway):
    stream = await client.images.generate(
        model="gpt-image-1", prompt="a lighthouse at dusk", stream=True, partial_images=2
    )
    events = [event async for event in stream]
    sent = upstream.requests[0].events
    assert [e.type for e in events] == [PARTIAL, PARTIAL, COMPLETED]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    assert [base64.b64decode(e.b64_json) for e in events] == [
        upstream.partial_image(0, 0),
        upstream.partial_image(0, 1),
        upstream.image(0),
    ]
    # Every field the upstream sent reaches the SDK as it was sent.
    assert [e.model_dump(exclude_none=True) for e in events] == sent
    assert events[-1].usage.total_tokens == sent[-1]["usage"]["total_tokens"]
    # The upstream was asked to stream, under its own model name.
    asked = upstream.requests[0].json
    assert (asked["stream"], asked["partial_images"], asked["model"]) == (True, 2, "gpt-image-1")
    [row] = await usage_rows(gateway)
    assert (row.status, row.model, row.images) == ("OK", "gpt-image-1", 1)
    assert row.total_tokens == sent[-1]["usage"]["total_tokens"]


@pytest.mark.parametrize("partial_images", [0, 1, 3])
async def test_partial_image_count_follows_the_request(client, upstream, partial_images):
    stream = await client.images.generate(
        model="gpt-image-1", prompt="x", stream=True, partial_images=partial_images
    )
    types = [event.type async for event in stream]
    assert types == [PARTIAL] * partial_images + [COMPLETED]


async def test_builtin_model_streams_coarse_to_fine_renders(client, upstream, gateway):
    stream = await client.images.generate(
        model="demo", prompt="a red fox", size="256x256", stream=True, partial_images=3
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == [PARTIAL] * 3 + [COMPLETED]
    pictures = [Image.open(io.BytesIO(base64.b64decode(e.b64_json))) for e in events]
    assert all(p.format == "PNG" and p.size == (256, 256) for p in pictures)
    # Each render is finer: it has more distinct colours than the one before.
    colours = [len(p.convert("RGB").getcolors(1 << 20) or ()) for p in pictures]
    assert colours == sorted(colours) and len(set(colours)) == 4
    assert upstream.request_count == 0
    [row] = await usage_rows(gateway)
    assert (row.status, row.model, row.images) == ("OK", "aqueduct-demo", 1)


async def test_grpc_stream_carries_the_same_events(stub, secret, upstream: FakeUpstream):
    call = stub.StreamGenerateImages(
        images_pb2.StreamGenerateImagesRequest(
            request=images_pb2.GenerateImagesRequest(
                model="gpt-image-1", prompt="x", partial_images=1
            )
        ),
        metadata=bearer(secret),
    )
    events = [event async for event in call]
    assert [(e.type, e.HasField("partial_image_index")) for e in events] == [
        (PARTIAL, True),
        (COMPLETED, False),
    ]
    assert [e.b64_json for e in events] == [upstream.partial_image(0, 0), upstream.image(0)]
    assert events[1].usage.output_tokens == upstream.requests[0].events[1]["usage"]["output_tokens"]


async def test_grpc_unary_method_refuses_stream_true(stub, secret, upstream):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="x", stream=True),
            metadata=bearer(secret),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "StreamGenerateImages" in str(caught.value.details())
    assert upstream.request_count == 0


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"model": "gpt-image-1", "partial_images": 4}, "partial_images"),
        ({"model": "gpt-image-1", "response_format": "url"}, "response_format"),
    ],
)
async def test_streams_that_cannot_be_served_are_a_clear_400(client, upstream, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(prompt="x", stream=True, **kwargs)
    error = caught.value.response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert upstream.request_count == 0


async def test_upstream_refusing_a_stream_keeps_its_status(client, upstream, gateway):
    upstream.plan(Fail(400, message="Streaming is not supported.", param="stream"))
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model="gpt-image-1", prompt="x", stream=True)
    assert caught.value.response.json()["error"]["message"] == "Streaming is not supported."
    assert UPSTREAM_KEY not in caught.value.response.text


async def test_upstream_error_mid_stream_arrives_as_an_sse_error_event(client, upstream, gateway):
    upstream.plan(FailMidStream(after=1, message="The upstream gave up."))
    stream = await client.images.generate(
        model="gpt-image-1", prompt="x", stream=True, partial_images=2
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for event in stream:
            received.append(event.type)
    assert received == [PARTIAL]
    assert caught.value.message == "The upstream gave up."
    body: Any = caught.value.body
    assert body["type"] == "server_error" and body["code"] == "generation_failed"
    [row] = await usage_rows(gateway)
    assert (row.status, row.images, row.error_reason) == ("INTERNAL", 0, "UPSTREAM_ERROR")


async def test_upstream_ending_a_stream_early_is_an_error_not_a_short_answer(
    client, upstream, gateway
):
    upstream.plan(FailMidStream(after=2, error_event=False))
    stream = await client.images.generate(
        model="gpt-image-1", prompt="x", stream=True, partial_images=3
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for event in stream:
            received.append(event.type)
    assert received == [PARTIAL, PARTIAL]
    body: Any = caught.value.body
    assert body["code"] == "upstream_stream_incomplete" and body["type"] == "server_error"
    [row] = await usage_rows(gateway)
    assert (row.status, row.error_reason, row.http_status) == (
        "INTERNAL",
        "UPSTREAM_STREAM_INCOMPLETE",
        502,
    )


async def test_error_event_framing_on_the_wire(http_door, secret, upstream):
    upstream.plan(FailMidStream(after=1))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{http_door}/v1/images/generations",
            json={"model": "gpt-image-1", "prompt": "x", "stream": True, "partial_images": 1},
            headers={"Authorization": f"Bearer {secret}"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            text = (await resp.read()).decode()
    frames = text.split("\n\n")
    assert frames[0].startswith(f"event: {PARTIAL}\ndata: {{")
    assert frames[1].startswith('event: error\ndata: {"error": {"message": ')
    assert frames[2:] == [""]


async def test_client_disconnect_cancels_the_upstream_and_is_accounted(
    http_door, secret, upstream: FakeUpstream, gateway
):
    # Many slow partial images: the client leaves after the first one.
    upstream.plan(Succeed(event_delay=0.2))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{http_door}/v1/images/generations",
            json={
                "model": "gpt-image-1",
                "prompt": "x",
                "stream": True,
                "partial_images": 3,
                "n": 10,
            },
            headers={"Authorization": f"Bearer {secret}"},
        ) as resp:
            assert resp.status == 200
            await resp.content.readuntil(b"\n\n")
    async with asyncio.timeout(20):
        await upstream.wait_until(lambda: upstream.requests[0].outcome == "cancelled")
    assert len(upstream.requests[0].events) < 40
    rows = await first_usage_rows(gateway)
    assert [(r.status, r.images) for r in rows] == [("CANCELLED", 0)]


async def test_grpc_cancel_cancels_the_upstream(stub, secret, upstream: FakeUpstream, gateway):
    upstream.plan(Succeed(event_delay=0.2))
    call = stub.StreamGenerateImages(
        images_pb2.StreamGenerateImagesRequest(
            request=images_pb2.GenerateImagesRequest(
                model="gpt-image-1", prompt="x", partial_images=3, n=10
            )
        ),
        metadata=bearer(secret),
    )
    first = await call.read()
    assert first.type == PARTIAL
    call.cancel()
    async with asyncio.timeout(20):
        await upstream.wait_until(lambda: upstream.requests[0].outcome == "cancelled")
    rows = await first_usage_rows(gateway)
    assert [r.status for r in rows] == ["CANCELLED"]


def mid_stream_failure_echoing(form: str) -> FailMidStream:
    """An upstream stream that fails after one event, every error field echoing our key."""
    return FailMidStream(
        after=1,
        message=f"Incorrect API key provided: {form}.",
        type=f"server_error {form}",
        code=f"bad_key:{form}",
        param=f"key {form}",
    )


@pytest.mark.parametrize("form", key_forms(UPSTREAM_KEY))
async def test_the_upstream_key_never_reaches_a_caller_from_a_stream_error(
    http_door, stub, secret, upstream: FakeUpstream, form
):
    upstream.plan(mid_stream_failure_echoing(form), mid_stream_failure_echoing(form))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{http_door}/v1/images/generations",
            json={"model": "gpt-image-1", "prompt": "x", "stream": True, "partial_images": 1},
            headers={"Authorization": f"Bearer {secret}"},
        ) as resp:
            assert resp.status == 200
            text = (await resp.read()).decode()
    frames = text.split("\n\n")
    assert frames[0].startswith(f"event: {PARTIAL}\n") and frames[1].startswith("event: error\n")
    assert_no_key(frames[1], UPSTREAM_KEY)
    error = json.loads(frames[1].partition("data: ")[2])["error"]
    assert error["message"].startswith("Incorrect API key provided: ") and "***" in error["message"]
    assert error["param"].startswith("key ") and error["code"].startswith("bad_key:")
    call = stub.StreamGenerateImages(
        images_pb2.StreamGenerateImagesRequest(
            request=images_pb2.GenerateImagesRequest(
                model="gpt-image-1", prompt="x", partial_images=1
            )
        ),
        metadata=bearer(secret),
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in call:
            received.append(event.type)
    assert received == [PARTIAL]
    found = details_of(caught.value)
    assert_no_key(f"{found.message} {found.metadata} {found.bad_fields}", UPSTREAM_KEY)
    assert_no_key(str(caught.value), UPSTREAM_KEY)
    assert found.reason == "UPSTREAM_ERROR" and "***" in found.message
