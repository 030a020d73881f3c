"""ImageService over gRPC against a real core and a real fake upstream."""

from __future__ import annotations

import asyncio
import io
import logging

import aiohttp
import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2
from PIL import Image

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.accounting.policy import Limits
from aqueduct_grpc.server import Core
from aqueduct_grpc.storage.database import usage_table
from aqueduct_grpc.testing.fake_upstream import Drop, Fail, FakeUpstream, InvalidJson, Succeed
from tests.accounting import token_with, usage_recorded
from tests.conftest import UPSTREAM_KEY, bearer
from tests.grpc_errors import details_of

Request = images_pb2.GenerateImagesRequest


async def call_error(stub: images_pb2_grpc.ImageServiceStub, request: Request, secret: str, **kw):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(request, metadata=bearer(secret), **kw)
    return details_of(caught.value)


async def usage_rows(gateway: Core) -> list[sa.Row]:  # type: ignore[type-arg]
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        return list(await connection.execute(usage_table.select().order_by(usage_table.c.id)))


async def test_generate_returns_what_the_upstream_sent(stub, secret, upstream: FakeUpstream):
    response = await stub.GenerateImages(
        Request(model="gpt-image-1", prompt="a lighthouse", n=3, size="1024x1024"),
        metadata=bearer(secret),
    )
    assert [image.b64_json for image in response.data] == [upstream.image(i) for i in range(3)]
    sent = upstream.requests[0].reply_json
    assert response.created == sent["created"]
    assert (response.size, response.quality, response.output_format, response.background) == (
        sent["size"],
        sent["quality"],
        sent["output_format"],
        sent["background"],
    )
    usage = sent["usage"]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert response.usage.total_tokens == usage["total_tokens"]
    assert (
        response.usage.input_tokens_details.text_tokens
        == usage["input_tokens_details"]["text_tokens"]
    )


async def test_upstream_gets_its_key_and_model_name_never_the_callers_token(
    stub, secret, upstream: FakeUpstream
):
    await stub.GenerateImages(
        Request(model="house-image", prompt="a fox", quality="high", user="u-42"),
        metadata=bearer(secret),
    )
    [received] = upstream.requests
    assert received.authorization == f"Bearer {UPSTREAM_KEY}"
    assert secret not in str(dict(received.headers)) and secret.encode() not in received.body
    # Only what the caller set is forwarded, under the upstream's model name.
    assert received.json == {
        "model": "gpt-image-1",
        "prompt": "a fox",
        "quality": "high",
        "user": "u-42",
    }


async def test_default_model_is_the_first_image_model(stub, secret, upstream: FakeUpstream):
    await stub.GenerateImages(Request(prompt="no model named"), metadata=bearer(secret))
    assert upstream.requests[0].json["model"] == "gpt-image-1"


@pytest.mark.parametrize("model", ["dall-e-9", "gpt-4o"])
async def test_unknown_or_non_image_model_is_not_found(stub, secret, upstream, model):
    found = await call_error(stub, Request(model=model, prompt="x"), secret)
    assert found.code == grpc.StatusCode.NOT_FOUND
    assert found.reason == "MODEL_NOT_FOUND" and found.metadata["param"] == "model"
    assert model in found.message
    assert upstream.request_count == 0


async def test_token_model_access_hides_other_models(stub, gateway: Core, upstream):
    _, limited = await gateway.tokens.create("limited", models=["demo"])
    listed = await stub.ListModels(images_pb2.ListModelsRequest(), metadata=bearer(limited))
    assert [m.id for m in listed.data] == ["aqueduct-demo"]
    denied = await call_error(stub, Request(model="gpt-image-1", prompt="x"), limited)
    unknown = await call_error(stub, Request(model="no-such-model", prompt="x"), limited)
    # A model the token may not use looks exactly like one that does not exist.
    assert denied.code == unknown.code == grpc.StatusCode.NOT_FOUND
    assert denied.reason == unknown.reason
    assert upstream.request_count == 0
    allowed = await stub.GenerateImages(
        Request(model="aqueduct-demo", prompt="x", size="256x256"), metadata=bearer(limited)
    )
    assert len(allowed.data) == 1


async def test_list_models_shows_image_models_with_openai_fields(stub, secret):
    listed = await stub.ListModels(images_pb2.ListModelsRequest(), metadata=bearer(secret))
    assert listed.object == "list"
    assert [m.id for m in listed.data] == [
        "gpt-image-1",
        "forwarding-image",
        "slow-image",
        "failover-image",
        "aqueduct-demo",
    ]
    assert all(m.object == "model" and m.created > 0 and m.owned_by for m in listed.data)


async def test_builtin_model_renders_a_real_image_of_the_requested_size(stub, secret, upstream):
    response = await stub.GenerateImages(
        Request(model="demo", prompt="a red fox", n=2, size="1536x1024", output_format="webp"),
        metadata=bearer(secret),
    )
    assert len(response.data) == 2 and response.output_format == "webp"
    pictures = [Image.open(io.BytesIO(image.b64_json)) for image in response.data]
    assert [(p.format, p.size) for p in pictures] == [("WEBP", (1536, 1024))] * 2
    assert response.data[0].b64_json != response.data[1].b64_json
    assert upstream.request_count == 0


async def test_builtin_model_rejects_a_size_it_cannot_render(stub, secret):
    found = await call_error(stub, Request(model="demo", prompt="x", size="10x10"), secret)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT and found.metadata["param"] == "size"


@pytest.mark.parametrize(
    ("request_kwargs", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "output_compression": 101}, "output_compression"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "response_format": "gif"}, "response_format"),
        ({"prompt": "x" * 32_001}, "prompt"),
    ],
)
async def test_invalid_requests_name_the_field_and_never_reach_the_upstream(
    stub, secret, upstream, request_kwargs, param
):
    found = await call_error(stub, Request(model="gpt-image-1", **request_kwargs), secret)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert found.metadata["param"] == param and found.bad_fields == [param]
    assert upstream.request_count == 0


async def test_unknown_parameters_are_rejected_by_default(stub, secret, upstream):
    extras = struct_pb2.Struct()
    extras.update({"input_fidelity": "high"})
    found = await call_error(
        stub, Request(model="gpt-image-1", prompt="x", extra_parameters=extras), secret
    )
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert found.reason == "UNKNOWN_PARAMETER" and found.metadata["param"] == "input_fidelity"
    assert found.message == "Unknown parameter: 'input_fidelity'."
    assert upstream.request_count == 0


async def test_unknown_parameters_are_forwarded_when_the_model_says_so(stub, secret, upstream):
    extras = struct_pb2.Struct()
    extras.update({"input_fidelity": "high", "extra": {"a": [1, "b"]}})
    await stub.GenerateImages(
        Request(model="forwarding-image", prompt="x", extra_parameters=extras),
        metadata=bearer(secret),
    )
    sent = upstream.requests[0].json
    assert sent["input_fidelity"] == "high" and sent["extra"] == {"a": [1, "b"]}
    assert sent["model"] == "gpt-image-1-mini"


@pytest.mark.parametrize(("name", "value"), [("model", "sneaky"), ("n", 1000), ("stream", True)])
async def test_a_declared_parameter_cannot_be_forwarded_as_an_unknown_one(
    stub, secret, upstream, name, value
):
    # Only a gRPC caller can put one there; forwarded, it would skip validation
    # (an n of 1,000 charged as one image, a stream the answer is not read as).
    extras = struct_pb2.Struct()
    extras.update({"input_fidelity": "high", name: value})
    found = await call_error(
        stub, Request(model="forwarding-image", prompt="x", extra_parameters=extras), secret
    )
    assert (found.code, found.metadata["param"]) == (grpc.StatusCode.INVALID_ARGUMENT, name)
    assert upstream.request_count == 0


@pytest.mark.parametrize(
    ("behaviour", "code", "http_status"),
    [
        (
            Fail(400, message="Invalid size.", param="size", code="invalid_value"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "400",
        ),
        (Fail(422, message="Unprocessable prompt."), grpc.StatusCode.INVALID_ARGUMENT, "422"),
        (Fail(429, retry_after=7), grpc.StatusCode.RESOURCE_EXHAUSTED, "429"),
        (Fail(500), grpc.StatusCode.INTERNAL, "500"),
        (Fail(503), grpc.StatusCode.UNAVAILABLE, "503"),
        (Fail(504), grpc.StatusCode.DEADLINE_EXCEEDED, "504"),
        (Fail(401), grpc.StatusCode.INTERNAL, "502"),
        (InvalidJson(), grpc.StatusCode.INTERNAL, "502"),
    ],
)
async def test_upstream_errors_keep_their_status_and_message(
    stub, secret, upstream, behaviour, code, http_status
):
    upstream.plan(behaviour)
    found = await call_error(stub, Request(model="gpt-image-1", prompt="x"), secret)
    assert found.code == code
    assert found.metadata["http_status"] == http_status
    if isinstance(behaviour, Fail) and behaviour.status != 401:
        assert found.message == behaviour.body()["error"]["message"]
        assert found.metadata.get("type") == behaviour.body()["error"]["type"]
    if isinstance(behaviour, Fail) and behaviour.param:
        assert found.metadata["param"] == behaviour.param
        assert found.metadata["code"] == behaviour.code
    if isinstance(behaviour, Fail) and behaviour.retry_after:
        assert found.retry_seconds == behaviour.retry_after


async def test_upstream_key_is_scrubbed_from_echoed_messages(stub, secret, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    upstream.plan(Fail(400, message=f"Key {UPSTREAM_KEY} may not use size 9x9"), Fail(401))
    first = await call_error(stub, Request(model="gpt-image-1", prompt="x"), secret)
    second = await call_error(stub, Request(model="gpt-image-1", prompt="x"), secret)
    for found in (first, second):
        assert UPSTREAM_KEY not in found.message and UPSTREAM_KEY not in str(found.metadata)
    assert "***" in first.message
    assert UPSTREAM_KEY not in caplog.text and secret not in caplog.text


async def test_dropped_connection_is_unavailable(stub, secret, upstream):
    upstream.plan(Drop())
    found = await call_error(stub, Request(model="gpt-image-1", prompt="x"), secret)
    assert found.code == grpc.StatusCode.UNAVAILABLE and found.reason == "UPSTREAM_UNAVAILABLE"
    assert upstream.base_url not in found.message


async def test_unreachable_upstream_is_unavailable(stub, secret, upstream):
    await upstream.stop()
    found = await call_error(stub, Request(model="gpt-image-1", prompt="x"), secret)
    assert found.code == grpc.StatusCode.UNAVAILABLE
    assert "127.0.0.1" not in found.message


async def test_caller_deadline_bounds_and_cancels_the_upstream_call(
    stub, secret, gateway, upstream, monkeypatch
):
    # The upstream would answer after 120 s and the model's own timeout is 30 s: only the
    # caller's deadline, passed down to the upstream call, ends it. The caller's own
    # DEADLINE_EXCEEDED proves nothing (its gRPC client raises it by itself).
    recorded = usage_recorded(gateway, monkeypatch)
    upstream.plan(Succeed(delay=120))
    found = await call_error(stub, Request(model="gpt-image-1", prompt="x"), secret, timeout=1)
    assert found.code == grpc.StatusCode.DEADLINE_EXCEEDED
    async with asyncio.timeout(20):
        await recorded.wait()
        await upstream.wait_until(
            lambda: bool(upstream.requests) and upstream.requests[0].outcome == "cancelled"
        )
    # Bounded by the deadline: the upstream saw its client go away, and the row is an
    # upstream timeout. Without the deadline only gRPC cancels the handler: CANCELLED.
    assert [r.outcome for r in upstream.requests] == ["cancelled"]
    assert [(r.status, r.error_reason, r.images) for r in await usage_rows(gateway)] == [
        ("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", 0)
    ]


async def test_large_images_pass_intact(stub, secret, upstream):
    upstream.image_bytes = 1_500_000
    response = await stub.GenerateImages(
        Request(model="gpt-image-1", prompt="big", n=10), metadata=bearer(secret)
    )
    assert [len(i.b64_json) for i in response.data] == [len(upstream.image(i)) for i in range(10)]
    assert [image.b64_json for image in response.data] == [upstream.image(i) for i in range(10)]
    assert sum(len(i.b64_json) for i in response.data) > 14_000_000


async def test_usage_rows_are_written_for_successes_and_failures(stub, secret, gateway, upstream):
    await stub.GenerateImages(
        Request(
            model="house-image", prompt="x", n=2, size="1024x1024", quality="high", user="end-7"
        ),
        metadata=bearer(secret),
    )
    upstream.plan(Fail(500))
    await call_error(
        stub, Request(model="gpt-image-1", prompt="x", safety_identifier="sid-1"), secret
    )
    await call_error(stub, Request(model="nope", prompt="x"), secret)
    ok, failed, unknown = await usage_rows(gateway)
    token = (await gateway.tokens.list())[0]
    assert (ok.status, ok.model, ok.requested_model, ok.n, ok.images) == (
        "OK",
        "gpt-image-1",
        "house-image",
        2,
        2,
    )
    assert (ok.size, ok.quality, ok.end_user, ok.token_id) == (
        "1024x1024",
        "high",
        "end-7",
        token.id,
    )
    assert ok.total_tokens == upstream.requests[0].reply_json["usage"]["total_tokens"]
    assert ok.latency_ms > 0
    assert (failed.status, failed.http_status, failed.safety_identifier) == (
        "INTERNAL",
        500,
        "sid-1",
    )
    assert (unknown.status, unknown.error_reason, unknown.model) == (
        "NOT_FOUND",
        "MODEL_NOT_FOUND",
        None,
    )


async def test_concurrent_requests_all_succeed_and_are_all_accounted(
    stub, secret, gateway, upstream: FakeUpstream
):
    calls = [
        stub.GenerateImages(Request(model="gpt-image-1", prompt=f"p{i}"), metadata=bearer(secret))
        for i in range(200)
    ]
    results = await asyncio.gather(*calls)
    # Each call got its one image, byte for byte, from its own upstream request.
    assert [[image.b64_json for image in r.data] for r in results] == [[upstream.image(0)]] * 200
    prompts = sorted(r.json["prompt"] for r in upstream.requests)
    assert prompts == sorted(f"p{i}" for i in range(200))
    rows = await usage_rows(gateway)
    assert [(row.status, row.images) for row in rows] == [("OK", 1)] * 200


async def test_model_timeout_is_deadline_exceeded(stub, secret, upstream):
    upstream.plan(Succeed(delay=30))
    found = await call_error(stub, Request(model="slow-image", prompt="x"), secret)
    assert found.code == grpc.StatusCode.DEADLINE_EXCEEDED and found.reason == "UPSTREAM_TIMEOUT"
    async with asyncio.timeout(10):
        await upstream.wait_until(lambda: upstream.requests[0].outcome == "cancelled")


async def test_unreachable_deployment_fails_over_to_the_next(stub, secret, upstream):
    for _ in range(4):
        response = await stub.GenerateImages(
            Request(model="failover-image", prompt="x"), metadata=bearer(secret)
        )
        assert len(response.data) == 1
    assert [r.json["model"] for r in upstream.requests] == ["alive"] * 4


# The usage column that keeps each bounded request field.
STORED_FIELDS = {
    "model": "requested_model",
    "size": "size",
    "quality": "quality",
    "user": "end_user",
    "safety_identifier": "safety_identifier",
}


@pytest.mark.parametrize("field", list(STORED_FIELDS))
async def test_an_over_long_stored_string_is_refused_before_admission_and_accounted_cut(
    stub, gateway: Core, upstream, field
):
    # One request a minute: a refusal that used it up would make the next call a 429.
    secret = await token_with(gateway, "one-a-minute", limits=Limits(requests_per_minute=1))
    found = await call_error(
        stub, Request(prompt="x", **{"model": "gpt-image-1", field: "v" * 300_000}), secret
    )
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (found.reason, found.metadata["param"]) == ("STRING_ABOVE_MAX_LENGTH", field)
    assert upstream.request_count == 0
    await stub.GenerateImages(Request(model="gpt-image-1", prompt="x"), metadata=bearer(secret))
    refused, served = await usage_rows(gateway)
    assert (refused.status, served.status) == ("INVALID_ARGUMENT", "OK")
    kept = getattr(refused, STORED_FIELDS[field])
    assert kept.startswith("vvv") and kept.endswith("…")
    assert len(kept) == usage_table.c[STORED_FIELDS[field]].type.length


async def test_caller_values_echoed_in_errors_are_quoted_short(stub, secret, upstream):
    extras = struct_pb2.Struct()
    extras.update({"k" * 9_000: 1})
    refusals = [
        # Each would have overflowed gRPC's trailers (the caller saw a transport error).
        (Request(model="gpt-image-1", prompt="x", extra_parameters=extras), "UNKNOWN_PARAMETER"),
        (Request(model="demo", prompt="x", output_format="f" * 9_000), "INVALID_VALUE"),
        (Request(model="gpt-image-1", prompt="x", response_format="r" * 9_000), "INVALID_VALUE"),
        (Request(model="m" * 120, prompt="x"), "MODEL_NOT_FOUND"),
    ]
    for request, reason in refusals:
        found = await call_error(stub, request, secret)
        assert found.reason == reason
        assert len(found.message) < 200 and "…'" in found.message
        assert all(len(value) <= 64 for value in found.metadata.values())
    assert upstream.request_count == 0


async def test_forwarded_parameters_that_json_cannot_carry_are_refused(stub, secret, upstream):
    extras = struct_pb2.Struct()
    extras.update({"strength": float("nan")})
    found = await call_error(
        stub, Request(model="forwarding-image", prompt="x", extra_parameters=extras), secret
    )
    assert (found.code, found.metadata["param"]) == (grpc.StatusCode.INVALID_ARGUMENT, "strength")
    assert upstream.request_count == 0


@pytest.mark.parametrize(
    "method", ["GenerateImages", "StreamGenerateImages", "ListModels", "GetImageFile"]
)
@pytest.mark.parametrize("with_token", [True, False])
async def test_a_message_that_does_not_parse_is_invalid_argument_logged_once(
    channel, secret, upstream, caplog, method, with_token
):
    caplog.set_level(logging.DEBUG)
    path = f"/aqueduct.images.v1.ImageService/{method}"
    metadata = bearer(secret) if with_token else None
    # A truncated varint, a truncated fixed32 and (where field 1 is a string or a
    # message) bad UTF-8; ListModelsRequest has no field, so bytes there are unknown.
    garbage = [b"\x18\xff", b"\x0d\x00"]
    if method != "ListModels":
        garbage.append(b"\x0a\x02\xff\xfe")
    streams = method == "StreamGenerateImages"
    for data in garbage:
        call = (channel.unary_stream if streams else channel.unary_unary)(path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            answer = call(data, metadata=metadata)
            if streams:
                async for _ in answer:  # type: ignore[attr-defined]
                    pass
            else:
                await answer  # type: ignore[misc]
        found = details_of(caught.value)
        assert (found.code, found.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_MESSAGE")
        assert "DecodeError" not in found.message and "class" not in found.message
    records = [(r.levelno, r.name) for r in caplog.records if r.levelno >= logging.WARNING]
    assert records == [(logging.WARNING, "aqueduct_grpc.error_exit")]
    assert upstream.request_count == 0


async def test_the_http_door_tells_a_missing_prompt_from_an_empty_one(http_door, secret):
    bodies = {"missing": {}, "null": {"prompt": None}, "empty": {"prompt": ""}}
    answers = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
        for name, body in bodies.items():
            async with session.post(f"{http_door}/v1/images/generations", json=body) as answer:
                assert answer.status == 400
                answers[name] = (await answer.json())["error"]
    missing = {
        "message": "Missing required parameter: 'prompt'.",
        "type": "invalid_request_error",
        "param": "prompt",
        "code": "missing_required_parameter",
    }
    assert answers["missing"] == answers["null"] == missing
    assert answers["empty"] == {
        "message": "Invalid 'prompt': empty string.",
        "type": "invalid_request_error",
        "param": "prompt",
        "code": "empty_string",
    }
