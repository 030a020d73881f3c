"""Admin scope: an interceptor that admits only admin tokens to the admin service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from aqueduct.admin.v1 import admin_pb2
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.auth.interceptor import current_token
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.interception import MethodInterceptor, guarded

__all__ = ["ADMIN_SERVICE", "AdminScopeInterceptor"]

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name

_NOT_ADMIN = GatewayError(
    grpc.StatusCode.PERMISSION_DENIED,
    "This operation needs an admin token (aqueduct-grpc tokens create --admin).",
    reason="ADMIN_SCOPE_REQUIRED",
)


class AdminScopeInterceptor(MethodInterceptor):
    """Refuses admin RPCs with PERMISSION_DENIED unless the token has admin scope.

    Runs after the AuthInterceptor (listed after it), so the caller is known.
    """

    def __init__(self, policies: PolicyStore) -> None:
        """Args:
        policies: where a token's admin scope is read.
        """
        super().__init__()
        self._policies = policies

    def applies_to(self, method: str) -> bool:
        return method.lstrip("/").partition("/")[0] == ADMIN_SERVICE

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return guarded(handler, self._guard, self._guard_stream)

    async def _guard(self, request: Any, context: grpc.aio.ServicerContext, behaviour: Any) -> Any:
        await self._require_admin(context)
        return await behaviour(request, context)

    async def _guard_stream(
        self, request: Any, context: grpc.aio.ServicerContext, behaviour: Any
    ) -> AsyncIterator[Any]:
        await self._require_admin(context)
        async for item in behaviour(request, context):
            yield item

    async def _require_admin(self, context: grpc.aio.ServicerContext) -> None:
        snapshot = await self._policies.snapshot()
        if not snapshot.token(current_token().id).admin:
            await context.abort_with_status(_NOT_ADMIN.to_status())
