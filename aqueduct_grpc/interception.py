"""Builds handlers whose behaviour runs inside a guard (for interceptors)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["Guard", "StreamGuard", "guarded"]

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
            return await guard(request, context, behaviour)

        return grpc.unary_unary_rpc_method_handler(  # type: ignore[no-any-return]
            single,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in stream_guard(request, context, streaming):
                yield item

        return grpc.unary_stream_rpc_method_handler(  # type: ignore[no-any-return]
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise TypeError("guarded methods must have a unary request")
