"""The AdminService over gRPC and through the unmodified HTTP door, and its parity with the CLI."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aqueduct.admin.v1 import admin_pb2, admin_pb2_grpc
from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.cli import commands as cli
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.server import open_core, start_grpc_server
from aqueduct_grpc.testing.fake_upstream import FakeUpstream
from gateway_http.routes import discover_services
from tests.accounting import IMAGE_PRICE, priced_config, token_with
from tests.conftest import bearer
from tests.grpc_errors import details_of


@pytest.fixture
def config(upstream: FakeUpstream) -> GatewayConfig:
    return priced_config(upstream)


@pytest.fixture
def door(http_door: str) -> str:
    """The HTTP door of conftest (the real app in front of the real core)."""
    return http_door


@pytest.fixture
def admin_stub(channel: grpc.aio.Channel) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
async def admin(gateway) -> str:  # type: ignore[no-untyped-def]
    return await token_with(gateway, "root", admin=True)


async def call(
    door: str, method: str, path: str, secret: str | None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, door + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/v1/tokens"),
        ("POST", "/admin/v1/tokens"),
        ("POST", "/admin/v1/tokens/tok_x:revoke"),
        ("PUT", "/admin/v1/tokens/tok_x/policy"),
        ("PATCH", "/admin/v1/tokens/tok_x/policy"),
        ("GET", "/admin/v1/teams"),
        ("POST", "/admin/v1/teams"),
        ("PUT", "/admin/v1/teams/t/policy"),
        ("PATCH", "/admin/v1/teams/t/policy"),
        ("GET", "/admin/v1/usage?since=1d"),
    ],
)
async def test_http_admin_needs_an_admin_token(door, secret, method, path):
    body = {} if method in ("POST", "PUT", "PATCH") and not path.endswith(":revoke") else None
    status, answer = await call(door, method, path, None, body)
    assert status == 401 and answer["error"]["type"] == "invalid_request_error"
    status, answer = await call(door, method, path, secret, body)  # a normal token
    assert status == 403
    assert answer["error"]["type"] == "permission_denied_error"
    assert answer["error"]["code"] == "admin_scope_required"


async def test_grpc_admin_needs_an_admin_token(admin_stub, secret):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.ListTokens(admin_pb2.ListTokensRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.ListTokens(admin_pb2.ListTokensRequest(), metadata=bearer(secret))
    assert details_of(caught.value).code == grpc.StatusCode.PERMISSION_DENIED


async def test_http_admin_lifecycle(door, admin, upstream):
    status, team = await call(
        door,
        "POST",
        "/admin/v1/teams",
        admin,
        {"name": "design", "limits": {"requests_per_minute": 5}},
    )
    assert status == 200 and team["team"]["limits"] == {"requests_per_minute": 5}
    status, created = await call(
        door,
        "POST",
        "/admin/v1/tokens",
        admin,
        {"name": "carol", "team": "design", "limits": {"images_per_day": 1}},
    )
    assert status == 200 and created["secret"].startswith("aqk-")
    token = created["token"]
    assert token["team_id"] == team["team"]["id"] and token["state"] == "active"
    assert isinstance(token["created_at"], int)  # int64 as a JSON number

    # The new token works, and its own limit applies.
    headers = {"Authorization": f"Bearer {created['secret']}"}
    async with aiohttp.ClientSession() as session:
        for expected in (200, 429):
            async with session.post(
                f"{door}/v1/images/generations",
                json={"prompt": "x", "model": "gpt-image-1"},
                headers=headers,
            ) as response:
                assert response.status == expected

    # Path parameter: a token by name; PUT replaces its policy.
    status, updated = await call(
        door, "PUT", "/admin/v1/tokens/carol/policy", admin, {"limits": {"images_per_day": 9}}
    )
    assert status == 200 and updated["token"]["limits"] == {"images_per_day": 9}
    assert "team_id" not in updated["token"]  # PUT without a team: no team
    # ... and the answer says what the replacement took away.
    assert updated["removed"] == [f"removed from team {team['team']['id']}"]
    status, teams = await call(door, "PUT", "/admin/v1/teams/design/policy", admin, {})
    assert status == 200 and teams["team"]["limits"] == {}
    assert teams["removed"] == ["limits removed: requests_per_minute"]

    status, revoked = await call(door, "POST", f"/admin/v1/tokens/{token['id']}:revoke", admin)
    assert status == 200 and revoked["token"]["state"] == "revoked"
    status, listed = await call(door, "GET", "/admin/v1/tokens", admin)
    states = {t["name"]: t["state"] for t in listed["tokens"]}
    assert states["carol"] == "revoked" and states["root"] == "active"
    assert next(t for t in listed["tokens"] if t["name"] == "root")["admin"] is True


async def test_http_admin_errors_are_openai_envelopes(door, admin):
    status, answer = await call(door, "POST", "/admin/v1/tokens/nobody:revoke", admin)
    assert status == 404 and answer["error"]["param"] == "token"
    status, answer = await call(
        door, "POST", "/admin/v1/tokens", admin, {"name": "x", "team": "nope"}
    )
    assert status == 404 and answer["error"]["param"] == "team"
    await call(door, "POST", "/admin/v1/teams", admin, {"name": "dup"})
    status, answer = await call(door, "POST", "/admin/v1/teams", admin, {"name": "dup"})
    assert status == 409 and answer["error"]["code"] == "team_exists"
    status, answer = await call(
        door, "POST", "/admin/v1/tokens", admin, {"name": "x", "expires_in_seconds": 0}
    )
    assert status == 400 and answer["error"]["param"] == "expires_in_seconds"
    status, answer = await call(door, "POST", "/admin/v1/tokens", admin, {"name": " "})
    assert status == 400 and answer["error"]["param"] == "name"
    # Names are bounded before the database sees them (PostgreSQL would refuse them).
    for path in ("/admin/v1/tokens", "/admin/v1/teams"):
        status, answer = await call(door, "POST", path, admin, {"name": "n" * 201})
        assert status == 400 and answer["error"]["param"] == "name"
        assert "at most 200 characters" in answer["error"]["message"]


async def test_replacing_an_admin_policy_says_admin_scope_went(door, admin):
    status, created = await call(
        door,
        "POST",
        "/admin/v1/tokens",
        admin,
        {"name": "ops", "admin": True, "budgets": {"per_day_usd": 5}},
    )
    assert status == 200 and created["token"]["admin"] is True
    status, updated = await call(
        door, "PUT", "/admin/v1/tokens/ops/policy", admin, {"limits": {"images_per_day": 3}}
    )
    assert status == 200 and updated["token"]["admin"] is False
    assert updated["removed"] == [
        "admin scope removed (send admin: true to keep it)",
        "budgets removed: per_day_usd",
    ]
    status, again = await call(
        door, "PUT", "/admin/v1/tokens/ops/policy", admin, {"limits": {"images_per_day": 4}}
    )
    assert status == 200 and again["removed"] == []  # nothing went this time
    status, answer = await call(door, "GET", "/admin/v1/usage?since=yesterday", admin)
    assert status == 400 and answer["error"]["param"] == "since"
    status, answer = await call(door, "GET", "/admin/v1/usage?by=colour", admin)
    assert status == 400 and answer["error"]["param"] == "by"
    status, answer = await call(door, "GET", "/admin/v1/usage?colour=red", admin)
    assert status == 400 and answer["error"]["code"] == "unknown_parameter"
    status, answer = await call(
        door, "POST", "/admin/v1/teams", admin, {"name": "neg", "budgets": {"per_day_usd": -1}}
    )
    assert status == 400


async def test_usage_query_over_http_and_grpc_agree(door, admin, admin_stub, gateway, stub):
    user = await token_with(gateway, "user")
    request = images_pb2.GenerateImagesRequest(
        prompt="x", model="priced-image", n=2, size="1024x1024", quality="standard"
    )
    await stub.GenerateImages(request, metadata=bearer(user))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(prompt="x", model="dall-e-9"), metadata=bearer(user)
        )
    status, report = await call(door, "GET", "/admin/v1/usage?since=1h&by=model", admin)
    assert status == 200 and report["by"] == "model"
    by_model = {g.get("key"): g for g in report["groups"]}
    assert by_model["priced-image"]["images"] == 2
    assert by_model["priced-image"]["cost_usd"] == pytest.approx(2 * IMAGE_PRICE)
    # The unknown model's request: no model, no cost, no latency (omitted, never "-" or 0).
    assert by_model[None] == {
        "requests": 1, "images": 0, "failures": 1, "unpriced_requests": 1
    }  # fmt: skip
    over_grpc = await admin_stub.QueryUsage(
        admin_pb2.QueryUsageRequest(since="1h", by="model"), metadata=bearer(admin)
    )
    assert [(g.key, g.requests, g.images, g.failures) for g in over_grpc.groups] == [
        (g.get("key", ""), g["requests"], g["images"], g["failures"]) for g in report["groups"]
    ]
    assert [g.HasField("key") for g in over_grpc.groups] == [True, False]


async def test_cli_and_admin_api_give_the_same_results(
    config: GatewayConfig, upstream: FakeUpstream, database_url: str, capsys
):
    def run(*argv: str) -> str:
        cli.main([*argv, "--database-url", database_url])
        return capsys.readouterr().out

    await asyncio.to_thread(run, "teams", "create", "--name", "ops", "--requests-per-minute", "7")
    out = await asyncio.to_thread(
        run, "tokens", "create", "--name", "boss", "--admin", "--team", "ops"
    )
    secret = out.strip().splitlines()[-1]
    await asyncio.to_thread(run, "tokens", "create", "--name", "worker", "--images-per-day", "3")
    async with open_core(config, database_url=database_url) as gateway:
        server = await start_grpc_server(gateway, port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                admin_stub = admin_pb2_grpc.AdminServiceStub(channel)
                images = images_pb2_grpc.ImageServiceStub(channel)
                # Exactly two answers and one refusal: the usage report below counts them.
                for model in ("priced-image", "gpt-image-1"):
                    answer = await images.GenerateImages(
                        images_pb2.GenerateImagesRequest(prompt="x", model=model),
                        metadata=bearer(secret),
                    )
                    assert [image.b64_json for image in answer.data] == [upstream.image(0)]
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await images.GenerateImages(
                        images_pb2.GenerateImagesRequest(prompt="x", model="dall-e-9"),
                        metadata=bearer(secret),
                    )
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND
                tokens = await admin_stub.ListTokens(
                    admin_pb2.ListTokensRequest(), metadata=bearer(secret)
                )
                teams = await admin_stub.ListTeams(
                    admin_pb2.ListTeamsRequest(), metadata=bearer(secret)
                )
                usage = await admin_stub.QueryUsage(
                    admin_pb2.QueryUsageRequest(since="1d", by="token"), metadata=bearer(secret)
                )
        finally:
            await server.stop(0)
    listed = await asyncio.to_thread(run, "tokens", "list")
    lines = {line.split()[1]: line.split() for line in listed.splitlines()[1:]}
    by_name = {t.name: t for t in tokens.tokens}
    assert set(lines) == set(by_name) == {"boss", "worker"}
    for name, token in by_name.items():
        assert lines[name][0] == token.id
        # The team by its name (the API answers its id).
        assert lines[name][-2] == ({t.id: t.name for t in teams.teams}.get(token.team_id, "-"))
        assert lines[name][-1] == ("yes" if token.admin else "no")
    assert lines["boss"][-2] == "ops"
    assert by_name["worker"].limits.images_per_day == 3
    assert [(t.name, t.limits.requests_per_minute) for t in teams.teams] == [("ops", 7)]
    assert [(g.name, g.requests, g.images, g.failures) for g in usage.groups] == [("boss", 3, 2, 1)]
    cli_usage = json.loads(
        await asyncio.to_thread(run, "usage", "--since", "1d", "--format", "json")
    )
    assert cli_usage["groups"] == [
        {
            # What the API leaves unset (not known: no price, no success) is null in the CLI's.
            f.name: getattr(g, f.name) if not f.has_presence or g.HasField(f.name) else None
            for f in admin_pb2.UsageGroup.DESCRIPTOR.fields
        }
        for g in usage.groups
    ]
    # The CLI's set-policy changes what its flags name, as the API's PATCH does.
    out = await asyncio.to_thread(run, "tokens", "set-policy", "boss", "--images-per-day", "1")
    assert out.splitlines() == [
        f"updated {by_name['boss'].id} (boss)",
        f"  team:    ops ({by_name['boss'].team_id})",
        "  admin:   yes",
        "  limits:  images_per_day=1",
        "  budgets: none of its own (the defaults apply)",
    ]


async def test_admin_service_is_discovered_and_reflected(channel):
    # The HTTP door finds it by itself: no code in gateway_http names it.
    services = discover_services(["aqueduct"])
    assert "aqueduct.admin.v1.AdminService" in {s.full_name for s in services}
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [reply async for reply in reflection.ServerReflectionInfo(iter([request]))]
    services = {s.name for s in replies[0].list_services_response.service}
    assert "aqueduct.admin.v1.AdminService" in services


@pytest.mark.parametrize(
    "request_",
    [
        admin_pb2.CreateTeamRequest(
            name="nan", budgets=admin_pb2.Budgets(per_day_usd=float("nan"))
        ),
        admin_pb2.CreateTeamRequest(
            name="inf", budgets=admin_pb2.Budgets(per_day_usd=float("inf"))
        ),
        admin_pb2.CreateTokenRequest(name="forever", expires_in_seconds=2**62),
        admin_pb2.CreateTokenRequest(name="negative", limits=admin_pb2.Limits(images_per_day=-1)),
    ],
)
async def test_values_that_cannot_be_enforced_are_refused(admin_stub, admin, request_):
    method = (
        admin_stub.CreateTeam
        if isinstance(request_, admin_pb2.CreateTeamRequest)
        else admin_stub.CreateToken
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(request_, metadata=bearer(admin))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing half-made: the refused team or token does not exist (only the admin's token).
    teams = await admin_stub.ListTeams(admin_pb2.ListTeamsRequest(), metadata=bearer(admin))
    tokens = await admin_stub.ListTokens(admin_pb2.ListTokensRequest(), metadata=bearer(admin))
    assert [t.name for t in teams.teams] == []
    assert [t.name for t in tokens.tokens] == ["root"]


@pytest.mark.parametrize(
    "argv",
    [
        ["teams", "create", "--name", "neg", "--requests-per-minute", "-5"],
        ["teams", "create", "--name", "nan", "--budget-per-day-usd", "nan"],
        ["tokens", "create", "--name", "t", "--images-per-day", "-1"],
        ["tokens", "create", "--name", "forever", "--expires-in", "100000000w"],
    ],
)
def test_cli_refuses_values_that_would_break_the_policies(argv, tmp_path: pathlib.Path, capsys):
    data = ["--data-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as caught:
        cli.main([*argv, *data])
    assert caught.value.code not in (0, None)
    capsys.readouterr()

    def names(kind: str) -> list[str]:
        cli.main([kind, "list", *data])
        return [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]

    # Nothing half-made: the refused team or token does not exist, not even inactive.
    assert (names("teams"), names("tokens")) == ([], [])


def test_cli_refuses_an_unknown_log_level(tmp_path: pathlib.Path, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--log-level", "bogus", "usage", "--data-dir", str(tmp_path)])
    assert caught.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


async def test_a_usage_period_reaching_back_too_far_is_a_400(door, admin):
    status, body = await call(door, "GET", "/admin/v1/usage?since=100000000000000w", admin)
    assert status == 400 and body["error"]["param"] == "since"


async def test_http_patch_changes_only_what_it_sends(door, admin):
    status, team = await call(door, "POST", "/admin/v1/teams", admin, {"name": "design"})
    assert status == 200
    full = {
        "name": "dana",
        "team": "design",
        "admin": True,
        "limits": {"requests_per_minute": 10, "images_per_day": 5},
        "budgets": {"per_day_usd": 1, "per_month_usd": 100},
    }
    assert (await call(door, "POST", "/admin/v1/tokens", admin, full))[0] == 200
    path = "/admin/v1/tokens/dana/policy"

    async def patch(body: Any) -> dict[str, Any]:
        status, answer = await call(door, "PATCH", path, admin, body)
        assert status == 200, answer
        return answer["token"]  # type: ignore[no-any-return]

    # One budget set: the other budget, every limit, the team and admin scope stay.
    token = await patch({"budgets": {"per_day_usd": 5}})
    assert token["budgets"] == {"per_day_usd": 5, "per_month_usd": 100}
    assert token["limits"] == {"requests_per_minute": 10, "images_per_day": 5}
    assert (token["team_id"], token["admin"]) == (team["team"]["id"], True)
    # null clears one field, down to the leaf.
    token = await patch({"limits": {"images_per_day": None}, "budgets": {"per_month_usd": None}})
    assert token["limits"] == {"requests_per_minute": 10}
    assert token["budgets"] == {"per_day_usd": 5}
    # Team and admin scope alone; a whole part cleared with null.
    token = await patch({"team": None, "admin": False, "limits": None})
    assert ("team_id" in token, token["admin"], token["limits"]) == (False, False, {})
    assert token["budgets"] == {"per_day_usd": 5}
    token = await patch({"team": "design"})  # by name, as PUT takes it
    assert token["team_id"] == team["team"]["id"]
    # What the answer says is what is stored.
    status, listed = await call(door, "GET", "/admin/v1/tokens", admin)
    assert next(t for t in listed["tokens"] if t["name"] == "dana") == token
    # PUT still replaces the whole policy.
    status, replaced = await call(door, "PUT", path, admin, {"limits": {"images_per_day": 2}})
    assert status == 200 and replaced["token"]["limits"] == {"images_per_day": 2}
    assert "team_id" not in replaced["token"] and replaced["token"]["budgets"] == {}


async def test_http_patch_of_a_team_keeps_what_it_does_not_send(door, admin):
    body = {"name": "ops", "limits": {"images_per_day": 500}, "budgets": {"per_day_usd": 9}}
    assert (await call(door, "POST", "/admin/v1/teams", admin, body))[0] == 200
    status, answer = await call(
        door, "PATCH", "/admin/v1/teams/ops/policy", admin, {"budgets": {"per_month_usd": 50}}
    )
    assert status == 200
    assert answer["team"]["limits"] == {"images_per_day": 500}
    assert answer["team"]["budgets"] == {"per_day_usd": 9, "per_month_usd": 50}
    status, answer = await call(door, "PATCH", "/admin/v1/teams/ops/policy", admin, {"admin": True})
    assert status == 400 and answer["error"]["param"] == "admin"
    assert answer["error"]["message"] == "unknown field 'admin'"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {"budget": {"per_day_usd": 5}},
            "budget",
            "unknown field 'budget' (did you mean 'budgets'?)",
        ),
        (
            {"budgets": {"per_dy_usd": 5}},
            "budgets.per_dy_usd",
            "unknown field 'budgets.per_dy_usd' (did you mean 'per_day_usd'?)",
        ),
        (
            {"limits": {"images_per_day": 1.5}},
            "limits.images_per_day",
            "limits.images_per_day must be a whole number of 0 or more, or null",
        ),
        (
            {"budgets": {"per_day_usd": -1}},
            "budgets.per_day_usd",
            "budgets.per_day_usd must be a number of 0 or more, or null",
        ),
        (
            {"limits": {"images_per_day": "5"}},
            "limits.images_per_day",
            "limits.images_per_day must be a whole number of 0 or more, or null",
        ),
        ({"limits": 5}, "limits", "limits must be an object (or null to clear them all)"),
        ({"admin": "yes"}, "admin", "admin must be true, false or null (false)"),
        ({"team": ""}, "team", "team must be a team id or name, or null (no team)"),
        ({"team": "nope"}, "team", "no team has id or name 'nope'"),
    ],
)
async def test_http_patch_refuses_what_it_cannot_apply(door, admin, body, param, message):
    status, created = await call(
        door, "POST", "/admin/v1/tokens", admin, {"name": "erin", "limits": {"images_per_day": 3}}
    )
    assert status == 200
    status, answer = await call(door, "PATCH", "/admin/v1/tokens/erin/policy", admin, body)
    assert status in (400, 404)
    assert (answer["error"]["param"], answer["error"]["message"]) == (param, message)
    # Nothing changed.
    status, listed = await call(door, "GET", "/admin/v1/tokens", admin)
    assert next(t for t in listed["tokens"] if t["name"] == "erin") == created["token"]


async def test_grpc_patches_of_different_fields_never_undo_each_other(admin_stub, admin):
    created = await admin_stub.CreateToken(
        admin_pb2.CreateTokenRequest(name="frank"), metadata=bearer(admin)
    )

    def patch(**policy: Any) -> admin_pb2.UpdateTokenPolicyRequest:
        request = admin_pb2.UpdateTokenPolicyRequest(token=created.token.id)
        request.patch.update(policy)
        return request

    # Concurrent read-modify-writes, each of its own field: all of them land.
    fields = ["requests_per_minute", "images_per_minute", "images_per_day"]
    await asyncio.gather(
        *(
            admin_stub.UpdateTokenPolicy(patch(limits={name: n + 1}), metadata=bearer(admin))
            for n, name in enumerate(fields)
        ),
        admin_stub.UpdateTokenPolicy(patch(budgets={"per_day_usd": 4}), metadata=bearer(admin)),
        admin_stub.UpdateTokenPolicy(patch(admin=True), metadata=bearer(admin)),
    )
    listed = await admin_stub.ListTokens(admin_pb2.ListTokensRequest(), metadata=bearer(admin))
    token = next(t for t in listed.tokens if t.name == "frank")
    assert (token.limits.requests_per_minute, token.limits.images_per_minute) == (1, 2)
    assert (token.limits.images_per_day, token.budgets.per_day_usd, token.admin) == (3, 4, True)
    # null (a Struct's null_value) clears over gRPC too.
    answer = await admin_stub.UpdateTokenPolicy(
        patch(limits={"images_per_day": None}), metadata=bearer(admin)
    )
    assert not answer.token.limits.HasField("images_per_day")
    assert answer.token.limits.requests_per_minute == 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin_stub.UpdateTokenPolicy(patch(limitz={}), metadata=bearer(admin))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(refused.value).metadata["param"] == "limitz"


async def test_token_names_are_unique_over_the_admin_api(door, admin):
    status, first = await call(door, "POST", "/admin/v1/tokens", admin, {"name": "gina"})
    assert status == 200
    status, answer = await call(door, "POST", "/admin/v1/tokens", admin, {"name": "gina"})
    assert status == 409 and answer["error"]["code"] == "token_exists"
    assert answer["error"]["param"] == "name"
    assert first["token"]["id"] in answer["error"]["message"]
