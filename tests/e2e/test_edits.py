"""Image edits end to end: the SDK (multipart), the JSON form, gRPC bytes, the upstream."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import openai
import pytest
import sqlalchemy as sa
from aiohttp import web
from PIL import Image

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.accounting.policy import Limits
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.images.image_fetcher import AllowedHost
from aqueduct_grpc.server import Core, open_core, start_grpc_server
from aqueduct_grpc.storage.database import usage_table
from aqueduct_grpc.testing.fake_upstream import EDIT_IMAGE_TOKENS, FakeUpstream
from gateway_http import DoorRunner, create_app
from tests.accounting import token_with
from tests.conftest import UPSTREAM_KEY, bearer

EDIT_COMPLETED = "image_edit.completed"
EDIT_PARTIAL = "image_edit.partial_image"


def png(size: tuple[int, int] = (256, 256), colour: tuple[int, ...] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def left_half_mask(size: tuple[int, int] = (256, 256)) -> bytes:
    """Transparent (to be edited) on the left half, opaque on the right."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def error_of(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = caught.value.response.json()
    assert set(body) == {"error"} and "Traceback" not in caught.value.response.text
    return body["error"]


async def rows(gateway: Core) -> list[Any]:
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        return (await connection.execute(sa.select(usage_table).order_by(usage_table.c.id))).all()


@pytest.fixture
async def http(http_door: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=http_door) as session:
        yield session


async def test_sdk_edit_with_a_mask_reaches_the_upstream_as_multipart(
    client, upstream: FakeUpstream, gateway: Core
):
    image, mask = png(), left_half_mask()
    answer = await client.images.edit(
        model="gpt-image-1",
        image=("lighthouse.png", image, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="add a boat",
        n=2,
        size="1024x1024",
        input_fidelity="high",
    )
    assert [base64.b64decode(d.b64_json or "") for d in answer.data] == [
        upstream.image(0),
        upstream.image(1),
    ]
    [sent] = upstream.requests
    assert sent.path == "/v1/images/edits" and sent.authorization == f"Bearer {UPSTREAM_KEY}"
    assert sent.form["model"] == ["gpt-image-1"] and sent.form["prompt"] == ["add a boat"]
    assert (sent.form["n"], sent.form["size"], sent.form["input_fidelity"]) == (
        ["2"],
        ["1024x1024"],
        ["high"],
    )
    assert [(f.name, f.data) for f in sent.files] == [("image[]", image), ("mask", mask)]
    [row] = await rows(gateway)
    assert (row.operation, row.status, row.images, row.model) == ("edit", "OK", 2, "gpt-image-1")


async def test_sdk_edit_with_several_images_keeps_their_order(client, upstream: FakeUpstream):
    images = [png(colour=(i * 40, 0, 0)) for i in range(3)]
    await client.images.edit(
        model="gpt-image-1",
        image=[(f"ref{i}.png", data, "image/png") for i, data in enumerate(images)],
        prompt="combine them",
    )
    assert [f.data for f in upstream.requests[0].files] == images


async def test_the_json_form_with_data_urls(http, secret, upstream: FakeUpstream):
    image, mask = png(), left_half_mask()
    async with http.post(
        "/v1/images/edits",
        json={
            "model": "gpt-image-1",
            "prompt": "x",
            "images": [{"image_url": data_url(image)}],
            "mask": {"image_url": data_url(mask)},
        },
        headers={"Authorization": f"Bearer {secret}"},
    ) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert len(answer["data"]) == 1
    assert [(f.name, f.data) for f in upstream.requests[0].files] == [
        ("image[]", image),
        ("mask", mask),
    ]


async def test_the_demo_edits_the_masked_area_for_real(client, upstream: FakeUpstream):
    image = png(colour=(10, 200, 10))
    answer = await client.images.edit(
        model="demo",
        image=("in.png", image, "image/png"),
        mask=("mask.png", left_half_mask(), "image/png"),
        prompt="a red fox",
    )
    edited = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or ""))).convert("RGB")
    assert edited.size == (256, 256)
    assert edited.getpixel((200, 128)) == (10, 200, 10)  # outside the mask: kept
    assert edited.getpixel((40, 128)) != (10, 200, 10)  # inside: edited
    assert upstream.request_count == 0


async def test_a_streamed_demo_edit_shows_partials_of_the_edit_before_it(client, gateway: Core):
    image = png(colour=(10, 200, 10))
    stream = await client.images.edit(
        model="demo",
        image=("in.png", image, "image/png"),
        mask=("mask.png", left_half_mask(), "image/png"),
        prompt="a red fox",
        n=2,
        partial_images=2,
        stream=True,
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == [EDIT_PARTIAL, EDIT_PARTIAL, EDIT_COMPLETED] * 2
    assert [e.partial_image_index for e in events if e.type == EDIT_PARTIAL] == [0, 1, 0, 1]
    for event in events:
        picture = Image.open(io.BytesIO(base64.b64decode(event.b64_json))).convert("RGB")
        assert picture.size == (256, 256)
        assert picture.getpixel((250, 128)) == (10, 200, 10)  # outside the mask: kept in all
    completed = [e for e in events if e.type == EDIT_COMPLETED]
    assert all(e.usage.total_tokens == 0 for e in completed)  # the demo reports none
    [row] = await rows(gateway)
    assert (row.operation, row.images, row.total_tokens) == ("edit", 2, None)


async def test_a_streamed_edit_relays_the_upstreams_events(
    client, upstream: FakeUpstream, gateway: Core
):
    image = png()
    stream = await client.images.edit(
        model="gpt-image-1",
        image=("in.png", image, "image/png"),
        prompt="add a boat",
        partial_images=1,
        stream=True,
    )
    events = [event async for event in stream]
    [sent] = upstream.requests
    assert (sent.form["stream"], sent.form["partial_images"]) == (["true"], ["1"])
    assert [(f.name, f.data) for f in sent.files] == [("image[]", image)]
    assert [e.type for e in events] == [EDIT_PARTIAL, EDIT_COMPLETED]
    assert base64.b64decode(events[0].b64_json) == upstream.partial_image(0, 0)
    assert base64.b64decode(events[1].b64_json) == upstream.image(0)
    usage = events[1].usage
    assert usage.input_tokens_details.image_tokens == EDIT_IMAGE_TOKENS
    [row] = await rows(gateway)
    assert (row.operation, row.images, row.total_tokens) == ("edit", 1, usage.total_tokens)


async def test_a_streamed_edit_of_a_model_that_cannot_stream_is_one_unary_call(
    client, upstream: FakeUpstream, gateway: Core
):
    stream = await client.images.edit(
        model="failover-image",
        image=("in.png", png(), "image/png"),
        prompt="x",
        n=2,
        partial_images=2,
        stream=True,
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == [EDIT_COMPLETED, EDIT_COMPLETED]
    assert [base64.b64decode(e.b64_json) for e in events] == [upstream.image(0), upstream.image(1)]
    [sent] = upstream.requests
    assert "stream" not in sent.form and "partial_images" not in sent.form
    # The answer's usage covers both images: on the last event, counted once.
    assert events[0].usage.total_tokens == 0 and events[1].usage.total_tokens > 0
    [row] = await rows(gateway)
    assert (row.images, row.total_tokens) == (2, events[1].usage.total_tokens)


async def test_grpc_streamed_edits_send_raw_bytes_and_get_partials(stub, secret):
    request = images_pb2.EditImagesRequest(
        model="demo",
        prompt="x",
        partial_images=1,
        image=[images_pb2.InputImage(data=png((64, 64)))],
    )
    events = [
        event
        async for event in stub.StreamEditImages(
            images_pb2.StreamEditImagesRequest(request=request), metadata=bearer(secret)
        )
    ]
    assert [e.type for e in events] == [EDIT_PARTIAL, EDIT_COMPLETED]
    assert all(Image.open(io.BytesIO(e.b64_json)).size == (64, 64) for e in events)


async def test_grpc_callers_send_raw_bytes(stub, secret):
    answer = await stub.EditImages(
        images_pb2.EditImagesRequest(
            model="demo", prompt="x", image=[images_pb2.InputImage(data=png((64, 64)))]
        ),
        metadata=bearer(secret),
    )
    assert Image.open(io.BytesIO(answer.data[0].b64_json)).size == (64, 64)


@pytest.mark.parametrize(
    ("files", "param"),
    [
        ({"image": ("a.png", b"not an image at all", "image/png")}, "image[0]"),
        (
            {
                "image": ("a.png", png((256, 256)), "image/png"),
                "mask": ("m.png", left_half_mask((128, 128)), "image/png"),
            },
            "mask",
        ),
        ({"image": [(f"{i}.png", png((8, 8)), "image/png") for i in range(17)]}, "image"),
    ],
)
async def test_bad_uploads_name_the_field(client, upstream, files, param):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(model="gpt-image-1", prompt="x", **files)
    assert error_of(caught)["param"] == param
    assert upstream.request_count == 0


@pytest.mark.parametrize(
    ("images", "param"),
    [
        ([], "image"),
        ([{"file_id": "file-abc"}], "images[0]"),
        ([{"image_url": "https://example.com/a.png"}], "images[0].image_url"),
        ([{"image_url": "data:image/png;base64,@@@"}], "images[0].image_url"),
    ],
)
async def test_references_the_gateway_cannot_follow_are_400s(http, secret, upstream, images, param):
    async with http.post(
        "/v1/images/edits",
        json={"model": "gpt-image-1", "prompt": "x", "images": images},
        headers={"Authorization": f"Bearer {secret}"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == param
    assert upstream.request_count == 0


async def test_an_upload_over_the_doors_limit_is_a_413(client, upstream):
    big = png((2048, 2048)) + b"\0" * (2 * 1024 * 1024)  # past the test door's 1 MiB
    with pytest.raises(openai.APIStatusError) as caught:
        await client.images.edit(model="gpt-image-1", prompt="x", image=("a.png", big, "image/png"))
    assert caught.value.status_code == 413
    assert upstream.request_count == 0


async def test_edits_count_against_image_limits(http_door, gateway: Core, upstream):
    secret = await token_with(gateway, "editor", limits=Limits(images_per_minute=2))
    async with openai.AsyncOpenAI(base_url=f"{http_door}/v1", api_key=secret, max_retries=0) as sdk:
        await sdk.images.edit(
            model="gpt-image-1", image=("a.png", png(), "image/png"), prompt="x", n=2
        )
        with pytest.raises(openai.RateLimitError):
            await sdk.images.edit(
                model="gpt-image-1", image=("a.png", png(), "image/png"), prompt="x"
            )
    assert upstream.request_count == 1


async def test_grpc_unknown_upload_is_refused_without_the_upstream(stub, secret, upstream):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EditImages(
            images_pb2.EditImagesRequest(model="gpt-image-1", prompt="x"), metadata=bearer(secret)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream.request_count == 0


async def test_a_forwarded_parameter_that_cannot_be_a_form_field_is_a_400(http, secret, upstream):
    # The model forwards unknown parameters; an edit sends them as form
    # fields, whose names cannot hold a line break (it was a 500).
    async with http.post(
        "/v1/images/edits",
        json={
            "model": "forwarding-image",
            "prompt": "x",
            "images": [{"image_url": data_url(png())}],
            "bad\r\nname": 1,
        },
        headers={"Authorization": f"Bearer {secret}"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_value"
    assert upstream.request_count == 0


async def test_forwarded_numbers_and_markup_reach_the_upstream_as_the_sdk_sends_them(
    http, secret, upstream: FakeUpstream
):
    markup = left_half_mask()
    async with http.post(
        "/v1/images/edits",
        json={
            "model": "forwarding-image",
            "prompt": "x",
            "images": [{"image_url": data_url(png())}],
            "markup": {"image_url": data_url(markup)},
            "seed": 42,
            "style_hints": {"tone": "warm", "strength": 2},
        },
        headers={"Authorization": f"Bearer {secret}"},
    ) as response:
        assert response.status == 200, await response.text()
    sent = upstream.requests[0]
    assert sent.form["seed"] == ["42"]
    assert sent.form["style_hints[tone]"] == ["warm"] and sent.form["style_hints[strength]"] == [
        "2"
    ]
    assert [(f.name, f.data) for f in sent.files][-1] == ("markup", markup)


# -- image URLs fetched from hosts the operator allows ------------------------------------------


class ImageHost:
    """A real image host on loopback: serves `files` by path and notes every request."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requested: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> ImageHost:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site.port
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _serve(self, request: web.Request) -> web.Response:
        self.requested.append(request.path_qs)
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name], content_type="image/png")


@pytest.fixture
async def image_host() -> AsyncIterator[ImageHost]:
    async with ImageHost({"in.png": png(), "mask.png": left_half_mask()}) as host:
        yield host


@contextlib.asynccontextmanager
async def core_allowing(
    config: GatewayConfig, database_url: str, *entries: AllowedHost
) -> AsyncIterator[tuple[Core, str, int]]:
    """A core whose config allows `entries`, its HTTP door's URL and its gRPC port."""
    allowing = dataclasses.replace(config, fetch_image_hosts=entries)
    async with open_core(allowing, database_url=database_url) as core:
        server = await start_grpc_server(core)
        runner = DoorRunner(
            create_app(grpc_target=f"127.0.0.1:{server.port}", proto_packages=["aqueduct"])
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield core, f"http://127.0.0.1:{site.port}", server.port
        finally:
            await runner.cleanup()
            await server.stop(0)


async def test_image_urls_on_an_allowed_host_reach_the_upstream_as_their_bytes(
    config: GatewayConfig, database_url: str, upstream: FakeUpstream, image_host: ImageHost
):
    allowed = AllowedHost(host="127.0.0.1", port=image_host.port)
    async with core_allowing(config, database_url, allowed) as (core, door, grpc_port):
        _, secret = await core.tokens.create("test")
        async with aiohttp.ClientSession(base_url=door) as http:
            response = await http.post(
                "/v1/images/edits",
                json={
                    "model": "gpt-image-1",
                    "prompt": "add a boat",
                    "images": [{"image_url": image_host.url("in.png") + "?signature=abc"}],
                    "mask": {"image_url": image_host.url("mask.png")},
                },
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert response.status == 200, await response.text()
            assert len((await response.json())["data"]) == 1
        [sent] = upstream.requests
        assert [(f.name, f.data) for f in sent.files] == [
            ("image[]", png()),
            ("mask", left_half_mask()),
        ]
        assert sorted(image_host.requested) == ["/in.png?signature=abc", "/mask.png"]
        # A streamed edit fetches its images the same way.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            request = images_pb2.EditImagesRequest(
                model="gpt-image-1",
                prompt="x",
                partial_images=1,
                images=[images_pb2.InputImage(image_url=image_host.url("in.png"))],
            )
            events = [
                event
                async for event in images_pb2_grpc.ImageServiceStub(channel).StreamEditImages(
                    images_pb2.StreamEditImagesRequest(request=request), metadata=bearer(secret)
                )
            ]
        assert [e.type for e in events] == [EDIT_PARTIAL, EDIT_COMPLETED]
        assert [(f.name, f.data) for f in upstream.requests[1].files] == [("image[]", png())]
        assert [row.status for row in await rows(core)] == ["OK", "OK"]


async def test_a_missing_image_on_an_allowed_host_is_a_400_not_sent_upstream(
    config: GatewayConfig, database_url: str, upstream: FakeUpstream, image_host: ImageHost
):
    allowed = AllowedHost(host="127.0.0.1", port=image_host.port)
    async with core_allowing(config, database_url, allowed) as (core, door, _):
        _, secret = await core.tokens.create("test")
        async with aiohttp.ClientSession(base_url=door) as http:
            response = await http.post(
                "/v1/images/edits",
                json={
                    "model": "gpt-image-1",
                    "prompt": "x",
                    "images": [{"image_url": image_host.url("in.png")}],
                    "mask": {"image_url": image_host.url("gone.png")},
                },
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert response.status == 400
            error = (await response.json())["error"]
    assert (error["param"], error["code"]) == ("mask.image_url", "invalid_image_url")
    assert "HTTP 404" in error["message"]
    assert upstream.request_count == 0


async def test_with_fetching_off_an_image_url_is_a_400_and_nothing_is_fetched(
    http, secret, upstream: FakeUpstream, image_host: ImageHost
):
    async with http.post(
        "/v1/images/edits",
        json={
            "model": "gpt-image-1",
            "prompt": "x",
            "images": [{"image_url": image_host.url("in.png")}],
        },
        headers={"Authorization": f"Bearer {secret}"},
    ) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert (error["param"], error["code"]) == ("images[0].image_url", "invalid_image_url")
    assert "gateway.fetch_image_hosts" in error["message"]
    assert image_host.requested == [] and upstream.request_count == 0


async def test_image_urls_are_fetched_only_once_the_request_is_admitted(
    config: GatewayConfig, database_url: str, upstream: FakeUpstream, image_host: ImageHost
):
    allowed = AllowedHost(host="127.0.0.1", port=image_host.port)
    async with core_allowing(config, database_url, allowed) as (core, door, _):
        secret = await token_with(core, "limited", limits=Limits(images_per_minute=1))
        sent = {
            "model": "gpt-image-1",
            "prompt": "x",
            "images": [{"image_url": image_host.url("in.png")}] * 4,
        }
        async with aiohttp.ClientSession(base_url=door) as http:
            statuses = []
            for _ in range(3):
                async with http.post(
                    "/v1/images/edits", json=sent, headers={"Authorization": f"Bearer {secret}"}
                ) as response:
                    statuses.append(response.status)
        assert statuses == [200, 429, 429]
        # Only the admitted request's four images were fetched.
        assert image_host.requested == ["/in.png"] * 4


async def test_fetched_images_and_the_messages_own_bytes_share_one_limit(
    config: GatewayConfig, database_url: str, upstream: FakeUpstream, image_host: ImageHost
):
    allowed = AllowedHost(host="127.0.0.1", port=image_host.port)
    small = dataclasses.replace(config, max_message_bytes=3 * len(png()))
    async with core_allowing(small, database_url, allowed) as (core, door, _):
        _, secret = await core.tokens.create("test")
        sent = {
            "model": "gpt-image-1",
            "prompt": "x",
            # Two inline images and two to fetch: together past what one request carries.
            "images": [{"image_url": data_url(png())}] * 2
            + [{"image_url": image_host.url("in.png")}] * 2,
        }
        async with aiohttp.ClientSession(base_url=door) as http:
            async with http.post(
                "/v1/images/edits", json=sent, headers={"Authorization": f"Bearer {secret}"}
            ) as response:
                assert response.status == 400
                error = (await response.json())["error"]
        assert error["code"] == "file_too_large" and error["param"].endswith(".image_url")
        assert upstream.request_count == 0
