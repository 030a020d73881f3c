"""Upstream edge cases a real upstream (or someone in its place) can produce.

Each runs the real HTTP backend against a small aiohttp server on loopback
that answers exactly the bytes under test.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.testing.fake_upstream import png_image
from aqueduct_grpc.upstreams.openai.backend import OpenAIBackend
from aqueduct_grpc.upstreams.openai.event_stream import read_events
from aqueduct_grpc.upstreams.openai.scrubbing import REDACTED, KeyScrubber
from tests.key_forms import assert_no_key, key_forms

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
KEY = "sk-must-stay-home"


def deployment(base: str, provider: str = "openai") -> Deployment:
    return Deployment(
        provider=provider,  # type: ignore[arg-type]
        upstream_model="m",
        api_base=f"{base}/v1",
        api_key=KEY,
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


async def test_stream_event_texts_are_scrubbed_of_the_key(serve, backend):
    forms = key_forms(KEY)
    event = json.loads(completed())
    event.update(size=forms[0], quality=forms[3], background=forms[6], output_format=forms[10])
    body = sse(("image_generation.completed", json.dumps(event)))

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/event-stream")

    upstream, _ = await serve(answer)
    [message] = [m async for m in backend.stream(PROMPT, deployment(upstream))]
    texts = (message.size, message.quality, message.background, message.output_format)
    assert all("***" in text for text in texts)
    assert_no_key(" ".join(texts), KEY)
    assert message.b64_json == png_image(300, 0)


async def test_answer_texts_are_scrubbed_and_an_upstream_url_is_never_passed_on(serve, backend):
    image = base64.b64encode(png_image(300, 0)).decode()

    async def answer(request: web.Request) -> web.Response:
        item = {"b64_json": image, "url": f"http://x/{KEY}.png", "revised_prompt": f"k={KEY}"}
        return web.json_response({"created": 1, "data": [item], "size": KEY.upper()})

    upstream, _ = await serve(answer)
    response = await backend.generate(PROMPT, deployment(upstream))
    assert (response.data[0].revised_prompt, response.size) == ("k=***", "***")
    assert not response.data[0].HasField("url")
    assert response.data[0].b64_json == png_image(300, 0)


async def test_unknown_event_types_are_logged_without_the_key(serve, backend, caplog):
    caplog.set_level(logging.DEBUG)
    unknown = json.dumps({"type": f"image_generation.{KEY}"})
    body = sse(("x", unknown), ("image_generation.completed", completed()))
    assert await stream_types(serve, backend, body) == ["image_generation.completed"]
    assert "skipping upstream stream event" in caplog.text
    assert_no_key(caplog.text, KEY)


async def test_an_error_body_of_any_size_fits_a_trailer(serve, backend):
    error = {"message": "m" * 100_000 + KEY, "type": "t" * 5_000, "param": "p" * 5_000, "code": 7}

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"error": error}, status=400)

    upstream, _ = await serve(answer)
    with pytest.raises(GatewayError) as caught:
        await backend.generate(PROMPT, deployment(upstream))
    found = caught.value
    assert found.message.startswith("mmm") and len(found.message) <= 1_000
    assert found.param is not None and found.error_type is not None
    assert len(found.param) <= 200 and len(found.error_type) <= 200 and found.openai_code == "7"
    assert len(found.to_status().trailing_metadata[0][1]) < 4_096


def test_a_key_cut_in_two_by_the_scan_limit_is_not_half_kept():
    key = "sk-" + "k" * 60
    scrub = KeyScrubber(key)
    for at in range(64 * 1024 - len(key), 64 * 1024 + 1, 7):
        text = "a" * at + key + "b" * 10
        clean = scrub.bounded(text, 100_000)
        assert "sk-kkkkk" not in clean and "kkkkk" not in clean


# API keys are printable ASCII; what surrounds them may be anything.
_keys = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="*"),
    min_size=12,
    max_size=48,
)
_around = st.binary(max_size=8)


@given(key=_keys, before=_around, after=_around, which=st.integers(0, 100), words=st.text())
def test_every_spelling_of_any_key_is_scrubbed_wherever_it_sits(key, before, after, which, words):
    raw = key.encode()
    wrapped = before + raw + after
    spellings = [
        *key_forms(key),
        base64.b64encode(wrapped).decode(),
        base64.urlsafe_b64encode(wrapped).decode().rstrip("="),
    ]
    form = spellings[which % len(spellings)]
    clean = KeyScrubber(key)(f"{words} {form} {words}")
    assert REDACTED in clean
    assert_no_key(clean, key)


@given(key=_keys, text=st.text(max_size=300), limit=st.integers(1, 400))
def test_bounded_texts_are_short_and_clean(key, text, limit):
    clean = KeyScrubber(key).bounded(text + key + text, limit)
    assert len(clean) <= limit
    assert_no_key(clean, key)


DEEP = 200_000  # far past what json.loads can recurse into


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        # An error body nested too deep: the upstream's status still speaks.
        (400, b'{"error": ' + b"[" * DEEP + b"]" * DEEP + b"}", "application/json", "400"),
        # A success body nested too deep: an invalid response, not our failure.
        (200, b'{"data": ' + b"[" * DEEP + b"]" * DEEP + b"}", "application/json", "502"),
        (
            200,
            b"event: x\ndata: " + b"[" * DEEP + b"]" * DEEP + b"\n\n",
            "text/event-stream",
            "502",
        ),
    ],
)
async def test_json_nested_past_the_parser_is_an_upstream_fault_not_a_500(
    serve, backend, status, body, content_type, expected
):
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type=content_type)

    upstream, _ = await serve(answer)
    with pytest.raises(GatewayError) as caught:
        if content_type == "text/event-stream":
            [event async for event in backend.stream(PROMPT, deployment(upstream))]
        else:
            await backend.generate(PROMPT, deployment(upstream))
    assert str(caught.value.http_status) == expected


@pytest.mark.parametrize("key", ["k", "sk", "sk-", "sk-up"])
def test_a_short_key_is_scrubbed_too(key: str) -> None:
    # Too short for any base64 piece: building the scrubber used to raise,
    # which turned every upstream answer into a 502.
    assert KeyScrubber(key)(f"got: {key}.") == f"got: {REDACTED}."
