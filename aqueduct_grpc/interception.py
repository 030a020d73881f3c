"""Builds unary handlers whose behaviour runs inside a guard (for interceptors)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

__all__ = ["Guard", "guarded_unary"]

# Receives the request, the context and the handler's behaviour; returns the response.
Guard = Callable[[Any, grpc.aio.ServicerContext, Callable[..., Awaitable[Any]]], Awaitable[Any]]


def guarded_unary(handler: grpc.RpcMethodHandler, guard: Guard) -> grpc.RpcMethodHandler:
    """`handler` with its unary-unary behaviour run through `guard`.

    Other kinds of handlers are returned unchanged: the guarded services are unary.
    """
    behaviour = handler.unary_unary
    if behaviour is None:
        return handler

    async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await guard(request, context, behaviour)

    return grpc.unary_unary_rpc_method_handler(  # type: ignore[no-any-return]
        single,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
