"""End to end: the official OpenAI SDK through the HTTP door, and gRPC, against one real core."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import openai
import pytest
import sqlalchemy as sa

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.server import Core, GrpcServer
from aqueduct_grpc.storage.database import usage_table
from aqueduct_grpc.testing.fake_upstream import Drop, Fail, FakeUpstream, Succeed
from tests.accounting import usage_recorded
from tests.conftest import UPSTREAM_KEY, bearer
from tests.grpc_errors import details_of
from tests.key_forms import assert_no_key, key_forms


@pytest.fixture
async def http(http_door: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=http_door) as session:
        yield session


async def test_sdk_gets_exactly_what_the_upstream_sent(client, upstream: FakeUpstream):
    raw = await client.images.with_raw_response.generate(
        model="gpt-image-1", prompt="a lighthouse at dusk", n=2, size="1024x1024", quality="high"
    )
    sent = upstream.requests[0].reply_json
    # Byte-for-byte the same JSON document (integers as numbers, nothing added).
    assert json.loads(raw.content) == sent
    result = raw.parse()
    assert [base64.b64decode(d.b64_json) for d in result.data] == [
        upstream.image(i) for i in (0, 1)
    ]
    assert result.usage is not None and result.usage.total_tokens == sent["usage"]["total_tokens"]
    assert (result.created, result.size, result.quality) == (sent["created"], "1024x1024", "high")


async def test_grpc_door_gives_the_same_answer(stub, secret, upstream: FakeUpstream):
    response = await stub.GenerateImages(
        images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="a lighthouse at dusk", n=2),
        metadata=bearer(secret),
    )
    sent = upstream.requests[0].reply_json
    assert response.created == sent["created"]
    assert [d.b64_json for d in response.data] == [
        base64.b64decode(d["b64_json"]) for d in sent["data"]
    ]
    assert response.usage.output_tokens == sent["usage"]["output_tokens"]


async def test_sdk_lists_the_tokens_models(client, gateway: Core, http_door: str):
    models = [m.id async for m in client.models.list()]
    assert models == [
        "gpt-image-1",
        "forwarding-image",
        "slow-image",
        "failover-image",
        "aqueduct-demo",
    ]
    _, limited = await gateway.tokens.create("limited", models=["house-image"])
    async with openai.AsyncOpenAI(
        base_url=f"{http_door}/v1", api_key=limited, max_retries=0
    ) as sdk:
        assert [m.id async for m in sdk.models.list()] == ["gpt-image-1"]


async def test_unversioned_routes_work_too(http, secret, upstream):
    headers = {"Authorization": f"Bearer {secret}"}
    async with http.post("/images/generations", json={"prompt": "x"}, headers=headers) as resp:
        assert resp.status == 200
        assert base64.b64decode((await resp.json())["data"][0]["b64_json"]) == upstream.image(0)
    async with http.get("/models", headers=headers) as resp:
        body = await resp.json()
        assert (
            resp.status == 200 and body["object"] == "list" and body["data"][0]["object"] == "model"
        )


async def test_builtin_demo_model_through_the_sdk(client, upstream):
    result = await client.images.generate(model="demo", prompt="a red fox", size="256x256")
    png = base64.b64decode(result.data[0].b64_json)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert upstream.request_count == 0


async def test_large_images_through_the_sdk(client, upstream: FakeUpstream):
    upstream.image_bytes = 1_500_000
    result = await client.images.generate(model="gpt-image-1", prompt="big", n=10)
    images = [base64.b64decode(d.b64_json) for d in result.data]
    assert images == [upstream.image(i) for i in range(10)]
    assert sum(map(len, images)) > 14_000_000


def error_of(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    error = caught.value
    body = error.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in error.response.text and UPSTREAM_KEY not in error.response.text
    return body["error"]


@pytest.mark.parametrize(
    ("kwargs", "plan", "exception", "status", "expected"),
    [
        (
            {"model": "gpt-image-1", "n": 11},
            None,
            openai.BadRequestError,
            400,
            {"type": "invalid_request_error", "param": "n", "code": "integer_out_of_range"},
        ),
        (
            {"model": "dall-e-9"},
            None,
            openai.NotFoundError,
            404,
            {"type": "not_found_error", "param": "model", "code": "model_not_found"},
        ),
        (
            {"model": "gpt-image-1"},
            Fail(403, message="Organization must be verified.", type="permission_error"),
            openai.PermissionDeniedError,
            403,
            {"type": "permission_error", "message": "Organization must be verified."},
        ),
        (
            {"model": "gpt-image-1"},
            Fail(422, message="Prompt rejected.", type="invalid_request_error", code="moderation"),
            openai.UnprocessableEntityError,
            422,
            {"type": "invalid_request_error", "code": "moderation", "message": "Prompt rejected."},
        ),
        (
            {"model": "gpt-image-1"},
            Fail(429, retry_after=7),
            openai.RateLimitError,
            429,
            {"code": "rate_limit_exceeded"},
        ),
        (
            {"model": "gpt-image-1"},
            Fail(500, message="Upstream broke."),
            openai.InternalServerError,
            500,
            {"type": "server_error", "message": "Upstream broke.", "code": None},
        ),
        (
            {"model": "gpt-image-1"},
            Drop(),
            openai.InternalServerError,
            503,
            {"type": "server_error", "code": "upstream_unavailable"},
        ),
        (
            {"model": "slow-image"},
            Succeed(delay=30),
            openai.InternalServerError,
            504,
            {"type": "timeout_error", "code": "upstream_timeout"},
        ),
        (
            {"model": "gpt-image-1"},
            Fail(401),
            openai.InternalServerError,
            502,
            {"type": "server_error", "code": "upstream_authentication_failed"},
        ),
    ],
)
async def test_status_table_through_the_sdk(
    client, upstream, kwargs, plan, exception, status, expected
):
    if plan is not None:
        upstream.plan(plan)
    with pytest.raises(exception) as caught:
        await client.images.generate(prompt="x", **kwargs)
    assert caught.value.status_code == status
    error = error_of(caught)
    assert {key: error[key] for key in expected} == expected
    assert error["message"]
    if status == 429:
        assert caught.value.response.headers["Retry-After"] == "7"


async def test_missing_unknown_and_revoked_tokens_are_401(http_door, gateway, secret, http):
    async with http.post("/v1/images/generations", json={"prompt": "x"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "missing_api_key"
    async with openai.AsyncOpenAI(
        base_url=f"{http_door}/v1", api_key="aqk-wrong", max_retries=0
    ) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.images.generate(prompt="x")
        assert error_of(caught)["code"] == "invalid_api_key"
        assert error_of(caught)["type"] == "invalid_request_error"
    await gateway.tokens.revoke((await gateway.tokens.list())[0].id)
    async with openai.AsyncOpenAI(base_url=f"{http_door}/v1", api_key=secret, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.images.generate(prompt="x")
        assert error_of(caught)["code"] == "revoked_api_key"


async def test_unknown_parameter_is_refused_naming_it(client, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(
            model="gpt-image-1", prompt="x", extra_body={"input_fidelity": "high"}
        )
    error = error_of(caught)
    assert (error["param"], error["code"]) == ("input_fidelity", "unknown_parameter")
    assert error["message"] == "Unknown parameter: 'input_fidelity'."
    assert upstream.request_count == 0


async def test_unknown_parameter_is_forwarded_when_the_model_allows(client, upstream):
    await client.images.generate(
        model="forwarding-image", prompt="x", extra_body={"input_fidelity": "high", "seed": 42}
    )
    sent = upstream.requests[0].json
    assert sent["input_fidelity"] == "high" and sent["seed"] == 42


@pytest.mark.parametrize(
    ("body", "headers", "status", "param", "code"),
    [
        (b'{"prompt": "x",', {"Content-Type": "application/json"}, 400, None, None),
        (b'["prompt"]', {"Content-Type": "application/json"}, 400, None, None),
        (
            b'{"prompt": "x", "n": "abc"}',
            {"Content-Type": "application/json"},
            400,
            "n",
            "invalid_type",
        ),
        (b'{"prompt": 5}', {"Content-Type": "application/json"}, 400, "prompt", "invalid_type"),
        (b'{"prompt": "x"}', {"Content-Type": "text/plain"}, 415, None, None),
        (
            json.dumps({"prompt": "x" * 2_000_000}).encode(),
            {"Content-Type": "application/json"},
            413,
            None,
            None,
        ),
    ],
)
async def test_bad_input_is_a_clear_error_never_a_500(
    http, secret, upstream, body, headers, status, param, code
):
    headers = {**headers, "Authorization": f"Bearer {secret}"}
    async with http.post("/v1/images/generations", data=io.BytesIO(body), headers=headers) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        assert error["param"] == param
        if code is not None:
            assert error["code"] == code
    assert upstream.request_count == 0


async def test_unknown_route_and_wrong_method(http, secret):
    headers = {"Authorization": f"Bearer {secret}"}
    async with http.get("/v1/images/edits-nope", headers=headers) as resp:
        # What OpenAI answers for a URL it does not serve.
        error = (await resp.json())["error"]
        assert resp.status == 404 and error["type"] == "invalid_request_error"
        assert "/v1/images/edits-nope" in error["message"]
    async with http.get("/v1/images/generations", headers=headers) as resp:
        assert resp.status == 405 and "POST" in resp.headers["Allow"]


async def test_http_requests_are_accounted(client, gateway: Core, upstream):
    await client.images.generate(model="house-image", prompt="x", n=2, user="end-user-1")
    upstream.plan(Fail(500))
    with pytest.raises(openai.InternalServerError):
        await client.images.generate(model="gpt-image-1", prompt="x")
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        rows = list(await connection.execute(sa.select(usage_table).order_by(usage_table.c.id)))
    assert [(r.status, r.model, r.images, r.end_user) for r in rows] == [
        ("OK", "gpt-image-1", 2, "end-user-1"),
        ("INTERNAL", "gpt-image-1", 0, None),
    ]
    assert rows[1].http_status == 500


async def test_http_door_health(http, core: GrpcServer):
    async with http.get("/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "SERVING"
    await core.health.enter_graceful_shutdown()
    async with http.get("/healthz") as resp:
        assert resp.status == 503


async def test_grpc_deadline_from_the_caller_is_kept(
    stub, secret, gateway: Core, upstream: FakeUpstream, monkeypatch
):
    # The upstream would answer after 120 s and the model's own timeout is 30 s: only the
    # caller's deadline, passed down to the upstream call, can end this call early. (The
    # caller's DEADLINE_EXCEEDED alone proves nothing: its gRPC client raises it by itself.)
    recorded = usage_recorded(gateway, monkeypatch)
    upstream.plan(Succeed(delay=120))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="x"),
            metadata=bearer(secret),
            timeout=0.5,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    async with asyncio.timeout(20):
        await recorded.wait()
        await upstream.wait_until(
            lambda: bool(upstream.requests) and upstream.requests[0].outcome == "cancelled"
        )
    # The core's upstream call was cut off by the caller's deadline: the upstream saw its
    # client go away, and the core accounted an upstream timeout. A core that dropped the
    # deadline is only cancelled by gRPC, and its row says CANCELLED.
    assert [r.outcome for r in upstream.requests] == ["cancelled"]
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        rows = list(await connection.execute(sa.select(usage_table)))
    assert [(r.status, r.error_reason, r.model, r.images) for r in rows] == [
        ("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", "gpt-image-1", 0)
    ]


def failure_echoing(form: str) -> Fail:
    """An upstream 400 whose every field echoes our key in one spelling."""
    return Fail(
        400,
        message=f"Incorrect API key provided: {form}.",
        type=f"invalid_request_error {form}",
        param=f"key {form}",
        code=f"bad_key:{form}",
    )


@pytest.mark.parametrize("form", key_forms(UPSTREAM_KEY))
async def test_the_upstream_key_never_reaches_a_caller_from_an_upstream_error(
    client, stub, secret, upstream: FakeUpstream, form
):
    upstream.plan(failure_echoing(form), failure_echoing(form))
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model="gpt-image-1", prompt="x")
    assert_no_key(caught.value.response.text, UPSTREAM_KEY)
    error = caught.value.response.json()["error"]
    # What is not the key stays (a Basic credential keeps its user name's part).
    for field, kept in (("message", "Incorrect API key provided: "), ("param", "key ")):
        assert error[field].startswith(kept) and "***" in error[field]
    assert error["code"].startswith("bad_key:") and "***" in error["code"]
    with pytest.raises(grpc.aio.AioRpcError) as grpc_caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="x"),
            metadata=bearer(secret),
        )
    found = details_of(grpc_caught.value)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert_no_key(f"{found.message} {found.metadata} {found.bad_fields}", UPSTREAM_KEY)
    assert_no_key(str(grpc_caught.value), UPSTREAM_KEY)
    assert found.metadata["type"].startswith("invalid_request_error ")


@pytest.mark.parametrize("form", key_forms(UPSTREAM_KEY))
async def test_the_upstream_key_never_reaches_a_caller_from_a_revised_prompt(
    client, stub, secret, upstream: FakeUpstream, form
):
    upstream.plan(*[Succeed(revised_prompt=f"A lighthouse; key {form} at dusk")] * 2)
    raw = await client.images.with_raw_response.generate(model="gpt-image-1", prompt="x")
    assert_no_key(raw.content.decode(), UPSTREAM_KEY)
    revised = raw.parse().data[0].revised_prompt or ""
    assert revised.startswith("A lighthouse; key ") and revised.endswith("*** at dusk")
    response = await stub.GenerateImages(
        images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="x"), metadata=bearer(secret)
    )
    assert response.data[0].revised_prompt == revised
    assert_no_key(response.data[0].revised_prompt, UPSTREAM_KEY)
    assert response.data[0].b64_json == upstream.image(0)  # the image itself is untouched


async def test_a_huge_upstream_message_is_cut_and_keeps_its_status(
    client, stub, secret, upstream: FakeUpstream
):
    # Long enough to overflow gRPC's trailers if it were passed on whole.
    message = "The prompt was rejected. " + "x" * 20_000 + UPSTREAM_KEY
    upstream.plan(Fail(400, message=message), Fail(400, message=message))
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model="gpt-image-1", prompt="x")
    error = error_of(caught)
    assert error["message"].startswith("The prompt was rejected. xxx")
    assert len(error["message"]) <= 1_000 and error["type"] == "invalid_request_error"
    with pytest.raises(grpc.aio.AioRpcError) as grpc_caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="x"),
            metadata=bearer(secret),
        )
    found = details_of(grpc_caught.value)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT and found.reason == "UPSTREAM_ERROR"
    assert len(found.message) <= 1_000 and found.metadata["http_status"] == "400"
