"""The HTTP front end to end: a real aiohttp app in front of a real `grpc.aio` server.

The gRPC side is a small test servicer (canned responses, errors with rich
details on demand), not the real core.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from google.protobuf import any_pb2, duration_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from gateway_http import OPENAI, TRANSCODER, Reason, create_app
from gateway_http.endpoints import UnaryEndpoint
from tests.http import test_testproto as tp
from tests.http.test_errors import STATUS_ROWS

IMAGES = images_pb2.DESCRIPTOR.services_by_name["ImageService"]
MAX_BODY = 64 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}

Failure = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


class ImageCore(images_pb2_grpc.ImageServiceServicer):
    """Test servicer: records calls, returns `response`, or runs `fail`."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []
        self.test_calls: list[tuple[str, Any, dict[str, str]]] = []
        self.fail: Failure | None = None
        self.response = images_pb2.GenerateImagesResponse(
            created=1_700_000_000,
            data=[images_pb2.Image(b64_json=b"\x89PNG\r\n", revised_prompt="")],
            usage=images_pb2.ImageUsage(input_tokens=7, total_tokens=7),
        )
        self.port = 0
        self.health = health.aio.HealthServicer()

    async def _record(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.requests.append(request)
        self.metadata.append(
            {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        )
        if self.fail is not None:
            await self.fail(context)

    async def GenerateImages(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> images_pb2.GenerateImagesResponse:
        await self._record(request, context)
        return self.response

    async def ListModels(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> images_pb2.ListModelsResponse:
        await self._record(request, context)
        return images_pb2.ListModelsResponse(
            object="list",
            data=[images_pb2.Model(id="gpt-image-1", object="model", created=1, owned_by="x")],
        )


@pytest.fixture
async def core() -> AsyncIterator[ImageCore]:
    server = grpc.aio.server()
    servicer = ImageCore()
    images_pb2_grpc.add_ImageServiceServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((tp.generic_handler(servicer.test_calls),))
    health_pb2_grpc.add_HealthServicer_to_server(servicer.health, server)
    await servicer.health.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer
    await server.stop(None)


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client(core: ImageCore, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    app = create_app(
        grpc_target=f"127.0.0.1:{core.port}",
        services=[IMAGES, tp.SERVICE],
        max_body_bytes=MAX_BODY,
    )
    return await aiohttp_client(app)


def abort_with(code: grpc.StatusCode, message: str, *details: Any) -> Failure:
    async def fail(context: grpc.aio.ServicerContext) -> None:
        if not details:
            await context.abort(code, message)
        status = status_pb2.Status(code=code.value[0], message=message)
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        await context.abort_with_status(rpc_status.to_status(status))

    return fail


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


# ---------------------------------------------------------------- happy paths


@pytest.mark.parametrize("path", ["/v1/images/generations", "/images/generations"])
async def test_generate_images_both_bindings(
    client: TestClient[Any, Any], core: ImageCore, path: str
) -> None:
    resp = await client.post(path, json={"prompt": "a cat", "n": 1, "size": "1024x1024"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body == {
        "created": 1_700_000_000,  # int64 as a number
        "data": [{"b64_json": base64.b64encode(b"\x89PNG\r\n").decode(), "revised_prompt": ""}],
        "usage": {"input_tokens": 7, "output_tokens": 0, "total_tokens": 7},  # zeros are sent
    }
    (request,) = core.requests
    assert (request.prompt, request.n, request.size) == ("a cat", 1, "1024x1024")
    assert not request.HasField("quality")


@pytest.mark.parametrize("path", ["/v1/models", "/models"])
async def test_list_models_both_bindings(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert await resp.json() == {
        "object": "list",
        "data": [{"id": "gpt-image-1", "object": "model", "created": 1, "owned_by": "x"}],
    }


async def test_services_are_discovered_in_proto_packages(
    core: ImageCore, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(
        create_app(grpc_target=f"127.0.0.1:{core.port}", proto_packages=["aqueduct"])
    )
    resp = await client.get("/v1/models")
    assert resp.status == 200
    assert (await resp.json())["object"] == "list"


async def test_unknown_parameters_are_collected_for_the_core(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    resp = await client.post(
        "/v1/images/generations", json={"prompt": "p", "input_fidelity": "high", "x": [1]}
    )
    assert resp.status == 200
    assert json_format.MessageToDict(core.requests[0].extra_parameters) == {
        "input_fidelity": "high",
        "x": [1],
    }


async def test_path_variables_query_parameters_and_body_field(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    resp = await client.get("/test/v1/things/t%201/echo?tags=a&tags=b&big=9007199254740993")
    assert resp.status == 200
    body = await resp.json()
    assert body["echo"]["name"] == "things/t 1" and body["echo"]["tags"] == ["a", "b"]
    assert body["echo"]["big"] == 9007199254740993

    resp = await client.put("/test/v1/put/n1", json={"label": "L", "size": 3})
    assert resp.status == 200
    echo = (await resp.json())["echo"]
    assert (echo["name"], echo["inner"]) == ("n1", {"label": "L", "size": 3})

    resp = await client.get("/test/v1/inner/abc:peek")
    assert resp.status == 200
    # response_body
    assert await resp.json() == [{"label": "abc", "size": 0}, {"label": "second", "size": 0}]
    assert [c[0] for c in core.test_calls] == ["Echo", "PutInner", "Peek"]


async def test_large_image_response(client: TestClient[Any, Any], core: ImageCore) -> None:
    images = [bytes([i]) * 1_500_000 for i in range(10)]
    core.response = images_pb2.GenerateImagesResponse(
        created=1, data=[images_pb2.Image(b64_json=b) for b in images]
    )
    resp = await client.post("/v1/images/generations", json={"prompt": "p", "n": 10})
    assert resp.status == 200
    body = await resp.json()
    assert [base64.b64decode(d["b64_json"]) for d in body["data"]] == images


async def test_headers_are_forwarded_as_metadata(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    resp = await client.get(
        "/v1/models",
        headers={"Authorization": "Bearer sk-Test_123", "X-Request-ID": "req-1", "Cookie": "c=1"},
    )
    assert resp.status == 200
    metadata = core.metadata[0]
    assert metadata["authorization"] == "Bearer sk-Test_123"
    assert metadata["x-request-id"] == "req-1"
    assert "cookie" not in metadata


# ----------------------------------------------------------------- bad input


async def test_unknown_path_is_404(client: TestClient[Any, Any]) -> None:
    error = await error_of(await client.get("/v1/nothing"), 404)
    assert error["type"] == "invalid_request_error"
    assert "/v1/nothing" in error["message"]


async def test_wrong_method_is_405(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/images/generations")
    error = await error_of(resp, 405)
    assert resp.headers["Allow"] == "POST"
    assert error["type"] == "invalid_request_error"


async def test_invalid_json(client: TestClient[Any, Any], core: ImageCore) -> None:
    resp = await client.post("/v1/images/generations", data=b"{nope", headers=JSON_HEADERS)
    error = await error_of(resp, 400)
    assert error["message"].startswith("We could not parse the JSON body of your request")
    assert core.requests == []


async def test_body_not_an_object(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/images/generations", json=["prompt"])
    error = await error_of(resp, 400)
    assert "JSON object" in error["message"]


async def test_unknown_field_without_collector(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    resp = await client.post("/test/v1/echo/x", json={"big": 1, "foo": 2})
    error = await error_of(resp, 400)
    assert error == {
        "message": "Unknown parameter: 'foo'.",
        "type": "invalid_request_error",
        "param": "foo",
        "code": "unknown_parameter",
    }
    assert core.test_calls == []


@pytest.mark.parametrize(
    ("payload", "param"), [({"prompt": "p", "n": "abc"}, "n"), ({"prompt": 5}, "prompt")]
)
async def test_wrong_type_names_the_param(
    client: TestClient[Any, Any], payload: dict[str, Any], param: str
) -> None:
    error = await error_of(await client.post("/v1/images/generations", json=payload), 400)
    assert (error["param"], error["code"]) == (param, "invalid_type")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_wrong_content_type_is_415(
    client: TestClient[Any, Any], core: ImageCore, content_type: str
) -> None:
    resp = await client.post(
        "/v1/images/generations", data=b'{"prompt": "p"}', headers={"Content-Type": content_type}
    )
    await error_of(resp, 415)
    assert core.requests == []


async def test_json_content_type_parameters_are_ignored(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/v1/images/generations",
        data='{"prompt": "caf\u00e9"}'.encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status == 200


async def test_body_over_the_limit_is_413(client: TestClient[Any, Any], core: ImageCore) -> None:
    payload = json.dumps({"prompt": "x" * MAX_BODY}).encode()
    error = await error_of(
        await client.post("/v1/images/generations", data=payload, headers=JSON_HEADERS), 413
    )
    assert str(MAX_BODY) in error["message"]
    assert core.requests == []


async def test_chunked_body_over_the_limit_is_413(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}'

    resp = await client.post("/v1/images/generations", data=chunks(), headers=JSON_HEADERS)
    await error_of(resp, 413)
    assert core.requests == []


# --------------------------------------------------------------- gRPC errors

C = grpc.StatusCode


@pytest.mark.parametrize(("code", "http_status", "type_"), STATUS_ROWS)
async def test_grpc_codes_map_to_http(
    client: TestClient[Any, Any],
    core: ImageCore,
    code: grpc.StatusCode,
    http_status: int,
    type_: str,
) -> None:
    # With rich details, as the core always sends them (the "code" metadata: none).
    core.fail = abort_with(code, "core says no", error_details_pb2.ErrorInfo(metadata={"code": ""}))
    error = await error_of(await client.get("/v1/models"), http_status)
    assert error["type"] == type_
    assert (error["param"], error["code"]) == (None, None)
    assert error["message"]


async def test_error_info_sets_code_param_and_exact_status(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    info = error_details_pb2.ErrorInfo(
        reason="UPSTREAM_REJECTED", metadata={"param": "size", "http_status": "422"}
    )
    core.fail = abort_with(C.INVALID_ARGUMENT, "Size 7x7 is not supported.", info)
    error = await error_of(await client.post("/v1/images/generations", json={"prompt": "p"}), 422)
    assert error == {
        "message": "Size 7x7 is not supported.",
        "type": "invalid_request_error",
        "param": "size",
        "code": "upstream_rejected",
    }


async def test_error_info_code_override_and_bad_request_param(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    info = error_details_pb2.ErrorInfo(reason="INVALID_API_KEY", metadata={"code": ""})
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="model", description="unknown")
    core.fail = abort_with(C.UNAUTHENTICATED, "Incorrect API key provided.", info, bad)
    error = await error_of(await client.get("/v1/models"), 401)
    assert (error["code"], error["param"]) == (None, "model")


async def test_retry_info_sets_retry_after(client: TestClient[Any, Any], core: ImageCore) -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=1))
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMIT_EXCEEDED")
    core.fail = abort_with(C.RESOURCE_EXHAUSTED, "Rate limit reached.", info, retry)
    resp = await client.get("/v1/models")
    error = await error_of(resp, 429)
    assert resp.headers["Retry-After"] == "3"
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")


async def test_error_without_details_gives_a_clean_envelope(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    core.fail = abort_with(C.NOT_FOUND, "The model 'nope' does not exist.")
    error = await error_of(await client.get("/v1/models"), 404)
    assert error == {
        "message": "The model 'nope' does not exist.",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }


async def test_servicer_exception_is_a_500_without_its_text(
    client: TestClient[Any, Any], core: ImageCore, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash(context: grpc.aio.ServicerContext) -> None:
        raise RuntimeError("secret-db-password in a stack trace")

    core.fail = crash
    resp = await client.get("/v1/models")
    text = await resp.text()
    error = await error_of(resp, 500)
    assert error["type"] == "server_error"
    assert "secret" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text


async def test_front_exception_is_a_500_logged_not_sent(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def encode(self, msg: Any) -> bytes:
            raise KeyError("front-internal-detail")

    transcoder = client.app[TRANSCODER] if client.app is not None else None
    assert transcoder is not None
    for endpoint in transcoder.routes.values():
        if isinstance(endpoint, UnaryEndpoint):
            endpoint.encoder = Broken()  # type: ignore[assignment]
    resp = await client.get("/v1/models")
    text = await resp.text()
    error = await error_of(resp, 500)
    assert error["type"] == "server_error"
    assert "front-internal-detail" not in text
    assert "front-internal-detail" in caplog.text  # but it is logged


async def test_unreachable_core_is_503_without_address(aiohttp_client: ClientFactory) -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await server.stop(None)  # the port is now closed
    client = await aiohttp_client(
        create_app(grpc_target=f"127.0.0.1:{port}", services=[IMAGES], call_timeout=5)
    )
    resp = await client.get("/v1/models")
    text = await resp.text()
    await error_of(resp, 503)
    assert str(port) not in text
    assert (await client.get("/healthz")).status == 503


# ------------------------------------------------------------------ dialect

# Another envelope, content type and wording: what a dialect decides.
PLAIN = dataclasses.replace(
    OPENAI,
    envelope=lambda f: {"failure": {"text": f.message, "kind": f.type, "field": f.param}},
    messages={**OPENAI.messages, Reason.NO_ROUTE: "Nothing at {path}."},
    type_names={**OPENAI.type_names, C.NOT_FOUND: "missing"},
    content_type="application/problem+json",
)


async def test_a_custom_dialect_words_and_shapes_door_and_grpc_errors(
    core: ImageCore, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(
        create_app(grpc_target=f"127.0.0.1:{core.port}", services=[IMAGES], dialect=PLAIN)
    )
    resp = await client.get("/v1/nothing")
    assert (resp.status, resp.content_type) == (404, "application/problem+json")
    assert await resp.json(content_type=None) == {
        "failure": {
            "text": "Nothing at /v1/nothing.",
            "kind": "invalid_request_error",
            "field": None,
        }
    }
    resp = await client.post("/v1/images/generations", json={"prompt": "p", "nope": 1})
    assert resp.status == 200  # the collector takes unknown keys: the core decides
    resp = await client.post("/v1/images/generations", json={"prompt": 5})
    assert (await resp.json(content_type=None))["failure"]["field"] == "prompt"

    core.fail = abort_with(C.NOT_FOUND, "No such model.")
    resp = await client.get("/v1/models")
    assert (resp.status, resp.content_type) == (404, "application/problem+json")
    assert await resp.json(content_type=None) == {
        "failure": {"text": "No such model.", "kind": "missing", "field": None}
    }


# -------------------------------------------------------- health, lifecycle


async def test_healthz(client: TestClient[Any, Any], core: ImageCore) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "SERVING"}
    await core.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert await resp.json() == {"status": "NOT_SERVING"}


async def test_channel_lives_between_startup_and_cleanup(core: ImageCore) -> None:
    app = create_app(grpc_target=f"127.0.0.1:{core.port}", services=[IMAGES])
    transcoder = app[TRANSCODER]
    runner = web.AppRunner(app)
    assert transcoder.channel is None
    await runner.setup()
    try:
        assert transcoder.channel is not None
        assert all(e.bound for e in transcoder.routes.values())
    finally:
        await runner.cleanup()
    assert transcoder.channel is None
    assert not any(e.bound for e in transcoder.routes.values())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_body_bytes": 0},
        {"call_timeout": 0},
        {"call_timeout": -1.0},
        {"services": None},  # and no proto_packages: nothing to serve
    ],
)
def test_invalid_options_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        create_app(grpc_target="127.0.0.1:1", **{"services": [IMAGES], **kwargs})


@pytest.mark.parametrize(
    "body",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"prompt": "x", "deep": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}",
    ],
)
async def test_deeply_nested_json_is_a_400_not_a_500(
    client: TestClient[Any, Any], core: ImageCore, body: str
) -> None:
    resp = await client.post(
        "/v1/images/generations", data=body, headers={"Content-Type": "application/json"}
    )
    error = await error_of(resp, 400)
    assert error["type"] == "invalid_request_error" and "nested too deeply" in error["message"]
    assert core.requests == []


async def test_body_that_does_not_match_its_encoding_is_a_400(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    resp = await client.post(
        "/v1/images/generations",
        data=b"this is not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    error = await error_of(resp, 400)
    assert "Content-Encoding" in error["message"]
    assert core.requests == []


# ------------------------------------------- the hop between door and core


async def test_a_core_error_larger_than_grpcs_default_metadata_limit_reaches_the_caller(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    # The message travels twice in the trailer (and again, base64, in the
    # details): ~40 KB, over gRPC's default 16 KiB hard limit.
    long_message = "The model '" + "m" * 15_000 + "' does not exist."
    info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND", metadata={"param": "model"})
    core.fail = abort_with(C.NOT_FOUND, long_message, info)
    error = await error_of(await client.get("/v1/models"), 404)
    assert (error["type"], error["code"], error["param"]) == (
        "not_found_error",
        "model_not_found",
        "model",
    )
    assert error["message"] == long_message


async def test_a_failure_of_the_hop_is_never_the_callers_rate_limit(
    core: ImageCore, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A door whose channel takes less metadata than the core sends: the call
    # fails in the gRPC library (RESOURCE_EXHAUSTED, "received metadata size
    # exceeds hard limit"), which the core never said.
    small = [("grpc.max_metadata_size", 4096), ("grpc.absolute_max_metadata_size", 4096)]
    client = await aiohttp_client(
        create_app(grpc_target=f"127.0.0.1:{core.port}", services=[IMAGES], channel_options=small)
    )
    info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND")
    core.fail = abort_with(C.NOT_FOUND, "x" * 10_000, info)
    error = await error_of(await client.get("/v1/models"), 502)
    assert error["type"] == "server_error" and error["code"] is None
    assert "metadata" not in error["message"] and "Stream removed" not in error["message"]
    assert "RESOURCE_EXHAUSTED without the core's details" in caplog.text


# ------------------------------------------------------------- content codings


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "pack"),
    [
        ("gzip", _gzip),
        ("x-gzip", _gzip),
        ("deflate", zlib.compress),
        ("deflate", _raw_deflate),  # no zlib header, as some clients send it
        ("GZIP", _gzip),
        ("identity", lambda data: data),
    ],
)
async def test_compressed_bodies_are_decoded(
    client: TestClient[Any, Any], core: ImageCore, coding: str, pack: Callable[[bytes], bytes]
) -> None:
    body = json.dumps({"prompt": "a lighthouse", "n": 2}).encode()
    resp = await client.post(
        "/v1/images/generations",
        data=pack(body),
        headers={**JSON_HEADERS, "Content-Encoding": coding},
    )
    assert resp.status == 200, await resp.text()
    assert (core.requests[-1].prompt, core.requests[-1].n) == ("a lighthouse", 2)


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br", "x-unknown"])
async def test_an_unsupported_content_coding_is_a_415_saying_which_are(
    client: TestClient[Any, Any], core: ImageCore, coding: str
) -> None:
    resp = await client.post(
        "/v1/images/generations",
        data=b'{"prompt": "p"}',
        headers={**JSON_HEADERS, "Content-Encoding": coding},
    )
    error = await error_of(resp, 415)
    assert resp.headers["Accept-Encoding"] == "gzip, deflate"
    assert f"'{coding.lower()}'" in error["message"] and "install" not in error["message"]
    assert core.requests == []


@pytest.mark.parametrize(
    "body",
    [
        _gzip(b'{"prompt": "p"}')[:-6],  # truncated
        _gzip(b'{"prompt": "p"}') + b"trailing bytes",
        b"\x1f\x8b\x08\x00garbage",
    ],
)
async def test_a_body_that_does_not_decode_is_a_400(
    client: TestClient[Any, Any], core: ImageCore, body: bytes
) -> None:
    resp = await client.post(
        "/v1/images/generations", data=body, headers={**JSON_HEADERS, "Content-Encoding": "gzip"}
    )
    error = await error_of(resp, 400)
    assert "Content-Encoding" in error["message"]
    assert core.requests == []


async def test_a_compression_bomb_stops_at_the_body_limit(
    client: TestClient[Any, Any], core: ImageCore
) -> None:
    bomb = _gzip(b'{"prompt": "' + b" " * (100 * MAX_BODY) + b'"}')
    assert len(bomb) < MAX_BODY
    resp = await client.post(
        "/v1/images/generations", data=bomb, headers={**JSON_HEADERS, "Content-Encoding": "gzip"}
    )
    error = await error_of(resp, 413)
    assert error["code"] == "request_too_large"
    assert core.requests == []


async def test_a_core_answer_that_does_not_parse_is_a_502(
    aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def garbled(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"\x0a\xff\xff"  # field 1, a length past the end: not an EchoResponse

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                tp.SERVICE.full_name,
                {"Echo": grpc.unary_unary_rpc_method_handler(garbled)},  # raw bytes both ways
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        app = create_app(grpc_target=f"127.0.0.1:{port}", services=[tp.SERVICE])
        client = await aiohttp_client(app)
        resp = await client.post("/test/v1/echo/a", json={})
        error = await error_of(resp, 502)
        assert "Traceback" not in caplog.text and "AttributeError" not in caplog.text
        assert error["message"] and "NoneType" not in error["message"]
    finally:
        await server.stop(None)
