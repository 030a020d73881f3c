"""What the core's interceptors share: per-method handler wrapping, and guards."""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from aqueduct_grpc.errors import INTERNAL_ERROR, GatewayError

__all__ = ["Guard", "MethodInterceptor", "StreamGuard", "guarded"]

log = logging.getLogger(__name__)

# Receives the request, the context and the handler's behaviour; returns the response.
Guard = Callable[[Any, grpc.aio.ServicerContext, Callable[..., Awaitable[Any]]], Awaitable[Any]]
# The same for a server-streaming behaviour; yields the responses.
StreamGuard = Callable[[Any, grpc.aio.ServicerContext, Callable[..., Any]], AsyncIterator[Any]]


def guarded(
    handler: grpc.RpcMethodHandler, guard: Guard, stream_guard: StreamGuard
) -> grpc.RpcMethodHandler:
    """`handler` with its unary-unary or unary-stream behaviour run through a guard.

    Handlers with a streaming request are refused: no guarded method has one,
    and passing them through unguarded would silently skip the checks.
    """
    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _unexpected_errors_hidden(context):
                return await guard(request, context, behaviour)

        return grpc.unary_unary_rpc_method_handler(  # type: ignore[no-any-return]
            single,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _unexpected_errors_hidden(context):
                async for item in stream_guard(request, context, streaming):
                    yield item

        return grpc.unary_stream_rpc_method_handler(  # type: ignore[no-any-return]
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise TypeError("guarded methods must have a unary request")


@contextlib.asynccontextmanager
async def _unexpected_errors_hidden(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """A guard's own failure (say, its storage is down) is logged, and the caller
    gets a plain INTERNAL: gRPC would otherwise send the exception's text."""
    try:
        yield
    except (grpc.aio.AbortError, GatewayError):
        raise
    except Exception:
        log.exception("an interceptor failed")
        await context.abort_with_status(INTERNAL_ERROR.to_status())


class MethodInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handlers of the methods it applies to; each once, not per call."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    @abc.abstractmethod
    def applies_to(self, method: str) -> bool:
        """Whether `method` (`/pkg.Service/Method`) is wrapped."""

    @abc.abstractmethod
    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to serve in place of `handler`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if not self.applies_to(method):
            return await continuation(handler_call_details)
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # unknown method: gRPC answers UNIMPLEMENTED
            wrapped = self._wrapped[method] = self.wrap(handler)
        return wrapped
