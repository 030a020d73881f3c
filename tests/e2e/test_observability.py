"""What operators see: request ids, access logs, metrics, CORS and trace context, on both doors."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
import sqlalchemy as sa
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.admin.service import ADMIN_SERVICE
from aqueduct_grpc.server import IMAGE_SERVICE, Core, GrpcServer, start_grpc_server
from aqueduct_grpc.storage.database import usage_table
from aqueduct_grpc.testing.fake_upstream import Fail, FakeUpstream, Succeed
from gateway_http import create_app
from gateway_http.api.v1 import annotations_pb2
from gateway_http.server import DoorRunner
from tests.conftest import bearer

GENERATE = "/v1/images/generations"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
async def door(core: GrpcServer) -> AsyncIterator[str]:
    """The door as `serve` runs it: access log on, CORS for the image API only."""
    app = create_app(
        grpc_target=f"127.0.0.1:{core.port}",
        proto_packages=["aqueduct"],
        cors_allow_origins={IMAGE_SERVICE: ["*"], ADMIN_SERVICE: []},
    )
    runner = DoorRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site.port}"
    await runner.cleanup()


@pytest.fixture
async def http(door: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=door) as session:
        yield session


def auth(secret: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **more}


async def usage_rows(gateway: Core) -> list[Any]:
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        return (await connection.execute(sa.select(usage_table).order_by(usage_table.c.id))).all()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels (parsed by prometheus_client)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ------------------------------------------------------------------ request ids


async def test_every_http_answer_carries_a_request_id_that_reaches_the_upstream_and_the_row(
    http: aiohttp.ClientSession, secret: str, upstream: FakeUpstream, gateway: Core
) -> None:
    async with http.post(
        GENERATE, json={"model": "gpt-image-1", "prompt": "x"}, headers=auth(secret)
    ) as ok:
        assert ok.status == 200
        made = ok.headers["x-request-id"]
    assert made.startswith("req_") and len(made) == 36
    assert upstream.requests[0].headers["X-Request-ID"] == made
    [row] = await usage_rows(gateway)
    assert row.request_id == made
    answers = [
        await http.post(GENERATE, json={"model": "gpt-image-1", "prompt": "x"}),  # 401
        await http.post(GENERATE, json={"model": "nope", "prompt": "x"}, headers=auth(secret)),
        await http.get("/v1/no/such/route"),
        await http.post(
            GENERATE,
            json={"model": "demo", "prompt": "x", "stream": True},
            headers=auth(secret),
        ),
    ]
    ids = []
    for answer in answers:
        await answer.read()
        ids.append(answer.headers["x-request-id"])
    assert [a.status for a in answers] == [401, 404, 404, 200]
    assert answers[-1].content_type == "text/event-stream"
    assert len(set(ids)) == len(ids) and all(i.startswith("req_") for i in ids)


async def test_a_callers_request_id_is_kept_and_a_malformed_one_replaced(
    http: aiohttp.ClientSession, secret: str, upstream: FakeUpstream
) -> None:
    sent = {"model": "gpt-image-1", "prompt": "x"}
    async with http.post(
        GENERATE, json=sent, headers=auth(secret, **{"X-Request-ID": "abc-123"})
    ) as kept:
        assert kept.headers["x-request-id"] == "abc-123"
    async with http.post(
        GENERATE, json=sent, headers=auth(secret, **{"X-Request-ID": "has spaces; and more"})
    ) as bad:
        assert bad.headers["x-request-id"].startswith("req_")
    assert [r.headers["X-Request-ID"] for r in upstream.requests] == [
        "abc-123",
        bad.headers["x-request-id"],
    ]


async def test_grpc_answers_carry_the_request_id_in_their_trailers(stub: Any, secret: str) -> None:
    request = images_pb2.GenerateImagesRequest(model="demo", prompt="x")
    call = stub.GenerateImages(request, metadata=[*bearer(secret), ("x-request-id", "mine-1")])
    await call
    assert ("x-request-id", "mine-1") in list(await call.trailing_metadata())
    failing = stub.GenerateImages(request, metadata=bearer("aqk-wrong"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await failing
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    made = dict(refused.value.trailing_metadata() or ())["x-request-id"]
    assert made.startswith("req_")


async def test_a_callers_trace_context_reaches_the_upstream(
    http: aiohttp.ClientSession, secret: str, upstream: FakeUpstream
) -> None:
    async with http.post(
        GENERATE,
        json={"model": "gpt-image-1", "prompt": "x"},
        headers=auth(secret, traceparent=TRACEPARENT, tracestate="vendor=1"),
    ) as answer:
        assert answer.status == 200
    sent = upstream.requests[0].headers
    assert sent["traceparent"].split("-")[1] == TRACE_ID and sent["tracestate"] == "vendor=1"


# ------------------------------------------------------------------- access log


async def test_access_log_lines_for_both_doors_without_secrets(
    http: aiohttp.ClientSession,
    secret: str,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.plan(Fail(500, message="boom"))
    caplog.set_level(logging.INFO)
    sent = {"model": "gpt-image-1", "prompt": "x"}
    for headers in (auth(secret), auth(secret), {"Authorization": "Bearer aqk-nope"}):
        async with http.post(GENERATE, json=sent, headers=headers) as answer:
            await answer.read()
    async with http.post(GENERATE, json={**sent, "stream": True}, headers=auth(secret)) as stream:
        await stream.read()
    # The fields are the records' own attributes, as formatters (JSON, logfmt) show them.
    core = [vars(r) for r in caplog.records if r.name == "aqueduct_grpc.access"]
    door = [vars(r) for r in caplog.records if r.name == "gateway_http.access"]
    assert [line["grpc_status"] for line in core] == ["INTERNAL", "OK", "UNAUTHENTICATED", "OK"]
    assert [line["status"] for line in door] == [500, 200, 401, 200]
    upstream_error, success, refused, streamed = core
    assert (upstream_error["upstream_status"], upstream_error["error"]) == (500, "UPSTREAM_ERROR")
    assert success["model"] == "gpt-image-1" and success["images"] == 1
    assert success["token_name"] == "test" and success["upstream_host"] == "127.0.0.1"
    assert "token_id" not in refused and refused["rpc"] == "ImageService/GenerateImages"
    assert streamed["rpc"] == "ImageService/StreamGenerateImages"
    assert [line["request_id"] for line in door] == [line["request_id"] for line in core]
    assert door[1]["route"] == GENERATE and door[1]["bytes_out"] > 0
    for record in caplog.records:
        text = record.getMessage() + json.dumps(vars(record), default=str)
        assert secret not in text and "aqk-nope" not in text and "sk-" not in text


async def test_the_core_logs_each_calls_wire_bytes(
    stub: Any, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = images_pb2.GenerateImagesRequest(model="gpt-image-1", prompt="a lighthouse", n=2)
    answer = await stub.GenerateImages(request, metadata=bearer(secret))
    pieces = [
        images_pb2.UploadEditImagesRequest(
            chunk=annotations_pb2.UploadChunk(field="image", data=PNG, begins=True)
        ),
        images_pb2.UploadEditImagesRequest(
            request=images_pb2.EditImagesRequest(
                model="gpt-image-1", prompt="x", image=[images_pb2.InputImage()]
            )
        ),
    ]

    async def sent() -> AsyncIterator[images_pb2.UploadEditImagesRequest]:
        for piece in pieces:
            yield piece

    [edited] = [a async for a in stub.UploadEditImages(sent(), metadata=bearer(secret))]
    assert edited.WhichOneof("result") == "response"
    generated, uploaded = [vars(r) for r in caplog.records if r.name == "aqueduct_grpc.access"]
    assert generated["bytes_in"] == len(request.SerializeToString())
    assert generated["bytes_out"] == len(answer.SerializeToString())
    assert uploaded["bytes_in"] == sum(len(piece.SerializeToString()) for piece in pieces)


# ---------------------------------------------------------------------- metrics


async def test_core_metrics_move_by_exactly_the_calls_made(
    stub: Any, secret: str, gateway: Core
) -> None:
    def scrape() -> dict[Any, float]:
        return samples(generate_latest(gateway.metrics.registry).decode())

    ok = (
        "aqueduct_requests_total",
        (("code", "OK"), ("method", "ImageService/GenerateImages"), ("model", "aqueduct-demo")),
    )
    images = ("aqueduct_images_total", (("model", "aqueduct-demo"), ("operation", "generate")))
    before = scrape()
    for _ in range(3):
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(model="demo", prompt="x", n=2),
            metadata=bearer(secret),
        )
    after = scrape()
    assert after[ok] - before.get(ok, 0.0) == 3
    assert after[images] - before.get(images, 0.0) == 6
    count = (
        "aqueduct_request_duration_seconds_count",
        (("method", "ImageService/GenerateImages"),),
    )
    assert after[count] - before.get(count, 0.0) == 3
    stored = ("aqueduct_image_store_written_bytes_total", ())
    assert after.get(stored, 0.0) == before.get(stored, 0.0)  # b64_json answers store nothing
    await stub.GenerateImages(
        images_pb2.GenerateImagesRequest(model="demo", prompt="x", response_format="url"),
        metadata=[
            *bearer(secret),
            ("x-forwarded-host", "gw.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    assert scrape()[stored] - after.get(stored, 0.0) > 1000  # one PNG
    assert after[("aqueduct_usage_queue_rows", ())] >= 0


async def test_a_core_without_metrics_counts_nothing_but_still_answers_with_ids(
    secret: str, gateway: Core
) -> None:
    def calls_counted() -> dict[Any, float]:
        # The usage writer's own figures (queue, commits) are not per call.
        text = generate_latest(gateway.metrics.registry).decode()
        return {k: v for k, v in samples(text).items() if not k[0].startswith("aqueduct_usage_")}

    server = await start_grpc_server(gateway, host="127.0.0.1", port=0, metrics=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = images_pb2_grpc.ImageServiceStub(channel)
            before = calls_counted()
            call = stub.GenerateImages(
                images_pb2.GenerateImagesRequest(model="demo", prompt="x"),
                metadata=bearer(secret),
            )
            answer = await call
            trailers = dict(await call.trailing_metadata() or ())
            after = calls_counted()
    finally:
        await server.stop(0)
    assert len(answer.data) == 1
    assert trailers["x-request-id"].startswith("req_")
    assert after == before
    assert ("aqueduct_image_store_written_bytes_total", ()) in after  # a real scrape


async def test_the_doors_metrics_endpoint_counts_requests_by_route(
    door: str, http: aiohttp.ClientSession, secret: str
) -> None:
    async def scrape() -> dict[Any, float]:
        async with http.get("/metrics") as answer:
            assert answer.status == 200
            return samples(await answer.text())

    key = (
        "gateway_http_requests_total",
        (("method", "GET"), ("route", "/v1/models"), ("status", "200")),
    )
    refused = (
        "gateway_http_requests_total",
        (("method", "other"), ("route", "unmatched"), ("status", "400")),  # aiohttp: UNKNOWN
    )
    busy = ("gateway_http_requests_in_flight", ())
    before = await scrape()
    for _ in range(4):
        async with http.get("/v1/models", headers=auth(secret)) as answer:
            assert answer.status == 200
    # One aiohttp's parser refuses, before any route: counted all the same.
    reader, writer = await asyncio.open_connection("127.0.0.1", int(door.rsplit(":", 1)[1]))
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert (await reader.readline()).split()[1] == b"400"
    writer.close()
    await writer.wait_closed()
    after = await scrape()
    assert after[key] - before.get(key, 0.0) == 4
    assert after[refused] - before.get(refused, 0.0) == 1
    assert after[busy] == 0  # the scrape is not an API request


async def test_a_request_its_caller_gives_up_is_counted_as_499(
    door: str, http: aiohttp.ClientSession, secret: str, upstream: FakeUpstream
) -> None:
    async def scrape() -> dict[Any, float]:
        async with http.get("/metrics") as answer:
            return samples(await answer.text())

    gone = (
        "gateway_http_requests_total",
        (("method", "POST"), ("route", "/v1/images/generations"), ("status", "499")),
    )
    before = await scrape()
    upstream.plan(Succeed(delay=30))
    with pytest.raises(asyncio.TimeoutError):
        async with aiohttp.ClientSession(base_url=door) as impatient:
            body = {"model": "gpt-image-1", "prompt": "x"}
            await impatient.post(GENERATE, json=body, headers=auth(secret), timeout=0.5)
    for _ in range(500):  # the door learns of the hang-up from the closed connection
        after = await scrape()
        if after.get(gone, 0.0) > before.get(gone, 0.0):
            break
        await asyncio.sleep(0.02)
    assert after[gone] - before.get(gone, 0.0) == 1
    assert after[("gateway_http_requests_in_flight", ())] == 0


@pytest.mark.parametrize(("lines", "metrics"), [(False, True), (True, False)])
async def test_the_access_log_and_the_metrics_turn_off_apart(
    core: GrpcServer, secret: str, caplog: pytest.LogCaptureFixture, lines: bool, metrics: bool
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(
        grpc_target=f"127.0.0.1:{core.port}", proto_packages=["aqueduct"], metrics=metrics
    )
    runner = DoorRunner(app, access_log=lines)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{site.port}") as http:
            async with http.get("/v1/models", headers=auth(secret)) as answer:
                assert answer.status == 200
            async with http.get("/metrics") as answer:
                scraped = samples(await answer.text()) if answer.status == 200 else None
    finally:
        await runner.cleanup()
    written = [r for r in caplog.records if r.name == "gateway_http.access"]
    assert len(written) == (2 if lines else 0)  # the listing and the scrape
    if metrics:
        key = (
            "gateway_http_requests_total",
            (("method", "GET"), ("route", "/v1/models"), ("status", "200")),
        )
        assert scraped is not None and scraped[key] == 1
    else:
        assert scraped is None  # no /metrics


# ------------------------------------------------------------------------- CORS


async def test_cors_preflight_and_answers_for_the_image_api(
    http: aiohttp.ClientSession, secret: str
) -> None:
    async with http.options(
        GENERATE,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    ) as preflight:
        assert preflight.status == 204
        headers = preflight.headers
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-request-id", "x-stainless-os"} <= allowed
    assert "Access-Control-Allow-Credentials" not in headers
    async with http.get("/v1/models", headers=auth(secret, Origin="https://app.example")) as answer:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]


async def test_cors_allows_no_origin_on_the_admin_api(http: aiohttp.ClientSession) -> None:
    async with http.options(
        "/admin/v1/tokens",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    ) as preflight:
        assert preflight.status == 204
        assert "Access-Control-Allow-Origin" not in preflight.headers
    async with http.get("/admin/v1/tokens", headers={"Origin": "https://app.example"}) as answer:
        assert answer.status == 401
        assert "Access-Control-Allow-Origin" not in answer.headers


# ---------------------------------------------------------------------- tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A recording tracer provider for this test only, its spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    # The provider is set once per process by design; OpenTelemetry's own test
    # utilities reset it this way, so that other tests run untraced.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


async def test_one_trace_from_the_callers_context_through_both_doors_to_the_upstream(
    spans: InMemorySpanExporter,
    http: aiohttp.ClientSession,
    secret: str,
    upstream: FakeUpstream,
) -> None:
    async with http.post(
        GENERATE,
        json={"model": "gpt-image-1", "prompt": "x", "response_format": "url"},
        headers=auth(secret, traceparent=TRACEPARENT),
    ) as answer:
        assert answer.status == 200
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert {
        "POST /v1/images/generations",
        "ImageService/GenerateImages",
        "admission",
        "upstream",
        "image_store",
        "usage_commit",
    } <= set(finished)
    assert {format(span.context.trace_id, "032x") for span in finished.values()} == {TRACE_ID}
    door, call = finished["POST /v1/images/generations"], finished["ImageService/GenerateImages"]
    assert call.parent is not None and call.parent.span_id == door.context.span_id
    assert finished["upstream"].parent.span_id == call.context.span_id  # type: ignore[union-attr]
    sent = upstream.requests[0].headers["traceparent"].split("-")
    assert sent[1] == TRACE_ID and sent[2] == format(finished["upstream"].context.span_id, "016x")


async def test_model_listings_have_usage_rows_of_their_own(
    http: aiohttp.ClientSession, secret: str, gateway: Core
) -> None:
    for path in ("/v1/models", "/v1/models/demo", "/v1/models/nope"):
        async with http.get(path, headers=auth(secret)) as answer:
            await answer.read()
    rows = await usage_rows(gateway)
    assert [(r.operation, r.requested_model, r.model, r.status, r.images) for r in rows] == [
        ("list_models", None, None, "OK", 0),
        ("get_model", "demo", "aqueduct-demo", "OK", 0),
        ("get_model", "nope", None, "NOT_FOUND", 0),
    ]
    assert all(r.cost is None and r.request_id.startswith("req_") for r in rows)
