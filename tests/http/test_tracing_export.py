"""Tracing is configured by OpenTelemetry's own variables, and exports spans over OTLP/HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.util._once import Once

from gateway_http.tracing import install_tracing


@pytest.fixture(autouse=True)
def untraced_afterwards() -> Iterator[None]:
    yield
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()
    # Set once per process by design; OpenTelemetry's own test utilities reset it so.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


def test_without_an_endpoint_nothing_is_installed() -> None:
    assert not install_tracing("door", environ={})
    assert not install_tracing(
        "door", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_spans_reach_the_collector_named_by_the_environment() -> None:
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        received.append(
            trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read())
        )
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    async with TestServer(app, host="127.0.0.1") as collector:
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_SERVICE_NAME": "door-under-test",
        }
        assert install_tracing("default-name", environ=environ)
        with trace.get_tracer("test").start_as_current_span("work"):
            pass
        provider = trace.get_tracer_provider()
        await asyncio.to_thread(provider.force_flush)  # type: ignore[attr-defined]
    [export] = received
    [resource_spans] = export.resource_spans
    names = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert names["service.name"] == "door-under-test"
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["work"]
