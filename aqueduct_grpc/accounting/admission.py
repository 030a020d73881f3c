"""Admission: the one step that admits an image request within its limits and budgets.

The handler calls it after resolving the model and validating the request,
so a request that ends in 400 or 404 is never charged. Budgets are checked
first (no counter is charged for a request the budget refuses), then the
rate-limit counters of the token and of its team are charged together. A
refusal raises RESOURCE_EXHAUSTED with a retry delay (HTTP: 429 with
`Retry-After`); a request that could never fit raises INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from aqueduct_grpc.accounting.budgets import BudgetLedger, BudgetRefusal
from aqueduct_grpc.accounting.policy import Budgets, Limits, TeamPolicy
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.rate_limits import Charge, RateLimiter, Refusal
from aqueduct_grpc.auth.tokens import Token
from aqueduct_grpc.errors import GatewayError

__all__ = ["Admission", "Reservation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reservation:
    """What admission learned about an admitted request, for its journal and its row.

    The request's hold on its budgets (if any) lasts until its usage row is
    committed: the transaction that commits the row settles the hold.
    """

    team_id: str | None
    estimate: float | None


class Admission:
    """Checks budgets and charges rate limits for image requests."""

    def __init__(
        self,
        *,
        policies: PolicyStore,
        limiter: RateLimiter,
        ledger: BudgetLedger,
        default_limits: Limits,
        default_budgets: Budgets,
    ) -> None:
        """Creates the Admission.

        Args:
            policies: token and team policies.
            limiter: the rate-limit counters.
            ledger: the budget totals.
            default_limits: the limits of a token that sets none.
            default_budgets: the budgets of a token that sets none.
        """
        self._policies = policies
        self._limiter = limiter
        self._ledger = ledger
        self._default_limits = default_limits
        self._default_budgets = default_budgets

    async def admit(
        self,
        token: Token,
        model: str,
        *,
        weight: float,
        n: int,
        size: str | None,
        quality: str | None,
        request_key: str,
    ) -> Reservation:
        """Holds budget and charges limits for a request, or raises its refusal.

        Args:
            token: the caller.
            model: the resolved model's name (its prices).
            weight: what one request or image of the model counts toward limits:
                1/`request_limit_multiplier` (a model with multiplier 2 gets twice
                the limits, so each request counts 0.5), counted in hundredths.
            n: images asked for (already validated).
            size: the requested size, if any.
            quality: the requested quality, if any.
            request_key: the request's usage row key (its budget hold's name).
        """
        snapshot = await self._policies.snapshot(knowing=(token.id,))
        policy = snapshot.token(token.id)
        team = snapshot.team(policy.team_id)
        owners = [("token", token.id, policy.budgets.over(self._default_budgets))]
        if team is not None:
            owners.append(("team", team.id, team.budgets))
        estimate = self._ledger.estimate(model, n, size, quality)
        held = await self._ledger.reserve(owners, estimate, request_key)
        if isinstance(held, BudgetRefusal):
            raise _over_budget(held)
        try:
            limits = policy.limits.over(self._default_limits)
            await self._charge(token.id, limits, team, weight, n)
        except BaseException:
            # Refused, or the caller gone while a shared storage answered:
            # the hold must not outlive the call. A release that fails leaves
            # it to the row's commit, and must not hide the refusal.
            try:
                await asyncio.shield(self._ledger.release(request_key))
            except Exception:
                log.warning("could not release a budget hold; the usage row will", exc_info=True)
            raise
        return Reservation(team_id=None if team is None else team.id, estimate=estimate)

    async def _charge(
        self, token_id: str, limits: Limits, team: TeamPolicy | None, weight: float, n: int
    ) -> None:
        """Charges the token's and its team's counters, all or none; raises a refusal."""
        charges = _charges("token", token_id, limits, n)
        if team is not None:
            charges += _charges("team", team.id, team.limits, n)
        if weight != 1.0:
            charges = [_weighted(c, weight) for c in charges]
        too_big = next((c for c in charges if c.amount > c.limit), None)
        if too_big is not None:
            raise _never_fits(too_big)
        refusal = await self._limiter.acquire(charges)
        if refusal is not None:
            raise _over_limit(refusal)


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
