"""The core's one error exit: where a raised `GatewayError` becomes the call's gRPC status.

Handlers, interceptors and stores only raise. This interceptor wraps every
method of the core's own services, outermost, so no other code aborts a call.
Any other exception is a bug of ours: it is logged with its traceback and the
caller gets a plain INTERNAL, never the exception's text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from aqueduct_grpc.errors import INTERNAL_ERROR, GatewayError
from aqueduct_grpc.interception import MethodInterceptor, wrap_behaviour

__all__ = ["ErrorExit"]

log = logging.getLogger(__name__)


class ErrorExit(MethodInterceptor):
    """Turns errors raised by the methods of `services` into gRPC statuses."""

    def __init__(self, services: Iterable[str]) -> None:
        """Creates the ErrorExit.

        Args:
            services: full names of the services whose errors leave here.
        """
        super().__init__()
        self._services = frozenset(services)

    def applies_to(self, method: str) -> bool:
        """Every method of the core's own services."""
        return method.lstrip("/").partition("/")[0] in self._services

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler, its errors turned into statuses."""
        return wrap_behaviour(handler, _single, _stream)


def _single(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except Exception as error:
            await _abort(context, error)

    return single


def _stream(behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behaviour(request, context):
                yield item
        except Exception as error:
            await _abort(context, error)

    return stream


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    if isinstance(error, grpc.aio.AbortError):
        raise error  # the call is already aborted (by grpc itself)
    if not isinstance(error, GatewayError):
        log.error("a call failed", exc_info=error)
        error = INTERNAL_ERROR
    await context.abort_with_status(error.to_status())
