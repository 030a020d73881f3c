"""Authentication: a server interceptor that admits only callers with a valid token.

Every RPC needs `authorization: Bearer <token>` metadata except the health and
reflection services, which load balancers and grpcurl call without one, and
the methods the server names as open (those carry their own credential, such
as a signed URL). The admitted token is available to handlers through
`current_token()`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from aqueduct_grpc.auth.tokens import Token, TokenStore
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.interception import MethodInterceptor, wrap_behaviour

__all__ = ["AuthInterceptor", "current_token"]

_OPEN_SERVICES = (
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
    "grpc.reflection.v1.ServerReflection",
)

log = logging.getLogger(__name__)

_STORE_FAILED = GatewayError(
    grpc.StatusCode.UNAVAILABLE, "Authentication is unavailable; retry.", reason="AUTH_UNAVAILABLE"
)

_token: contextvars.ContextVar[Token] = contextvars.ContextVar("aqueduct_token")


def current_token() -> Token:
    """The token that authenticated the RPC being handled."""
    return _token.get()


class AuthInterceptor(MethodInterceptor):
    """Checks the bearer token before the handler runs."""

    def __init__(self, tokens: TokenStore, *, open_methods: Iterable[str] = ()) -> None:
        """Creates the AuthInterceptor.

        Args:
            tokens: where tokens are looked up.
            open_methods: full method paths (`/pkg.Service/Method`) called without a token.
        """
        super().__init__()
        self._tokens = tokens
        self._open_methods = frozenset(open_methods)

    def applies_to(self, method: str) -> bool:
        """Every method but health, reflection and the open ones."""
        service = method.lstrip("/").partition("/")[0]
        return service not in _OPEN_SERVICES and method not in self._open_methods

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler, run only once the caller's token is known."""
        return wrap_behaviour(handler, self._single, self._stream)

    def _single(self, behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._admit(context)
            return await behaviour(request, context)

        return single

    def _stream(
        self, behaviour: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._admit(context)
            async for item in behaviour(request, context):
                yield item

        return stream

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode()
                break
        try:
            token = await self._tokens.authenticate(authorization)
        except GatewayError:
            raise
        except Exception:
            # The token store failed (database gone): no exception text to the caller.
            log.exception("authentication failed")
            raise _STORE_FAILED from None
        _token.set(token)
