"""The AdminService handlers: tokens, teams, limits, budgets and usage.

Each RPC first requires admin scope (`_require_admin`); errors are raised, not aborted.
Handlers use the same stores and report as the CLI, so both give the same results.
"""

from __future__ import annotations

import math
import time
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct.admin.v1 import admin_pb2, admin_pb2_grpc
from aqueduct_grpc.accounting.policy import (
    Budgets,
    Limits,
    PatchError,
    PolicyPatch,
    TeamPolicy,
    TokenPolicy,
    parse_policy_patch,
    removed_by,
)
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.usage_log import UsageLog
from aqueduct_grpc.accounting.usage_report import GROUPINGS, UsageGroup, parse_moment, usage_report
from aqueduct_grpc.auth.interceptor import current_token
from aqueduct_grpc.auth.tokens import Token, TokenStore
from aqueduct_grpc.errors import GatewayError, invalid_argument

__all__ = ["ADMIN_SERVICE", "AdminService", "budgets_from", "limits_from"]


def limits_from(message: admin_pb2.Limits) -> Limits:
    """Limits from their protobuf form (unset fields stay unset)."""
    values = {f.name: v for f, v in message.ListFields()}
    if not all(0 <= v < math.inf for v in values.values()):
        raise invalid_argument("limits must be non-negative numbers", "limits")
    return Limits(**values)


def budgets_from(message: admin_pb2.Budgets) -> Budgets:
    """Budgets from their protobuf form."""
    values = {f.name: v for f, v in message.ListFields()}
    if not all(0 <= v < math.inf for v in values.values()):  # NaN fails this too
        raise invalid_argument("budgets must be non-negative, finite numbers", "budgets")
    return Budgets(**values)


ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name

_NOT_ADMIN = GatewayError(
    grpc.StatusCode.PERMISSION_DENIED,
    "This operation needs an admin token (aqueduct-grpc tokens create --admin).",
    reason="ADMIN_SCOPE_REQUIRED",
)


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """Serves aqueduct.admin.v1.AdminService; every RPC needs a token with admin scope."""

    def __init__(
        self,
        *,
        tokens: TokenStore,
        policies: PolicyStore,
        engine: AsyncEngine,
        usage: UsageLog,
    ) -> None:
        """Creates the AdminService.

        Args:
            tokens: the token store.
            policies: teams and token policies.
            engine: the database (usage reports).
            usage: flushed before a report, so it includes every finished request.
        """
        self._tokens = tokens
        self._policies = policies
        self._engine = engine
        self._usage = usage

    async def _require_admin(self) -> None:
        snapshot = await self._policies.snapshot(knowing=(current_token().id,))
        if not snapshot.token(current_token().id).admin:
            raise _NOT_ADMIN

    async def CreateToken(
        self, request: admin_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTokenResponse:
        """Creates a token with its policy; the answer holds its secret, once."""
        await self._require_admin()
        parts = await self._policy_parts(request)
        expires = request.expires_in_seconds if request.HasField("expires_in_seconds") else None
        token, secret = await self._tokens.create(
            request.name, expires_in=expires, models=list(request.models) or None
        )
        policy = await self._policies.set_token_policy(TokenPolicy(token_id=token.id, **parts))
        return admin_pb2.CreateTokenResponse(token=_token(token, policy), secret=secret)

    async def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTokensResponse:
        """Every token with its policy, never a secret."""
        await self._require_admin()
        tokens = await self._tokens.list()
        # Knowing every listed token: one made by the CLI shows its own policy at once.
        snapshot = await self._policies.snapshot(knowing=[t.id for t in tokens])
        return admin_pb2.ListTokensResponse(
            tokens=[_token(t, snapshot.token(t.id)) for t in tokens]
        )

    async def RevokeToken(
        self, request: admin_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeTokenResponse:
        """Revokes a token by id or name."""
        await self._require_admin()
        token = await self._tokens.revoke(request.token)
        return admin_pb2.RevokeTokenResponse(
            token=_token(token, await self._policies.token_policy(token.id))
        )

    async def SetTokenPolicy(
        self, request: admin_pb2.SetTokenPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetTokenPolicyResponse:
        """Replaces a token's team, admin scope, limits and budgets; says what went."""
        await self._require_admin()
        token = await self._tokens.find(request.token)
        parts = await self._policy_parts(request)
        before = await self._policies.token_policy(token.id)
        policy = await self._policies.set_token_policy(TokenPolicy(token_id=token.id, **parts))
        return admin_pb2.SetTokenPolicyResponse(
            token=_token(token, policy), removed=removed_by(before, policy)
        )

    async def UpdateTokenPolicy(
        self, request: admin_pb2.UpdateTokenPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UpdateTokenPolicyResponse:
        """Changes the parts of a token's policy the patch names; answers the whole policy."""
        await self._require_admin()
        patch = _patch(request.patch, for_token=True)
        token = await self._tokens.find(request.token)
        policy = await self._policies.update_token_policy(token.id, patch)
        return admin_pb2.UpdateTokenPolicyResponse(token=_token(token, policy))

    async def CreateTeam(
        self, request: admin_pb2.CreateTeamRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTeamResponse:
        """Creates a team with its limits and budgets."""
        await self._require_admin()
        team = await self._policies.create_team(
            request.name, limits=limits_from(request.limits), budgets=budgets_from(request.budgets)
        )
        return admin_pb2.CreateTeamResponse(team=_team(team))

    async def ListTeams(
        self, request: admin_pb2.ListTeamsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTeamsResponse:
        """Every team with its policy."""
        await self._require_admin()
        return admin_pb2.ListTeamsResponse(
            teams=[_team(t) for t in await self._policies.list_teams()]
        )

    async def SetTeamPolicy(
        self, request: admin_pb2.SetTeamPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetTeamPolicyResponse:
        """Replaces a team's limits and budgets; says what went."""
        await self._require_admin()
        before = await self._policies.find_team(request.team)
        team = await self._policies.set_team_policy(
            before.id, limits=limits_from(request.limits), budgets=budgets_from(request.budgets)
        )
        return admin_pb2.SetTeamPolicyResponse(team=_team(team), removed=removed_by(before, team))

    async def UpdateTeamPolicy(
        self, request: admin_pb2.UpdateTeamPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UpdateTeamPolicyResponse:
        """Changes the limits and budgets the patch names; answers the team's whole policy."""
        await self._require_admin()
        patch = _patch(request.patch, for_token=False)
        team = await self._policies.update_team_policy(request.team, patch)
        return admin_pb2.UpdateTeamPolicyResponse(team=_team(team))

    async def QueryUsage(
        self, request: admin_pb2.QueryUsageRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.QueryUsageResponse:
        """The usage report for a period, grouped as asked."""
        await self._require_admin()
        now = time.time()
        by = request.by or "token"
        since = _moment(request.since or "7d", now, "since")
        until = _moment(request.until, now, "until") if request.until else now
        if by not in GROUPINGS:
            raise invalid_argument(f"by must be one of {', '.join(GROUPINGS)}", "by")
        await self._usage.flush()
        groups = await usage_report(self._engine, since=since, until=until, by=by)
        return admin_pb2.QueryUsageResponse(
            since=int(since),
            until=int(until),
            by=by,
            groups=[_usage_group(g) for g in groups],
        )

    async def _policy_parts(self, request: Any) -> dict[str, Any]:
        """Team id, admin scope, limits and budgets of a create/set request."""
        team_id = None
        if request.team:
            team_id = (await self._policies.find_team(request.team)).id
        return {
            "team_id": team_id,
            "admin": request.admin,
            "limits": limits_from(request.limits),
            "budgets": budgets_from(request.budgets),
        }


def _patch(message: struct_pb2.Struct, *, for_token: bool) -> PolicyPatch:
    """The request's JSON merge patch, checked; a fault is INVALID_ARGUMENT naming its field."""
    try:
        return parse_policy_patch(json_format.MessageToDict(message), for_token=for_token)
    except PatchError as error:
        raise invalid_argument(str(error), error.field or "patch") from None


def _usage_group(group: UsageGroup) -> admin_pb2.UsageGroup:
    # None (no team, no price, no success) stays unset rather than becoming 0 or "".
    return admin_pb2.UsageGroup(**{k: v for k, v in vars(group).items() if v is not None})


def _moment(text: str, now: float, param: str) -> float:
    try:
        return parse_moment(text, now)
    except ValueError as error:
        raise invalid_argument(str(error), param) from None


def _token(token: Token, policy: TokenPolicy) -> admin_pb2.Token:
    message = admin_pb2.Token(
        id=token.id,
        name=token.name,
        state=token.state(time.time()),
        created_at=int(token.created_at),
        models=list(token.allowed_models or ()),
        admin=policy.admin,
        limits=admin_pb2.Limits(**policy.limits.as_dict()),
        budgets=admin_pb2.Budgets(**policy.budgets.as_dict()),
    )
    if token.expires_at is not None:
        message.expires_at = int(token.expires_at)
    if token.revoked_at is not None:
        message.revoked_at = int(token.revoked_at)
    if policy.team_id is not None:
        message.team_id = policy.team_id
    return message


def _team(team: TeamPolicy) -> admin_pb2.Team:
    return admin_pb2.Team(
        id=team.id,
        name=team.name,
        created_at=int(team.created_at),
        limits=admin_pb2.Limits(**team.limits.as_dict()),
        budgets=admin_pb2.Budgets(**team.budgets.as_dict()),
    )
