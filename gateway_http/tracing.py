"""The door's OpenTelemetry span of each request, and the trace context it sends the core.

With a recording tracer provider installed in the process (the CLI installs
one when the standard OpenTelemetry variables name an exporter), each
request gets a server span continuing the caller's W3C `traceparent`, and
the core receives that span's context. Without one, nothing is recorded and
the caller's `traceparent` and `tracestate` go to the core as they came
(they are forwarded headers), so the door never breaks a caller's trace.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

__all__ = ["TRACE_HEADERS", "install_tracing", "request_span", "trace_metadata", "tracing_enabled"]

TRACE_HEADERS = ("traceparent", "tracestate")
_TRACER_NAME = "gateway_http"


def install_tracing(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Installs an OTLP-exporting tracer provider when the environment asks for one.

    The standard variables decide: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    `..._TRACES_ENDPOINT`) names the collector, `OTEL_TRACES_EXPORTER=none`
    turns it off, `OTEL_SERVICE_NAME` overrides `service_name`. Returns
    whether tracing is on.
    """
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not (traces or base) or environ.get("OTEL_TRACES_EXPORTER", "otlp") == "none":
        return False
    # As the specification says: the signal's own endpoint as it is, else the
    # base one with the signal's path.
    endpoint = traces or f"{(base or '').rstrip('/')}/v1/traces"
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return True


def tracing_enabled() -> bool:
    """Whether a recording tracer provider is installed in this process."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def request_span(request: web.Request, route: str) -> AbstractContextManager[Span | None]:
    """The request's server span while the block runs; None when tracing is off."""
    if not tracing_enabled():
        return _NO_SPAN  # one shared do-nothing context: this is on every request's path
    return _server_span(request, route)


@contextlib.contextmanager
def _server_span(request: web.Request, route: str) -> Iterator[Span]:
    parent = propagate.extract(request.headers)
    with trace.get_tracer(_TRACER_NAME).start_as_current_span(
        f"{request.method} {route}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route},
    ) as span:
        yield span


def trace_metadata(span: Span) -> list[tuple[str, str]]:
    """The span's context as gRPC metadata (`traceparent`, `tracestate`)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return list(carrier.items())
