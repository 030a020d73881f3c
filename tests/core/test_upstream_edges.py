"""Upstream edge cases a real upstream (or someone in its place) can produce.

Each runs the real HTTP backend against a small aiohttp server on loopback
that answers exactly the bytes under test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.testing.fake_upstream import png_image
from aqueduct_grpc.upstreams.openai.backend import OpenAIBackend
from aqueduct_grpc.upstreams.openai.event_stream import read_events

Handler = Callable[[web.Request], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    """Starts one-route servers on 127.0.0.1; returns each one's base URL and hit list."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> tuple[str, list[web.Request]]:
        hits: list[web.Request] = []

        async def recorded(request: web.Request) -> Any:
            hits.append(request)
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", recorded)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{site.port}", hits

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[OpenAIBackend]:
    async with aiohttp.ClientSession() as session:
        yield OpenAIBackend(session, max_response_bytes=64 * 1024 * 1024)


PROMPT = images_pb2.GenerateImagesRequest(prompt="x")


def deployment(base: str, provider: str = "openai") -> Deployment:
    return Deployment(
        provider=provider,  # type: ignore[arg-type]
        upstream_model="m",
        api_base=f"{base}/v1",
        api_key="sk-must-stay-home",
        api_version="2025-04-01-preview" if provider == "azure" else None,
        timeout=10,
    )


@pytest.mark.parametrize("provider", ["openai", "azure"])
async def test_a_redirect_is_never_followed_with_our_key(serve, backend, provider):
    elsewhere, stolen = await serve(lambda request: web.json_response({}))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{elsewhere}/steal")

    upstream, _ = await serve(redirect)
    with pytest.raises(GatewayError) as caught:
        await backend.generate(PROMPT, deployment(upstream, provider))
    assert caught.value.http_status == 502
    assert stolen == []  # the other host was never contacted, key or not


def sse(*events: tuple[str | None, str]) -> bytes:
    frames = []
    for name, data in events:
        frames.append((f"event: {name}\n" if name else "") + f"data: {data}\n\n")
    return "".join(frames).encode()


def completed() -> str:
    return json.dumps(
        {
            "type": "image_generation.completed",
            "b64_json": base64.b64encode(png_image(300, 0)).decode(),
            "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        }
    )


async def stream_types(serve, backend, body: bytes) -> list[str]:  # type: ignore[no-untyped-def]
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/event-stream")

    upstream, _ = await serve(answer)
    events = backend.stream(PROMPT, deployment(upstream))
    return [event.type async for event in events]


async def test_done_after_the_image_ends_the_stream_cleanly(serve, backend):
    body = sse(("image_generation.completed", completed()), (None, "[DONE]"))
    assert await stream_types(serve, backend, body) == ["image_generation.completed"]


async def test_unknown_event_types_are_skipped_not_fatal(serve, backend):
    body = sse(
        ("image_generation.in_progress", json.dumps({"type": "image_generation.in_progress"})),
        ("image_generation.completed", completed()),
    )
    assert await stream_types(serve, backend, body) == ["image_generation.completed"]


async def test_a_downloaded_url_that_is_not_an_image_is_refused(serve, backend):
    async def answer(request: web.Request) -> web.Response:
        if request.path.startswith("/files/"):
            return web.Response(body=b"<html>not an image</html>", content_type="text/html")
        base = f"http://{request.host}"
        return web.json_response({"created": 1, "data": [{"url": f"{base}/files/1.png"}]})

    upstream, _ = await serve(answer)
    with pytest.raises(GatewayError) as caught:
        await backend.generate(PROMPT, deployment(upstream))
    assert caught.value.code == grpc.StatusCode.INTERNAL and caught.value.http_status == 502
    assert caught.value.reason == "UPSTREAM_INVALID_RESPONSE"


async def test_an_unparseable_image_url_is_refused_not_a_500(serve, backend):
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"created": 1, "data": [{"url": "http://a\\b:x/1.png"}]})

    upstream, _ = await serve(answer)
    with pytest.raises(GatewayError) as caught:
        await backend.generate(PROMPT, deployment(upstream))
    assert caught.value.reason == "UPSTREAM_URL_REFUSED"


async def test_sse_reader_handles_one_big_event_in_tiny_chunks():
    image = base64.b64encode(png_image(200_000, 1)).decode()
    wire = f"event: big\r\ndata: {image}\r\n\r\n: keep-alive\n\ndata: tail\n\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(wire), 7):
            yield wire[start : start + 7]

    events = [e async for e in read_events(chunks(), max_event_bytes=1_000_000)]
    assert [(e.event, e.data) for e in events] == [("big", image), ("message", "tail")]
