"""The core's one error exit: where a raised `GatewayError` becomes the call's gRPC status.

Handlers, interceptors and stores only raise. This interceptor wraps every
method of the core's own services, outermost, so no other code aborts a call.
Any other exception is a bug of ours: it is logged with its traceback and the
caller gets a plain INTERNAL, never the exception's text.

A request message that does not parse is the caller's mistake, not ours:
grpc.aio deserializes it before any behaviour runs, and would answer UNKNOWN
with the parser's exception text and log a traceback per message. So the
error exit installs a deserializer that turns a `DecodeError` into a marker,
and its behaviour (outermost, before authentication) raises INVALID_ARGUMENT
for it. Such refusals are logged as one WARNING at most per interval, with
the count since the last one: a flood of garbage cannot flood the log.

A call whose caller is still sending (a client-streaming upload) is refused
only once what it sends has been read, up to a bound (`_drained`): the
caller's writes into a call that has ended fail, and gRPC then reports that
failure, INTERNAL, in place of the refusal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from aqueduct_grpc.errors import INTERNAL_ERROR, GatewayError
from aqueduct_grpc.images.uploaded_files import MAX_UPLOAD_MESSAGES
from aqueduct_grpc.interception import MethodInterceptor, wrap_behaviour
from aqueduct_grpc.observability.calls import REQUEST_ID_KEY, current_request_id

__all__ = ["MALFORMED_MESSAGE", "ErrorExit"]

log = logging.getLogger(__name__)

MALFORMED_MESSAGE = GatewayError(
    grpc.StatusCode.INVALID_ARGUMENT,
    "The request message could not be parsed as the method's request type.",
    reason="MALFORMED_MESSAGE",
)
"""What a caller sees for a request message that does not parse."""


class _Malformed:
    """The marker a tolerant deserializer returns for bytes that do not parse."""


_MALFORMED: Final = _Malformed()

Deserializer = Callable[[bytes], Any]


class ErrorExit(MethodInterceptor):
    """Turns errors raised by the methods of `services` into gRPC statuses."""

    def __init__(
        self,
        services: Iterable[str],
        *,
        malformed_log_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Creates the ErrorExit.

        Args:
            services: full names of the services whose errors leave here.
            malformed_log_seconds: at most one WARNING about malformed request
                messages per this many seconds.
            clock: monotonic seconds (tests pass their own).
        """
        super().__init__()
        self._services = frozenset(services)
        self._malformed_log = _RateLimitedWarning(interval=malformed_log_seconds, clock=clock)

    def applies_to(self, method: str) -> bool:
        """Every method of the core's own services."""
        return method.lstrip("/").partition("/")[0] in self._services

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler, its errors turned into statuses and its malformed messages refused."""
        check = self._checked_stream if handler.request_streaming else self._checked
        deserializer = handler.request_deserializer
        return wrap_behaviour(
            handler,
            functools.partial(_single, check),
            functools.partial(_stream, check),
            request_deserializer=None if deserializer is None else _tolerant(deserializer),
        )

    def _checked(self, request: Any) -> Any:
        """The request message, unless it did not parse."""
        if request is _MALFORMED:
            self._malformed_log.note()
            raise MALFORMED_MESSAGE
        return request

    async def _checked_stream(self, requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
        """The request messages, until one that did not parse."""
        async for request in requests:
            yield self._checked(request)


def _single(
    check: Callable[[Any], Any], behaviour: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(check(request), context)
        except Exception as error:
            await _abort(context, error)

    return single


def _stream(
    check: Callable[[Any], Any], behaviour: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behaviour(check(request), context):
                yield item
        except Exception as error:
            if isinstance(request, AsyncIterable):  # the caller may still be sending
                await _drained(request)
            await _abort(context, error)

    return stream


# What a refused call's caller may still send, and for how long, before the
# refusal: as many messages as an upload may send at all.
_MAX_DRAINED_MESSAGES = MAX_UPLOAD_MESSAGES
_MAX_DRAIN_SECONDS = 10.0


async def _drained(requests: AsyncIterable[Any]) -> None:
    """Reads (and drops) what the caller still sends, within the bounds above."""
    try:
        async with asyncio.timeout(_MAX_DRAIN_SECONDS):
            count = 0
            async for _ in requests:
                count += 1
                if count >= _MAX_DRAINED_MESSAGES:
                    return
    except Exception:  # too slow, or past reading: the refusal goes out all the same
        return


def _tolerant(deserializer: Deserializer) -> Deserializer:
    """`deserializer`, returning the marker instead of raising for bytes that do not parse."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _MALFORMED

    return deserialize


class _RateLimitedWarning:
    """Logs a refused malformed message as one WARNING per interval, counting the rest."""

    def __init__(self, *, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._quiet_until: float | None = None
        self._suppressed = 0

    def note(self) -> None:
        now = self._clock()
        if self._quiet_until is not None and now < self._quiet_until:
            self._suppressed += 1
            return
        self._quiet_until = now + self._interval
        suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            log.warning(
                "refused a malformed request message (and %d more since the last report)",
                suppressed,
            )
        else:
            log.warning("refused a malformed request message")


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    if isinstance(error, grpc.aio.AbortError):
        raise error  # the call is already aborted (by grpc itself)
    status = error.to_status() if isinstance(error, GatewayError) else None
    if status is None:
        log.error("a call failed", exc_info=error)
        status = INTERNAL_ERROR.to_status()
    # Refusals are often module constants, raised again and again: each raise
    # would add its frames to the same traceback, keeping every refused call's
    # locals alive for as long as the process runs.
    error.__traceback__ = None
    request_id = current_request_id()
    if request_id is not None:
        # The status's trailers replace the call's: the id goes with them.
        status = _Status(
            status.code,
            status.details,
            (*status.trailing_metadata, (REQUEST_ID_KEY, request_id)),
        )
    await context.abort_with_status(status)


@dataclasses.dataclass(frozen=True)
class _Status(grpc.Status):
    """A status with other trailing metadata (grpc's own class is private)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]
