"""OpenTelemetry spans of a call: its own, and admission, upstream, image store, usage commit.

Tracing is on when the process was started with a tracer provider installed
(`gateway_http.tracing.install_tracing`, which both doors' commands call when
the standard OpenTelemetry variables name an exporter). Then each call's span continues the caller's
W3C trace context (`traceparent` metadata, which the HTTP door sends), its
steps are child spans, and the upstream receives the upstream span's
context. Off, nothing is recorded, and the caller's `traceparent` is passed
to the upstream unchanged, so a trace is never broken either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from aqueduct_grpc.observability.calls import current_call
from gateway_http.tracing import tracing_enabled

__all__ = ["start_call_span", "step", "upstream_headers"]

_TRACER_NAME = "aqueduct_grpc"


def start_call_span(method: str, metadata: Mapping[str, str]) -> Span | None:
    """The call's server span, continuing the caller's context; None when tracing is off."""
    if not tracing_enabled():
        return None
    parent = propagate.extract(metadata)
    return trace.get_tracer(_TRACER_NAME).start_span(method, context=parent, kind=SpanKind.SERVER)


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def step(name: str, kind: SpanKind = SpanKind.INTERNAL) -> AbstractContextManager[Span | None]:
    """A child span of the current call's for one step; nothing when tracing is off.

    Off, it is one shared do-nothing context: a step is on every call's path.
    """
    call = current_call()
    if call is None or call.span is None:
        return _NO_SPAN
    return _child_span(call.span, name, kind)


@contextlib.contextmanager
def _child_span(parent: Span, name: str, kind: SpanKind) -> Iterator[Span]:
    # Not made current: a step may span a stream's `yield`s, and a context
    # attached there could not be detached from another context.
    span = trace.get_tracer(_TRACER_NAME).start_span(
        name, context=trace.set_span_in_context(parent), kind=kind
    )
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
