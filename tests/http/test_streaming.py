"""The HTTP runtime's generic raw-body and streaming features, on a proto that is not about images.

A `Ticker` service is built as a descriptor at import time: `Count` has a
server-streaming twin `CountLive` declared with `gateway_http.api.v1.streaming_twin`,
and `Download` returns a `google.api.HttpBody` directly. Nothing in the runtime
knows these names: everything comes from the descriptors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from google.api import annotations_pb2 as google_annotations
from google.api import httpbody_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from gateway_http import OPENAI, create_app
from gateway_http.api.v1 import annotations_pb2
from gateway_http.routes import build_routes

PACKAGE = "gatewayhttp.ticker.v1"
STREAMING_TWIN: Any = annotations_pb2.streaming_twin  # untyped: see gateway_http.routes
_F = descriptor_pb2.FieldDescriptorProto


def _file(name: str, *, twin_method: str = "CountLive", selector: str = "live") -> Any:
    """Builds (once per name) the Ticker file; the keywords make broken variants."""
    package = f"{PACKAGE}.{name}"
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"gatewayhttp/ticker/v1/{name}.proto",
        package=package,
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/api/httpbody.proto",
            "gateway_http/api/v1/annotations.proto",
        ],
    )
    count = fdp.message_type.add(name="CountRequest")
    count.field.add(name="upto", number=1, type=_F.TYPE_INT32)
    count.field.add(name="live", number=2, type=_F.TYPE_BOOL)
    count.field.add(name="fail_after", number=3, type=_F.TYPE_INT32)
    count.field.add(name="label", number=4, type=_F.TYPE_STRING)
    reply = fdp.message_type.add(name="CountResponse")
    reply.field.add(name="total", number=1, type=_F.TYPE_INT64)
    live = fdp.message_type.add(name="CountLiveRequest")
    live.field.add(
        name="request", number=1, type=_F.TYPE_MESSAGE, type_name=f".{package}.CountRequest"
    )
    tick = fdp.message_type.add(name="CountLiveResponse")
    tick.field.add(name="kind", number=1, type=_F.TYPE_STRING)
    tick.field.add(name="n", number=2, type=_F.TYPE_INT64)
    download = fdp.message_type.add(name="DownloadRequest")
    download.field.add(name="name", number=1, type=_F.TYPE_STRING)

    service = fdp.service.add(name="Ticker")
    unary = service.method.add(
        name="Count", input_type=f".{package}.CountRequest", output_type=f".{package}.CountResponse"
    )
    rule = unary.options.Extensions[google_annotations.http]
    rule.post, rule.body = f"/{name}/count", "*"
    twin = unary.options.Extensions[STREAMING_TWIN]
    twin.method, twin.selector_field, twin.request_field, twin.event_field = (
        twin_method,
        selector,
        "request",
        "kind",
    )
    service.method.add(
        name="CountLive",
        input_type=f".{package}.CountLiveRequest",
        output_type=f".{package}.CountLiveResponse",
        server_streaming=True,
    )
    get = service.method.add(
        name="Download",
        input_type=f".{package}.DownloadRequest",
        output_type=".google.api.HttpBody",
    )
    get.options.Extensions[google_annotations.http].get = f"/{name}/files/{{name}}"
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(fdp.name)
    except KeyError:
        return pool.AddSerializedFile(fdp.SerializeToString())


FILE = _file("good")
SERVICE = FILE.services_by_name["Ticker"]


def _class(name: str) -> Any:
    return message_factory.GetMessageClass(FILE.message_types_by_name[name])


CountRequest, CountResponse = _class("CountRequest"), _class("CountResponse")
CountLiveRequest, CountLiveResponse = _class("CountLiveRequest"), _class("CountLiveResponse")
DownloadRequest = _class("DownloadRequest")


class Ticker:
    """The servicer: counts, streams ticks (failing on request), serves a file."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE.full_name,
            {
                "Count": grpc.unary_unary_rpc_method_handler(
                    self.count,
                    request_deserializer=CountRequest.FromString,
                    response_serializer=CountResponse.SerializeToString,
                ),
                "CountLive": grpc.unary_stream_rpc_method_handler(
                    self.count_live,
                    request_deserializer=CountLiveRequest.FromString,
                    response_serializer=CountLiveResponse.SerializeToString,
                ),
                "Download": grpc.unary_unary_rpc_method_handler(
                    self.download,
                    request_deserializer=DownloadRequest.FromString,
                    response_serializer=httpbody_pb2.HttpBody.SerializeToString,
                ),
            },
        )

    async def count(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        self.calls.append("Count")
        return CountResponse(total=request.upto)

    async def count_live(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        self.calls.append("CountLive")
        inner = request.request
        if inner.fail_after == 0 and inner.label == "refuse":
            await context.abort(grpc.StatusCode.NOT_FOUND, "No such counter.")
        for n in range(inner.upto):
            if inner.fail_after and n == inner.fail_after:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, "Counted too far.")
            yield CountLiveResponse(kind="tick" if n < inner.upto - 1 else "done", n=n)

    async def download(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        self.calls.append("Download")
        if request.name.startswith("status-"):
            # The method asks for an HTTP status of its own (a redirect, say).
            await context.send_initial_metadata(
                (("x-http-status", request.name.removeprefix("status-")), ("location", "/moved"))
            )
            return httpbody_pb2.HttpBody()
        await context.send_initial_metadata(
            (("cache-control", "max-age=60"), ("x-internal-secret", "never-shown"))
        )
        return httpbody_pb2.HttpBody(
            content_type="text/csv", data=f"name,{request.name}\n".encode()
        )


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def ticker() -> AsyncIterator[tuple[Ticker, int]]:
    server = grpc.aio.server()
    servicer = Ticker()
    server.add_generic_rpc_handlers((servicer.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(None)


@pytest.fixture
async def client(ticker: tuple[Ticker, int], aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    return await aiohttp_client(
        create_app(grpc_target=f"127.0.0.1:{ticker[1]}", services=[SERVICE])
    )


async def test_flag_unset_calls_the_unary_method(client, ticker) -> None:
    resp = await client.post("/good/count", json={"upto": 3})
    assert resp.status == 200 and await resp.json() == {"total": 3}
    assert ticker[0].calls == ["Count"]


async def test_flag_set_streams_the_twin_as_server_sent_events(client, ticker) -> None:
    resp = await client.post("/good/count", json={"upto": 3, "live": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await resp.text() == (
        'event: tick\ndata: {"kind":"tick","n":0}\n\n'
        'event: tick\ndata: {"kind":"tick","n":1}\n\n'
        'event: done\ndata: {"kind":"done","n":2}\n\n'
    )
    assert ticker[0].calls == ["CountLive"]


async def test_error_before_the_first_event_keeps_its_http_status(client) -> None:
    resp = await client.post("/good/count", json={"upto": 3, "live": True, "label": "refuse"})
    assert resp.status == 404 and resp.content_type == "application/json"
    error = (await resp.json())["error"]
    assert (error["message"], error["type"]) == ("No such counter.", "not_found_error")


async def test_error_after_the_first_event_is_an_error_event(client) -> None:
    resp = await client.post("/good/count", json={"upto": 5, "live": True, "fail_after": 2})
    assert resp.status == 200
    frames = (await resp.text()).split("\n\n")
    assert frames[:2] == [
        'event: tick\ndata: {"kind":"tick","n":0}',
        'event: tick\ndata: {"kind":"tick","n":1}',
    ]
    assert frames[2] == (
        'event: error\ndata: {"error": {"message": "Counted too far.", '
        '"type": "invalid_request_error", "param": null, "code": null}}'
    )
    assert frames[3:] == [""]


async def test_http_body_is_served_raw_with_its_content_type(client, ticker) -> None:
    resp = await client.get("/good/files/report")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv"
    assert await resp.read() == b"name,report\n"
    # Only the response metadata the app forwards becomes headers.
    assert resp.headers["Cache-Control"] == "max-age=60"
    assert "x-internal-secret" not in {k.lower() for k in resp.headers}
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("asked", "status"),
    [("302", 302), ("204", 204), ("307", 307), ("500", 200), ("404", 200), ("x", 200), ("", 200)],
)
async def test_http_body_metadata_may_ask_for_a_success_or_redirect_status(
    client, ticker, asked: str, status: int
) -> None:
    resp = await client.get(f"/good/files/status-{asked}", allow_redirects=False)
    # Only 2xx and 3xx: errors travel as gRPC statuses, never through metadata.
    assert resp.status == status
    assert resp.headers["Location"] == "/moved"
    assert "x-http-status" not in {k.lower() for k in resp.headers}


def test_routes_carry_the_twin_and_raw_body_facts() -> None:
    by_method = {r.grpc_path.rsplit("/", 1)[1]: r for r in build_routes([SERVICE])}
    assert set(by_method) == {"Count", "Download"}
    twin = by_method["Count"].twin
    assert twin is not None and twin.grpc_path.endswith("/CountLive")
    assert twin.response_class.DESCRIPTOR.full_name == CountLiveResponse.DESCRIPTOR.full_name
    assert by_method["Download"].http_body and not by_method["Count"].http_body


async def test_the_dialect_names_and_shapes_the_error_event(ticker, aiohttp_client) -> None:
    dialect = dataclasses.replace(
        OPENAI, stream_error_event="failure", envelope=lambda f: {"failed": f.message}
    )
    client = await aiohttp_client(
        create_app(grpc_target=f"127.0.0.1:{ticker[1]}", services=[SERVICE], dialect=dialect)
    )
    resp = await client.post("/good/count", json={"upto": 5, "live": True, "fail_after": 1})
    frames = (await resp.text()).split("\n\n")
    assert frames[1:] == ['event: failure\ndata: {"failed": "Counted too far."}', ""]


@pytest.mark.parametrize(
    ("name", "kwargs", "complaint"),
    [
        ("unarytwin", {"twin_method": "Count"}, "is not a server-streaming method"),
        ("missingtwin", {"twin_method": "Nope"}, "is not a server-streaming method"),
        ("badselector", {"selector": "upto"}, "is not a bool field"),
    ],
)
def test_a_twin_that_does_not_fit_is_refused_at_start_up(name, kwargs, complaint) -> None:
    service = _file(name, **kwargs).services_by_name["Ticker"]
    with pytest.raises(ValueError, match=complaint):
        build_routes([service])
