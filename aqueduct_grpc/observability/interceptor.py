"""The outermost interceptor: every call's id, its access-log line and its metrics.

A call keeps the `x-request-id` its caller sent (the HTTP door always sends
one) or gets a new one; it is sent back in the call's trailing metadata (the
error exit adds it to a failure's), stored in the usage row and sent to the
upstream. When the call ends, however it ends, one access-log line and the
metrics are made from what the call noted on its `CallRecord` on the way.

The line's byte counts are the messages' wire sizes, taken where they are
made: protobuf's `ByteSize()` encodes the whole message to count it, which
for an image of a few megabytes costs milliseconds. The requests' sizes are
counted as grpc hands over their bytes; a unary response is serialized once,
for the count, and grpc's serializer then sends those same bytes.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from opentelemetry.trace import StatusCode

from aqueduct_grpc.auth.interceptor import current_token
from aqueduct_grpc.interception import MethodInterceptor, wrap_behaviour
from aqueduct_grpc.observability.calls import REQUEST_ID_KEY, CallRecord, close_call, open_call
from aqueduct_grpc.observability.metrics import CoreMetrics
from aqueduct_grpc.observability.tracing import start_call_span
from gateway_http.request_ids import is_plain_request_id, new_request_id
from gateway_http.tracing import TRACE_HEADERS

__all__ = ["ACCESS_LOG", "CallObserver"]

ACCESS_LOG = logging.getLogger("aqueduct_grpc.access")

# The bytes of the request messages a call has received. grpc deserializes
# them in the call's own task, so a value set there is the call's alone.
_RECEIVED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "aqueduct_received_bytes", default=None
)
# A unary call's response and its bytes, serialized for the access log and
# then handed to grpc's serializer (`_reusing`), in the same task.
_SERIALIZED: contextvars.ContextVar[tuple[Any, bytes] | None] = contextvars.ContextVar(
    "aqueduct_serialized_response", default=None
)


class CallObserver(MethodInterceptor):
    """Opens a `CallRecord` for each call of `services`; logs and measures it at the end."""

    def __init__(
        self,
        services: Iterable[str],
        *,
        metrics: CoreMetrics | None,
        access_log: bool = True,
    ) -> None:
        """Creates the CallObserver.

        Args:
            services: full names of the services observed.
            metrics: where the calls are counted and timed (None: they are not).
            access_log: whether each call is logged (one INFO line).
        """
        super().__init__()
        self._services = frozenset(services)
        self._metrics = metrics
        self._access_log = access_log

    def applies_to(self, method: str) -> bool:
        """Every method of the core's own services."""
        return method.lstrip("/").partition("/")[0] in self._services

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler of `method`, observed under its short name (`Service/Method`)."""
        name = method.rsplit(".", 1)[-1]
        return wrap_behaviour(
            handler,
            functools.partial(self._single, name),
            functools.partial(self._stream, name),
            request_deserializer=_counting(handler.request_deserializer),
            response_serializer=_reusing(handler.response_serializer),
        )

    def _single(
        self, method: str, behaviour: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call, started = self._open(method, context)
            token = open_call(call)
            outcome: BaseException | None = None
            response = None
            try:
                response = await behaviour(request, context)
                return response
            except BaseException as error:
                outcome = error
                raise
            finally:
                close_call(token)
                self._close(call, context, started, outcome, request, response)

        return single

    def _stream(
        self, method: str, behaviour: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call, started = self._open(method, context)
            outcome: BaseException | None = None
            # Not reset: the generator may be closed from another context, and
            # the call's task ends with the call.
            open_call(call)
            try:
                async for item in behaviour(request, context):
                    yield item
            except BaseException as error:
                outcome = error
                raise
            finally:
                self._close(call, context, started, outcome, request, None)

        return stream

    def _open(self, method: str, context: grpc.aio.ServicerContext) -> tuple[CallRecord, float]:
        request_id = None
        trace: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            # The door's rules for ids, so both doors keep the same ones.
            if key == REQUEST_ID_KEY and isinstance(value, str) and is_plain_request_id(value):
                request_id = value
            elif key in TRACE_HEADERS and isinstance(value, str):
                trace[key] = value
        call = CallRecord(
            request_id=request_id or new_request_id(),
            method=method,
            trace_headers=trace,
            span=start_call_span(method, trace),
        )
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        if self._metrics is not None:
            self._metrics.call_started(call.method)
        return call, time.perf_counter()

    def _close(
        self,
        call: CallRecord,
        context: grpc.aio.ServicerContext,
        started: float,
        outcome: BaseException | None,
        request: Any,
        response: Any,
    ) -> None:
        seconds = time.perf_counter() - started
        code = _code_of(context, outcome)
        row = call.usage
        reason = row.error_reason if row is not None else None
        if self._metrics is not None:
            self._metrics.call_ended(call, code, seconds)
        if call.span is not None:
            call.span.set_attributes(
                {
                    "rpc.method": call.method,
                    "aqueduct.request_id": call.request_id,
                    "rpc.grpc.status_code": code,
                }
            )
            if code != "OK":
                call.span.set_status(StatusCode.ERROR, reason or code)
            call.span.end()
        if self._access_log:
            self._log(call, code, seconds, request, response, reason)

    def _log(
        self,
        call: CallRecord,
        code: str,
        seconds: float,
        request: Any,
        response: Any,
        reason: str | None,
    ) -> None:
        fields: dict[str, Any] = {
            "request_id": call.request_id,
            "door": "grpc",
            "rpc": call.method,
            "grpc_status": code,
            "latency_ms": round(seconds * 1000, 2),
        }
        try:
            token = current_token()
            fields["token_id"], fields["token_name"] = token.id, token.name
        except LookupError:
            pass
        row = call.usage
        if row is not None:
            fields.update(
                operation=row.operation,
                model_requested=row.requested_model,
                model=row.model,
                http_status=row.http_status or (200 if code == "OK" else None),
                images=row.images,
                cost_usd=row.cost,
            )
        if call.upstream_status is not None:
            fields["upstream_host"] = call.upstream_host
            fields["upstream_status"] = call.upstream_status
            fields["upstream_ms"] = round((call.upstream_seconds or 0.0) * 1000, 2)
        received = _RECEIVED.get()
        if received is not None:
            fields["bytes_in"] = received[0]
        if response is not None and hasattr(response, "SerializeToString"):
            data = response.SerializeToString()
            _SERIALIZED.set((response, data))
            fields["bytes_out"] = len(data)
        if reason is not None:
            fields["error"] = reason
        ACCESS_LOG.info("%s %s %.1fms", call.method, code, fields["latency_ms"], extra=fields)


def _counting(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """`deserializer`, counting the bytes it is given for the call (`_RECEIVED`)."""

    def deserialize(data: bytes) -> Any:
        received = _RECEIVED.get()
        if received is None:
            _RECEIVED.set([len(data)])
        else:
            received[0] += len(data)
        return data if deserializer is None else deserializer(data)

    return deserialize


def _reusing(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """`serializer`, answering with the bytes the access log made of this message, if any."""

    def serialize(message: Any) -> bytes:
        done = _SERIALIZED.get()
        if done is not None and done[0] is message:
            _SERIALIZED.set(None)
            return done[1]
        return message if serializer is None else serializer(message)

    return serialize


def _code_of(context: grpc.aio.ServicerContext, outcome: BaseException | None) -> str:
    """The call's gRPC status code name, as its caller sees it."""
    code = context.code()
    if code is not None and isinstance(code, grpc.StatusCode):
        return code.name
    if outcome is None:
        return "OK"
    if isinstance(outcome, Exception):
        return "UNKNOWN"
    return "CANCELLED"
