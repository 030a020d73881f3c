"""Tests for the fake OpenAI image API the gateway tests and the bench run against."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from aqueduct_grpc.testing.fake_upstream import (
    EDIT_IMAGE_TOKENS,
    PNG_INDEX_KEY,
    Drop,
    Fail,
    FakeUpstream,
    InvalidJson,
    Succeed,
    UploadedFile,
    png_image,
)

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "n": 1}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def generate(
    session: aiohttp.ClientSession, upstream: FakeUpstream, body: object = BODY, **kw: object
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(
        f"{upstream.base_url}/images/generations",
        json=body,
        headers={"Authorization": "Bearer sk-upstream"},
        **kw,  # type: ignore[arg-type]
    ) as response:
        return response.status, dict(response.headers), await response.read()


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


async def test_base_url_is_loopback_with_os_chosen_port(upstream: FakeUpstream) -> None:
    assert upstream.port > 0
    assert upstream.base_url == f"http://127.0.0.1:{upstream.port}/v1"


async def test_returns_n_distinct_real_pngs_in_order(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    status, headers, raw = await generate(session, upstream, {**BODY, "n": 3})

    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    body = json.loads(raw)
    assert isinstance(body["created"], int)
    assert len(body["data"]) == 3
    for index, item in enumerate(body["data"]):
        image = decode(item["b64_json"])
        assert image.format == "PNG"
        assert image.text[PNG_INDEX_KEY] == str(index)  # type: ignore[attr-defined]
        assert base64.b64decode(item["b64_json"]) == upstream.image(index)
    assert len({item["b64_json"] for item in body["data"]}) == 3
    assert body["usage"]["output_tokens"] == 3 * 272
    assert body["usage"]["input_tokens_details"] == {"image_tokens": 0, "text_tokens": 4}
    assert body["usage"]["total_tokens"] == 4 + 3 * 272
    assert body["output_format"] == "png"


@pytest.mark.parametrize("nbytes", [1_000, 1_500_000])
def test_png_size_follows_image_bytes(nbytes: int) -> None:
    data = png_image(nbytes, 0)
    assert abs(len(data) - nbytes) <= nbytes * 0.02
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert png_image(nbytes, 0) != png_image(nbytes, 1)


async def test_large_images(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream(image_bytes=1_500_000) as upstream:
        status, _, raw = await generate(session, upstream, {**BODY, "n": 2})
    assert status == 200
    images = [base64.b64decode(item["b64_json"]) for item in json.loads(raw)["data"]]
    assert [len(image) > 1_450_000 for image in images] == [True, True]
    assert images[0] != images[1]


async def test_echoes_requested_fields_and_revised_prompt(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeUpstream(revised_prompt="a tall lighthouse", usage=False) as upstream:
        _, _, raw = await generate(
            session, upstream, {**BODY, "size": "1536x1024", "quality": "high"}
        )
    body = json.loads(raw)
    assert body["size"] == "1536x1024"
    assert body["quality"] == "high"
    assert body["data"][0]["revised_prompt"] == "a tall lighthouse"
    assert "usage" not in body


async def test_url_mode_serves_the_image(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream(response_format="url") as upstream:
        _, _, raw = await generate(session, upstream)
        item = json.loads(raw)["data"][0]
        assert "b64_json" not in item
        async with session.get(item["url"]) as response:
            assert response.status == 200
            assert await response.read() == upstream.image(0)


async def test_records_requests(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    await generate(session, upstream, {**BODY, "model": "gpt-image-1", "quality": "low"})
    await generate(session, upstream)

    assert upstream.request_count == 2
    first = upstream.requests[0]
    assert first.method == "POST"
    assert first.path == "/v1/images/generations"
    assert first.authorization == "Bearer sk-upstream"
    assert first.headers["authorization"] == "Bearer sk-upstream"
    assert first.json == {**BODY, "quality": "low"}
    assert first.outcome == "replied"
    assert isinstance(first.behaviour, Succeed)

    upstream.reset()
    assert upstream.requests == []
    assert upstream.request_count == 0


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (
            Fail(400, message="bad size", param="size", code="invalid_value"),
            {"message": "bad size", "type": "invalid_request_error", "param": "size",
             "code": "invalid_value"},
        ),
        (
            Fail(401),
            {"message": "Incorrect API key provided.", "type": "invalid_request_error",
             "param": None, "code": "invalid_api_key"},
        ),
        (
            Fail(422, message="nope"),
            {"message": "nope", "type": "invalid_request_error", "param": None, "code": None},
        ),
        (
            Fail(500),
            {"message": "The server had an error while processing your request.",
             "type": "server_error", "param": None, "code": None},
        ),
        (
            Fail(503, type="overloaded", code="busy"),
            {"message": "The engine is currently overloaded, please try again later.",
             "type": "overloaded", "param": None, "code": "busy"},
        ),
    ],
)  # fmt: skip
async def test_planned_errors(
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    fail: Fail,
    error: dict[str, object],
) -> None:
    upstream.plan(fail)

    status, _, raw = await generate(session, upstream)
    assert status == fail.status
    assert json.loads(raw) == {"error": error}
    assert upstream.requests[0].outcome == "failed"

    # The plan is used up: the next request succeeds.
    status, _, _ = await generate(session, upstream)
    assert status == 200


async def test_rate_limit_sends_retry_after(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.plan(Fail(429, retry_after=2), Fail(429, retry_after=0.5))

    status, headers, raw = await generate(session, upstream)
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    _, headers, _ = await generate(session, upstream)
    assert headers["Retry-After"] == "0.5"


async def test_default_behaviour_applies_to_every_request(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.default = Fail(503)
    statuses = [(await generate(session, upstream))[0] for _ in range(3)]
    assert statuses == [503, 503, 503]


async def test_invalid_json(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.plan(InvalidJson())
    status, _, raw = await generate(session, upstream)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(raw)


@pytest.mark.parametrize("reset", [False, True])
async def test_drop_closes_without_response(
    upstream: FakeUpstream, session: aiohttp.ClientSession, reset: bool
) -> None:
    upstream.plan(Drop(reset=reset))
    with pytest.raises(aiohttp.ClientError):
        await generate(session, upstream)
    assert upstream.requests[0].outcome == "dropped"
    status, _, _ = await generate(session, upstream)
    assert status == 200


async def test_delay(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    upstream.plan(Succeed(delay=0.3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, _ = await generate(session, upstream)
    assert status == 200
    assert loop.time() - started >= 0.3


async def test_client_going_away_is_recorded_as_cancelled(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.plan(Succeed(delay=5))
    call = asyncio.create_task(generate(session, upstream))
    async with asyncio.timeout(2):
        await upstream.wait_for_requests(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    async with asyncio.timeout(2):
        await upstream.wait_until(lambda: upstream.requests[0].outcome == "cancelled")


async def test_required_api_key(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream(api_key="sk-other") as upstream:
        status, _, raw = await generate(session, upstream)
    assert status == 401
    assert json.loads(raw)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"model": "m"}, "prompt"), ({**BODY, "n": 11}, "n"), ({**BODY, "n": "2"}, "n")],
)
async def test_rejects_malformed_requests(
    upstream: FakeUpstream, session: aiohttp.ClientSession, body: object, param: str
) -> None:
    status, _, raw = await generate(session, upstream, body)
    assert status == 400
    assert json.loads(raw)["error"]["param"] == param


def test_runs_as_a_process() -> None:
    command = [
        sys.executable,
        "-m",
        "aqueduct_grpc.testing.fake_upstream",
        "--port",
        "0",
        "--image-bytes",
        "2000",
    ]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            ready = process.stdout.readline().split()
            assert ready[0] == "READY"
            port = int(ready[1].removeprefix("port="))
            url = f"http://127.0.0.1:{port}/v1/images/generations"

            async def call() -> dict[str, list[dict[str, str]]]:
                async with aiohttp.ClientSession() as client, client.post(url, json=BODY) as r:
                    return await r.json()  # type: ignore[no-any-return]

            body = asyncio.run(call())
            assert base64.b64decode(body["data"][0]["b64_json"]) == png_image(2000, 0)
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0


async def test_stats_count_what_was_answered(upstream, session):
    # The bench checks a gateway's successes against these counts.
    upstream.plan(Succeed(), Fail(status=500))
    assert (await generate(session, upstream))[0] == 200
    assert (await generate(session, upstream))[0] == 500
    async with session.get(f"{upstream.root_url}/_stats") as response:
        stats = await response.json()
    assert stats["requests"] == 2
    assert stats["outcomes"] == {"replied": 1, "failed": 1}


# -- edits -------------------------------------------------------------------------------------


def edit_form(n: int | str | None = 2, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("prompt", "add a red hat")
    form.add_field("model", "gpt-image-1")
    if n is not None:
        form.add_field("n", str(n))
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("image[]", png_image(200, 0), filename="a.png", content_type="image/png")
    form.add_field("image[]", png_image(200, 1), filename="b.png", content_type="image/png")
    form.add_field("mask", png_image(200, 2), filename="mask.png", content_type="image/png")
    return form


async def edit(
    session: aiohttp.ClientSession, upstream: FakeUpstream, data: object, path: str = "/v1"
) -> tuple[int, bytes]:
    async with session.post(
        f"{upstream.root_url}{path}/images/edits",
        data=data,
        headers={"Authorization": "Bearer sk-upstream"},
    ) as response:
        return response.status, await response.read()


@pytest.mark.parametrize("path", ["/v1", ""])
async def test_edit_records_fields_and_files(
    upstream: FakeUpstream, session: aiohttp.ClientSession, path: str
) -> None:
    status, _ = await edit(session, upstream, edit_form(size="1024x1536"), path)

    assert status == 200
    [record] = upstream.requests
    assert record.path == f"{path}/images/edits"
    assert record.json is None
    assert record.authorization == "Bearer sk-upstream"
    assert record.form == {
        "prompt": ["add a red hat"],
        "model": ["gpt-image-1"],
        "n": ["2"],
        "size": ["1024x1536"],
    }
    assert list(record.form) == ["prompt", "model", "n", "size"]  # arrival order
    assert record.files == [
        UploadedFile(
            name="image[]", filename="a.png", content_type="image/png", data=png_image(200, 0)
        ),
        UploadedFile(
            name="image[]", filename="b.png", content_type="image/png", data=png_image(200, 1)
        ),
        UploadedFile(
            name="mask", filename="mask.png", content_type="image/png", data=png_image(200, 2)
        ),
    ]
    assert record.outcome == "replied"


@pytest.mark.parametrize("n", [1, 3])
async def test_edit_answers_n_images_and_echoes_the_form(
    upstream: FakeUpstream, session: aiohttp.ClientSession, n: int
) -> None:
    form = edit_form(n, size="1536x1024", quality="high", output_format="webp")
    status, raw = await edit(session, upstream, form)

    assert status == 200
    body = json.loads(raw)
    assert [base64.b64decode(item["b64_json"]) for item in body["data"]] == [
        upstream.image(index) for index in range(n)
    ]
    assert (body["size"], body["quality"], body["output_format"], body["background"]) == (
        "1536x1024",
        "high",
        "webp",
        "opaque",
    )
    # Four prompt words; two input images (the mask is not one).
    assert body["usage"]["input_tokens_details"] == {
        "image_tokens": 2 * EDIT_IMAGE_TOKENS,
        "text_tokens": 4,
    }
    assert body["usage"]["input_tokens"] == 4 + 2 * EDIT_IMAGE_TOKENS
    assert body["usage"]["output_tokens"] == n * 272
    assert upstream.requests[0].reply_json == body


async def test_edit_without_n_answers_one_image(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    status, raw = await edit(session, upstream, edit_form(None))
    assert status == 200
    assert len(json.loads(raw)["data"]) == 1


async def test_edit_follows_the_plan(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.plan(Fail(429, retry_after=1), InvalidJson())

    status, raw = await edit(session, upstream, edit_form())
    assert status == 429
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert upstream.requests[0].outcome == "failed"
    assert upstream.requests[0].files  # recorded even when failed
    status, raw = await edit(session, upstream, edit_form())
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(raw)
    status, _ = await edit(session, upstream, edit_form())
    assert status == 200


async def test_edit_drop_closes_without_response(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.plan(Drop())
    with pytest.raises(aiohttp.ClientError):
        await edit(session, upstream, edit_form())
    assert upstream.requests[0].outcome == "dropped"


@pytest.mark.parametrize("n", ["11", "two"])
async def test_edit_rejects_a_bad_n(
    upstream: FakeUpstream, session: aiohttp.ClientSession, n: str
) -> None:
    status, raw = await edit(session, upstream, edit_form(n))
    assert status == 400
    assert json.loads(raw)["error"]["param"] == "n"


async def test_edit_needs_a_multipart_body(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    async with session.post(f"{upstream.base_url}/images/edits", json=BODY) as response:
        status, body = response.status, await response.json()

    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "multipart/form-data" in body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    record = upstream.requests[0]
    assert (record.json, record.form, record.files) == (None, {}, [])
    assert record.body == json.dumps(BODY).encode()
