"""What the core's interceptors share: wrapping each method's handler once."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["MethodInterceptor", "SingleWrapper", "StreamWrapper", "wrap_behaviour"]

# Given a handler's behaviour, the behaviour to run in its place.
SingleWrapper = Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]
StreamWrapper = Callable[[Callable[..., AsyncIterator[Any]]], Callable[..., AsyncIterator[Any]]]

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def wrap_behaviour(
    handler: grpc.RpcMethodHandler,
    single: SingleWrapper,
    stream: StreamWrapper,
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
    response_serializer: Callable[[Any], bytes] | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped: `single` for a single response, else `stream`.

    Args:
        handler: the handler to wrap.
        single: wraps a behaviour that answers with one message.
        stream: wraps a behaviour that answers with a stream.
        request_deserializer: replaces the handler's (grpc runs it before any
            behaviour); None keeps the handler's.
        response_serializer: replaces the handler's (grpc runs it on what the
            behaviour answers); None keeps the handler's.
    """
    deserializer = request_deserializer or handler.request_deserializer
    serializer = response_serializer or handler.response_serializer
    for kind, build, streams in _KINDS:
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return build(  # type: ignore[no-any-return]
                stream(behaviour) if streams else single(behaviour),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
    raise TypeError(f"unsupported handler {handler!r}")


class MethodInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handlers of the methods it applies to; each once, not per call."""

    def __init__(self) -> None:
        """Starts with no handler wrapped."""
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    @abc.abstractmethod
    def applies_to(self, method: str) -> bool:
        """Whether `method` (`/pkg.Service/Method`) is wrapped."""

    @abc.abstractmethod
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to serve in place of `handler`, the one of `method`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The wrapped handler of the called method, or the plain one if not ours."""
        method = handler_call_details.method
        if not self.applies_to(method):
            return await continuation(handler_call_details)
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # unknown method: gRPC answers UNIMPLEMENTED
            wrapped = self._wrapped[method] = self.wrap(method, handler)
        return wrapped
