"""Limits and budgets: an interceptor that admits an image request only within both.

It runs after authentication and before the handler, so a refused request
never reaches the upstream. Budgets are checked first (no counter is charged
for a request the budget refuses), then the rate-limit counters of the token
and of its team are charged together. A refusal is RESOURCE_EXHAUSTED with
`RetryInfo` (HTTP: 429 with `Retry-After`), and is recorded in usage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.accounting.budgets import BudgetLedger, BudgetRefusal
from aqueduct_grpc.accounting.policy import Budgets, Limits
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.rate_limits import Charge, RateLimiter, Refusal
from aqueduct_grpc.accounting.usage_log import UsageRecord, UsageRecorder
from aqueduct_grpc.auth.interceptor import current_token
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images.catalog import ModelCatalog
from aqueduct_grpc.interception import MethodInterceptor, guarded

__all__ = ["QuotaInterceptor"]

_MAX_IMAGES = 10  # larger `n` is refused by the handler; it counts as this many here


class QuotaInterceptor(MethodInterceptor):
    """Checks budgets and charges rate limits before the guarded methods run."""

    def __init__(
        self,
        *,
        methods: Iterable[str],
        catalog: ModelCatalog,
        policies: PolicyStore,
        limiter: RateLimiter,
        ledger: BudgetLedger,
        usage: UsageRecorder,
        default_limits: Limits,
        default_budgets: Budgets,
    ) -> None:
        """Args:
        methods: full gRPC paths (`/pkg.Service/Method`) of the image-generating
            methods; their requests have `model`, `n`, `size` and `quality`.
        catalog: resolves the model (for its limit weight and price).
        policies: token and team policies.
        limiter: the rate-limit counters.
        ledger: the budget totals.
        usage: receives a row for each refusal.
        default_limits: the limits of a token that sets none.
        default_budgets: the budgets of a token that sets none.
        """
        super().__init__()
        self._methods = frozenset(methods)
        self._catalog = catalog
        self._policies = policies
        self._limiter = limiter
        self._ledger = ledger
        self._usage = usage
        self._default_limits = default_limits
        self._default_budgets = default_budgets

    def applies_to(self, method: str) -> bool:
        return method in self._methods

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return guarded(handler, self._guard, self._guard_stream)

    async def _guard(self, request: Any, context: grpc.aio.ServicerContext, behaviour: Any) -> Any:
        held = await self._admit(_image_request(request), context)
        try:
            return await behaviour(request, context)
        finally:
            self._ledger.release(held)

    async def _guard_stream(
        self, request: Any, context: grpc.aio.ServicerContext, behaviour: Any
    ) -> AsyncIterator[Any]:
        # The budget hold lasts as long as the stream, like a unary call's.
        held = await self._admit(_image_request(request), context)
        try:
            async for event in behaviour(request, context):
                yield event
        finally:
            self._ledger.release(held)

    async def _admit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Charges limits and holds budget for `request`; aborts the call on refusal.

        Returns the budget hold, to be released when the call ends.
        """
        token = current_token()
        snapshot = await self._policies.snapshot()
        policy = snapshot.token(token.id)
        team = snapshot.team(policy.team_id)
        requested = request.model if request.HasField("model") else None
        model = self._catalog.find(requested)
        n = min(max(request.n if request.HasField("n") else 1, 1), _MAX_IMAGES)
        size = request.size if request.HasField("size") else None
        quality = request.quality if request.HasField("quality") else None

        owners = [("token", token.id, policy.budgets.over(self._default_budgets))]
        if team is not None:
            owners.append(("team", team.id, team.budgets))
        estimate = None if model is None else self._ledger.estimate(model.name, n, size, quality)
        held = self._ledger.reserve(owners, estimate)
        if isinstance(held, BudgetRefusal):
            error = _over_budget(held)
        else:
            weight = model.limit_weight if model is not None else 1.0
            charges = _charges("token", token.id, policy.limits.over(self._default_limits), n)
            if team is not None:
                charges += _charges("team", team.id, team.limits, n)
            if weight != 1.0:
                charges = [_weighted(c, weight) for c in charges]
            too_big = next((c for c in charges if c.amount > c.limit), None)
            if too_big is not None:
                # Waiting cannot help: a 400 saying so, not a 429 to retry forever.
                self._ledger.release(held)
                error = _never_fits(too_big)
            else:
                try:
                    refusal = await self._limiter.acquire(charges)
                except BaseException:
                    # A storage error, or the caller gone while a shared storage
                    # answered: the hold must not outlive the call.
                    self._ledger.release(held)
                    raise
                if refusal is None:
                    return held
                self._ledger.release(held)
                error = _over_limit(refusal)
        self._usage.record(
            UsageRecord(
                created_at=time.time(),
                token_id=token.id,
                requested_model=requested,
                model=model.name if model is not None else None,
                status=error.code.name,
                error_reason=error.reason,
                n=n,
                size=size,
                quality=quality,
            )
        )
        await context.abort_with_status(error.to_status())


def _image_request(request: Any) -> images_pb2.GenerateImagesRequest:
    """The image request itself: the streaming twin carries it in `request`."""
    if isinstance(request, images_pb2.StreamGenerateImagesRequest):
        return request.request
    return request  # type: ignore[no-any-return]


def _charges(scope: str, owner: str, limits: Limits, n: int) -> list[Charge]:
    charges = []
    for name, limit, amount in (
        ("requests_per_minute", limits.requests_per_minute, 1),
        ("images_per_minute", limits.images_per_minute, n),
        ("images_per_day", limits.images_per_day, n),
    ):
        if limit is not None:
            charges.append(Charge(scope, owner, name, limit, float(amount)))
    return charges


def _weighted(charge: Charge, weight: float) -> Charge:
    return Charge(charge.scope, charge.owner, charge.name, charge.limit, charge.amount * weight)


def _over_limit(refusal: Refusal) -> GatewayError:
    charge = refusal.charge
    unit = charge.name.replace("_per_", " per ")
    whose = "this token" if charge.scope == "token" else "this token's team"
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"Rate limit reached: {whose} may use {charge.limit} {unit}. "
        f"Retry in {max(1, round(refusal.retry_after + 0.5))} s.",
        reason=f"{charge.scope}_{charge.name}_exceeded".upper(),
        retry_after=max(refusal.retry_after, 1.0),
    )


def _never_fits(charge: Charge) -> GatewayError:
    unit = charge.name.replace("_per_", " per ")
    whose = "this token" if charge.scope == "token" else "this token's team"
    images = charge.name != "requests_per_minute"
    hint = "ask for fewer images" if images else "this model counts for more than that"
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"This request counts as {charge.amount:g} toward a limit of {charge.limit} {unit} "
        f"for {whose}, so it can never be admitted: {hint}.",
        reason=f"{charge.scope}_{charge.name}_exceeded".upper(),
        param="n" if images else "model",
    )


def _over_budget(refusal: BudgetRefusal) -> GatewayError:
    whose = "this token" if refusal.scope == "token" else "this token's team"
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"You exceeded your current quota: {whose} has spent its "
        f"{'daily' if refusal.period == 'day' else 'monthly'} budget of "
        f"${refusal.budget:g}.",
        reason="INSUFFICIENT_QUOTA",
        retry_after=max(refusal.retry_after, 1.0),
    )
