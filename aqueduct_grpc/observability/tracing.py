"""OpenTelemetry spans of a call: its own, and admission, upstream, image store, usage commit.

Tracing is on when the process was started with a tracer provider installed
(`install_tracing`, which `serve` calls when the standard OpenTelemetry
variables name an exporter). Then each call's span continues the caller's
W3C trace context (`traceparent` metadata, which the HTTP door sends), its
steps are child spans, and the upstream receives the upstream span's
context. Off, nothing is recorded, and the caller's `traceparent` is passed
to the upstream unchanged, so a trace is never broken either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from aqueduct_grpc.observability.calls import current_call

__all__ = ["install_tracing", "start_call_span", "step", "tracing_enabled", "upstream_headers"]

_TRACER_NAME = "aqueduct_grpc"


def tracing_enabled() -> bool:
    """Whether a recording tracer provider is installed."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def install_tracing(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Installs an OTLP-exporting tracer provider when the environment asks for one.

    The standard variables decide: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    `..._TRACES_ENDPOINT`) names the collector, `OTEL_TRACES_EXPORTER=none`
    turns it off, `OTEL_SERVICE_NAME` overrides `service_name`. Returns
    whether tracing is on.
    """
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or environ.get("OTEL_TRACES_EXPORTER", "otlp") == "none":
        return False
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def start_call_span(method: str, metadata: Mapping[str, str]) -> Span | None:
    """The call's server span, continuing the caller's context; None when tracing is off."""
    if not tracing_enabled():
        return None
    parent = propagate.extract(metadata)
    return trace.get_tracer(_TRACER_NAME).start_span(method, context=parent, kind=SpanKind.SERVER)


@contextlib.contextmanager
def step(name: str, kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span | None]:
    """A child span of the current call's for one step; nothing when tracing is off.

    The span is not made current: a step may span a stream's `yield`s, and a
    context attached there could not be detached from another context.
    """
    call = current_call()
    if call is None or call.span is None:
        yield None
        return
    parent = trace.set_span_in_context(call.span)
    span = trace.get_tracer(_TRACER_NAME).start_span(name, context=parent, kind=kind)
    try:
        yield span
    except BaseException as error:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        span.end()


def upstream_headers(span: Span | None) -> dict[str, str]:
    """The trace headers for an upstream request: the upstream span's, or the caller's own."""
    call = current_call()
    if span is None:
        return dict(call.trace_headers) if call is not None else {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier
