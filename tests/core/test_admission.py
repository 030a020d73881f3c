"""Limits and budgets on the real core, through both doors, counted at the fake upstream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.util import await_only

from aqueduct.admin.v1 import admin_pb2, admin_pb2_grpc
from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.accounting.policy import Budgets, Limits, TokenPolicy
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.usage_record import UsageRecord
from aqueduct_grpc.auth.tokens import TokenStore
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.server import Core, open_core, start_grpc_server
from aqueduct_grpc.storage.database import open_engine, usage_table
from aqueduct_grpc.testing.fake_upstream import FakeUpstream
from tests.accounting import (
    HD_PRICE,
    IMAGE_PRICE,
    INPUT_TOKEN_PRICE,
    OUTPUT_TOKEN_PRICE,
    grpc_generate,
    priced_config,
    token_with,
)
from tests.conftest import bearer
from tests.grpc_errors import details_of


@pytest.fixture
def config(upstream: FakeUpstream) -> GatewayConfig:
    return priced_config(upstream)


@pytest.fixture
def door(http_door: str) -> str:
    """The HTTP door of conftest (the real app in front of the real core)."""
    return http_door


async def http_generate(
    door: str, secret: str, **body: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One POST through the HTTP door: (status, JSON body, headers)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{door}/v1/images/generations",
            json={"prompt": "x", "model": "gpt-image-1", **body},
            headers={"Authorization": f"Bearer {secret}"},
        ) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


async def test_fifty_concurrent_over_http_give_exactly_the_limit(gateway, door, upstream):
    secret = await token_with(gateway, "http", limits=Limits(requests_per_minute=10))
    results = await asyncio.gather(*(http_generate(door, secret) for _ in range(50)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 10 + [429] * 40
    assert upstream.request_count == 10  # refusals never reached the upstream
    refused = [(body, headers) for status, body, headers in results if status == 429]
    for body, headers in refused:
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["code"] == "token_requests_per_minute_exceeded"
        assert 1 <= int(headers["Retry-After"]) <= 60


async def test_fifty_concurrent_over_grpc_give_exactly_the_limit(gateway, stub, upstream):
    secret = await token_with(gateway, "grpc", limits=Limits(requests_per_minute=10))
    codes = await asyncio.gather(*(grpc_generate(stub, secret) for _ in range(50)))
    assert codes.count(grpc.StatusCode.OK) == 10
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 40
    assert upstream.request_count == 10


async def test_both_doors_share_one_limit(gateway, stub, door, upstream):
    secret = await token_with(gateway, "both", limits=Limits(requests_per_minute=10))
    over_http = [http_generate(door, secret) for _ in range(25)]
    over_grpc = [grpc_generate(stub, secret) for _ in range(25)]
    results = await asyncio.gather(*over_http, *over_grpc)
    http_ok = sum(1 for result in results[:25] if result[0] == 200)  # type: ignore[index]
    grpc_ok = results[25:].count(grpc.StatusCode.OK)
    assert http_ok + grpc_ok == 10
    assert upstream.request_count == 10


async def test_refusal_carries_retry_info_on_grpc(gateway, stub):
    secret = await token_with(gateway, "retry", limits=Limits(images_per_day=3))
    await stub.GenerateImages(
        images_pb2.GenerateImagesRequest(prompt="x", model="gpt-image-1", n=3),
        metadata=bearer(secret),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(prompt="x", model="gpt-image-1"),
            metadata=bearer(secret),
        )
    found = details_of(caught.value)
    assert found.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert found.reason == "TOKEN_IMAGES_PER_DAY_EXCEEDED"
    # The day window started with the first request: retry in (almost) a day.
    assert found.retry_seconds is not None and 86_000 < found.retry_seconds <= 86_400


async def test_retry_after_header_matches_the_window(gateway, door):
    secret = await token_with(gateway, "minute", limits=Limits(images_per_minute=2))
    assert (await http_generate(door, secret, n=2))[0] == 200
    status, body, headers = await http_generate(door, secret)
    assert status == 429 and body["error"]["code"] == "token_images_per_minute_exceeded"
    assert 50 <= int(headers["Retry-After"]) <= 60


async def test_images_count_n_and_a_refused_request_charges_nothing(gateway, stub, upstream):
    secret = await token_with(gateway, "images", limits=Limits(images_per_minute=5))
    assert await grpc_generate(stub, secret, n=3) == grpc.StatusCode.OK
    # 3 + 3 > 5: refused, and it must not use up the remaining 2.
    assert await grpc_generate(stub, secret, n=3) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await grpc_generate(stub, secret, n=2) == grpc.StatusCode.OK
    assert await grpc_generate(stub, secret, n=1) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert upstream.request_count == 2


async def test_team_limit_covers_the_sum_over_its_tokens(gateway, stub, door, upstream):
    team = await gateway.policies.create_team("design", limits=Limits(requests_per_minute=3))
    alice = await token_with(gateway, "alice", team_id=team.id)
    bob = await token_with(gateway, "bob", team_id=team.id)
    outsider = await token_with(gateway, "outsider")
    assert await grpc_generate(stub, alice) == grpc.StatusCode.OK
    assert await grpc_generate(stub, bob) == grpc.StatusCode.OK
    assert (await http_generate(door, alice))[0] == 200
    status, body, _ = await http_generate(door, bob)
    assert status == 429 and body["error"]["code"] == "team_requests_per_minute_exceeded"
    assert "team" in body["error"]["message"]
    assert await grpc_generate(stub, outsider) == grpc.StatusCode.OK
    assert upstream.request_count == 4


async def test_team_limit_is_exact_under_concurrency(gateway, stub, upstream):
    team = await gateway.policies.create_team("burst", limits=Limits(images_per_minute=12))
    secrets = [await token_with(gateway, f"member-{i}", team_id=team.id) for i in range(5)]
    codes = await asyncio.gather(*(grpc_generate(stub, s, n=2) for s in secrets * 6))
    assert codes.count(grpc.StatusCode.OK) == 6  # 6 x 2 images = 12
    assert upstream.request_count == 6


@pytest.mark.parametrize(
    ("model", "allowed"), [("roomy-image", 8), ("gpt-image-1", 4), ("tight-image", 2)]
)
async def test_a_models_limit_multiplier_gives_it_that_many_times_the_limits(
    gateway, stub, upstream, model, allowed
):
    # Aqueduct's request_limit_multiplier: 2 → twice the requests, 0.5 → half.
    secret = await token_with(gateway, "weighted", limits=Limits(requests_per_minute=4))
    codes = [await grpc_generate(stub, secret, model=model) for _ in range(allowed + 2)]
    assert codes == [grpc.StatusCode.OK] * allowed + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert upstream.request_count == allowed


async def test_models_with_different_multipliers_share_the_tokens_limits(gateway, stub, upstream):
    secret = await token_with(gateway, "mixed", limits=Limits(requests_per_minute=2))
    # 0.5 + 0.5 + 1 = 2: full; another roomy request (0.5) no longer fits.
    for model in ("roomy-image", "roomy-image", "gpt-image-1"):
        assert await grpc_generate(stub, secret, model=model) == grpc.StatusCode.OK
    assert await grpc_generate(stub, secret, model="roomy-image") == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


async def test_the_multiplier_applies_to_image_limits_too(gateway, stub, upstream):
    secret = await token_with(gateway, "images", limits=Limits(images_per_minute=2))
    # n=4 on a model with twice the limits counts 2: it fits; n=5 (2.5) never can.
    assert await grpc_generate(stub, secret, model="roomy-image", n=4) == grpc.StatusCode.OK
    other = await token_with(gateway, "images-2", limits=Limits(images_per_minute=2))
    assert await grpc_generate(stub, other, model="roomy-image", n=5) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert await grpc_generate(stub, other, model="tight-image", n=1) == grpc.StatusCode.OK
    assert await grpc_generate(stub, other, model="tight-image", n=1) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


async def test_config_defaults_apply_and_token_overrides_win(upstream, database_url):
    config = priced_config(upstream, limits={"requests_per_minute": 1})
    async with open_core(config, database_url=database_url) as gateway:
        server = await start_grpc_server(gateway, port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = images_pb2_grpc.ImageServiceStub(channel)
                plain = await token_with(gateway, "plain")
                roomy = await token_with(gateway, "roomy", limits=Limits(requests_per_minute=3))
                plain_codes = [await grpc_generate(stub, plain) for _ in range(2)]
                roomy_codes = [await grpc_generate(stub, roomy) for _ in range(4)]
        finally:
            await server.stop(0)
    ok, refused = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
    assert plain_codes == [ok, refused]
    assert roomy_codes == [ok, ok, ok, refused]


async def rows(gateway: Core) -> list[Any]:
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        return list(await connection.execute(sa.select(usage_table).order_by(usage_table.c.id)))


async def test_cost_is_recorded_never_guessed_never_free(gateway, stub, upstream):
    secret = await token_with(gateway, "costs")
    await grpc_generate(stub, secret, model="priced-image", n=2, size="1024x1024", quality="hd")
    await grpc_generate(stub, secret, model="gpt-image-1", n=1)
    # A size the table does not list: its highest price, never free.
    await grpc_generate(stub, secret, model="priced-image", size="512x512")
    await grpc_generate(stub, secret, model="roomy-image")  # no prices at all
    recorded = await rows(gateway)
    sent = upstream.requests[1].reply_json["usage"]
    expected_tokens = (
        sent["input_tokens"] * INPUT_TOKEN_PRICE + sent["output_tokens"] * OUTPUT_TOKEN_PRICE
    )
    assert [r.model for r in recorded] == [
        "priced-image",
        "gpt-image-1",
        "priced-image",
        "roomy-image",
    ]
    assert recorded[0].cost == pytest.approx(2 * HD_PRICE)
    assert recorded[1].cost == pytest.approx(expected_tokens)
    assert recorded[2].cost == pytest.approx(HD_PRICE)
    assert recorded[3].cost is None  # a model with no prices: no cost rather than a guess


async def test_daily_budget_refuses_before_the_upstream(gateway, door, upstream):
    secret = await token_with(gateway, "thrifty", budgets=Budgets(per_day_usd=0.10))
    body = {"model": "priced-image", "size": "1024x1024", "quality": "standard"}
    assert (await http_generate(door, secret, **body))[0] == 200
    assert (await http_generate(door, secret, **body))[0] == 200
    # 0.08 spent; a third image would make 0.12 > 0.10.
    status, answer, headers = await http_generate(door, secret, **body)
    assert status == 429 and answer["error"]["code"] == "insufficient_quota"
    assert int(headers["Retry-After"]) <= 86_400
    assert upstream.request_count == 2
    await gateway.usage.flush()
    assert await gateway.ledger.spent("token", (await gateway.tokens.list())[-1].id, "day") == (
        pytest.approx(2 * IMAGE_PRICE)
    )


async def test_budget_is_exact_under_concurrency(gateway, stub, upstream):
    secret = await token_with(gateway, "burst-budget", budgets=Budgets(per_month_usd=0.2))
    codes = await asyncio.gather(
        *(
            grpc_generate(stub, secret, model="priced-image", size="1024x1024", quality="standard")
            for _ in range(20)
        )
    )
    assert codes.count(grpc.StatusCode.OK) == 5  # 5 x 0.04 = 0.20
    assert upstream.request_count == 5


async def test_token_priced_budget_refuses_once_spent(gateway, stub, upstream):
    secret = await token_with(gateway, "tokens-budget", budgets=Budgets(per_day_usd=0.001))
    # The cost of a token-priced request is known only afterwards: the first goes through.
    assert await grpc_generate(stub, secret) == grpc.StatusCode.OK
    assert await grpc_generate(stub, secret) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert upstream.request_count == 1


async def test_team_budget_and_refusals_are_recorded(gateway, stub, upstream):
    team = await gateway.policies.create_team("paying", budgets=Budgets(per_day_usd=0.05))
    first = await token_with(gateway, "first", team_id=team.id)
    second = await token_with(gateway, "second", team_id=team.id)
    priced = {"model": "priced-image", "size": "1024x1024", "quality": "standard"}
    assert await grpc_generate(stub, first, **priced) == grpc.StatusCode.OK
    assert await grpc_generate(stub, second, **priced) == grpc.StatusCode.RESOURCE_EXHAUSTED
    recorded = await rows(gateway)
    assert [(r.status, r.error_reason, r.team_id) for r in recorded] == [
        ("OK", None, team.id),
        ("RESOURCE_EXHAUSTED", "INSUFFICIENT_QUOTA", team.id),
    ]
    assert recorded[1].cost == 0.0 and upstream.request_count == 1


async def test_spending_survives_a_restart(config, upstream, database_url):
    async with open_core(config, database_url=database_url) as gateway:
        token, _ = await gateway.tokens.create("durable")
        row = UsageRecord(
            created_at=time.time(),
            token_id=token.id,
            requested_model="priced-image",
            model="priced-image",
            images=1,
            size="1024x1024",
            quality="standard",
        )
        gateway.ledger.charge(row)  # as the handler does for a finished request
        await gateway.usage.commit(row)
    async with open_core(config, database_url=database_url) as reopened:
        assert await reopened.ledger.spent("token", token.id, "month") == pytest.approx(IMAGE_PRICE)


async def test_sdk_sees_rate_limit_error(gateway, door):
    secret = await token_with(gateway, "sdk", limits=Limits(requests_per_minute=1))
    async with openai.AsyncOpenAI(base_url=f"{door}/v1", api_key=secret, max_retries=0) as sdk:
        await sdk.images.generate(model="gpt-image-1", prompt="x")
        with pytest.raises(openai.RateLimitError) as caught:
            await sdk.images.generate(model="gpt-image-1", prompt="x")
    assert caught.value.code == "token_requests_per_minute_exceeded"
    assert caught.value.response.headers["Retry-After"].isdigit()


async def test_streams_are_limited_like_unary_calls(stub, gateway: Core, door: str):
    secret = await token_with(gateway, "streamer", limits=Limits(requests_per_minute=2))
    request = images_pb2.StreamGenerateImagesRequest(
        request=images_pb2.GenerateImagesRequest(model="demo", prompt="x", size="256x256")
    )
    for _ in range(2):
        events = [e async for e in stub.StreamGenerateImages(request, metadata=bearer(secret))]
        assert events[-1].type == "image_generation.completed"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [e async for e in stub.StreamGenerateImages(request, metadata=bearer(secret))]
    found = details_of(caught.value)
    assert found.code == grpc.StatusCode.RESOURCE_EXHAUSTED and found.retry_seconds
    # The HTTP door's stream=true is the same twin, refused before any event.
    status, body, headers = await http_generate(
        door, secret, model="demo", size="256x256", stream=True
    )
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert int(headers["Retry-After"]) >= 1


async def test_a_failing_limit_storage_does_not_keep_the_budget_held(
    gateway: Core, stub, upstream, monkeypatch
):
    # Stands in for a shared storage (Redis) that errors: the one part that
    # cannot run here. Everything else is the real core.
    secret = await token_with(gateway, "held", budgets=Budgets(per_day_usd=IMAGE_PRICE * 2))
    priced = {"model": "priced-image", "size": "1024x1024", "quality": "standard", "n": 2}
    real_acquire = gateway.limiter.acquire

    async def broken(charges: Any) -> Any:
        raise ConnectionError("limit storage unreachable")

    monkeypatch.setattr(gateway.limiter, "acquire", broken)
    request = images_pb2.GenerateImagesRequest(prompt="x", **priced)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(request, metadata=bearer(secret))
    # A plain INTERNAL: the storage's exception text stays in the log.
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "unreachable" not in (caught.value.details() or "")
    monkeypatch.setattr(gateway.limiter, "acquire", real_acquire)
    # Had the failed call left its hold, this one would be over budget.
    assert await grpc_generate(stub, secret, **priced) == grpc.StatusCode.OK
    assert upstream.request_count == 1


async def test_a_request_larger_than_the_limit_itself_is_a_400_not_a_429(
    gateway: Core, stub, door, upstream
):
    secret = await token_with(gateway, "small", limits=Limits(images_per_minute=5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GenerateImages(
            images_pb2.GenerateImagesRequest(prompt="x", model="gpt-image-1", n=6),
            metadata=bearer(secret),
        )
    found = details_of(caught.value)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT and found.metadata["param"] == "n"
    assert found.retry_seconds is None
    status, body, headers = await http_generate(door, secret, n=6)
    assert status == 400 and "Retry-After" not in headers
    assert "can never be admitted" in body["error"]["message"]
    assert upstream.request_count == 0
    # What fits is still admitted: the refusals charged nothing.
    assert await grpc_generate(stub, secret, n=5) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        ({"model": "no-such-model"}, grpc.StatusCode.NOT_FOUND),
        ({"n": 0}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"prompt": " "}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"response_format": "gif"}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_requests_refused_before_admission_are_not_charged(
    stub, gateway: Core, upstream, bad, status
):
    # Admission runs after resolution and validation: a 404 or 400 costs nothing.
    secret = await token_with(
        gateway, "careless", limits=Limits(requests_per_minute=1, images_per_minute=1)
    )
    for _ in range(3):
        assert await grpc_generate(stub, secret, **bad) == status
    assert await grpc_generate(stub, secret) == grpc.StatusCode.OK
    assert await grpc_generate(stub, secret) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert upstream.request_count == 1


async def test_a_refused_request_releases_its_budget_hold(stub, gateway: Core, upstream):
    # The budget fits exactly two priced images. The second request holds the
    # second image's price, then the rate limit refuses it: it must give the
    # hold back, or the third request (once the limit is lifted) would find
    # the budget spent.
    fields = {"model": "priced-image", "size": "1024x1024", "quality": "standard"}
    budgets = Budgets(per_day_usd=IMAGE_PRICE * 2)
    secret = await token_with(
        gateway, "held", limits=Limits(requests_per_minute=1), budgets=budgets
    )
    assert await grpc_generate(stub, secret, **fields) == grpc.StatusCode.OK
    assert await grpc_generate(stub, secret, **fields) == grpc.StatusCode.RESOURCE_EXHAUSTED
    token = next(t for t in await gateway.tokens.list() if t.name == "held")
    await gateway.policies.set_token_policy(TokenPolicy(token_id=token.id, budgets=budgets))
    assert await grpc_generate(stub, secret, **fields) == grpc.StatusCode.OK
    await gateway.usage.flush()
    assert await gateway.ledger.spent("token", token.id, "day") == pytest.approx(IMAGE_PRICE * 2)
    assert upstream.request_count == 2


async def test_images_by_url_cannot_overspend_the_budget(stub, gateway: Core, upstream):
    # Storing the images for their URLs takes time after the upstream answered:
    # the budget hold must last until the cost is charged, or concurrent
    # requests slip through the gap (8 of 20 were admitted against room for 5).
    budget = IMAGE_PRICE * 5
    secret = await token_with(gateway, "urls", budgets=Budgets(per_month_usd=budget))
    fields = {
        "model": "priced-image",
        "size": "1024x1024",
        "quality": "standard",
        "response_format": "url",
    }
    metadata = [*bearer(secret), ("host", "gw.example")]

    async def one() -> grpc.StatusCode:
        request = images_pb2.GenerateImagesRequest(prompt="x", **fields)
        try:
            await stub.GenerateImages(request, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(one() for _ in range(20)))
    assert codes.count(grpc.StatusCode.OK) == 5
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 15
    token = next(t for t in await gateway.tokens.list() if t.name == "urls")
    await gateway.usage.flush()
    assert await gateway.ledger.spent("token", token.id, "month") == pytest.approx(budget)


@contextlib.asynccontextmanager
async def long_cached_core(config: GatewayConfig, database_url: str) -> AsyncIterator[Any]:
    """A core whose policy snapshot would be reused for an hour, and a stub on it."""
    cached = dataclasses.replace(config, token_cache_seconds=3600.0)
    async with open_core(cached, database_url=database_url) as gateway:
        server = await start_grpc_server(gateway, port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield gateway, channel
        finally:
            await server.stop(0)


async def created_elsewhere(database_url: str, policy: TokenPolicy) -> tuple[str, str]:
    """A token made with its policy by another process's stores (as the CLI does): id, secret."""
    engine = await open_engine(database_url)
    try:
        # A name of its own each time: token names are unique.
        token, secret = await TokenStore(engine).create(f"from-the-cli-{secrets.token_hex(4)}")
        await PolicyStore(engine).set_token_policy(dataclasses.replace(policy, token_id=token.id))
    finally:
        await engine.dispose()
    return token.id, secret


async def test_a_token_created_by_another_process_has_its_policy_at_once(
    config, upstream, database_url
):
    async with long_cached_core(config, database_url) as (gateway, channel):
        stub = images_pb2_grpc.ImageServiceStub(channel)
        first = await token_with(gateway, "first")
        assert await grpc_generate(stub, first) == grpc.StatusCode.OK  # the snapshot is loaded
        limited = TokenPolicy(token_id="", limits=Limits(requests_per_minute=5))
        _, secret = await created_elsewhere(database_url, limited)
        codes = await asyncio.gather(*(grpc_generate(stub, secret) for _ in range(50)))
        assert codes.count(grpc.StatusCode.OK) == 5
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 45
        assert upstream.request_count == 1 + 5


async def test_an_admin_token_created_by_another_process_is_admitted_at_once(
    config, upstream, database_url
):
    async with long_cached_core(config, database_url) as (gateway, channel):
        admin_stub = admin_pb2_grpc.AdminServiceStub(channel)
        before = await token_with(gateway, "root", admin=True)
        await admin_stub.ListTeams(admin_pb2.ListTeamsRequest(), metadata=bearer(before))
        _, secret = await created_elsewhere(database_url, TokenPolicy(token_id="", admin=True))
        listed = await admin_stub.ListTeams(admin_pb2.ListTeamsRequest(), metadata=bearer(secret))
        assert list(listed.teams) == []


async def test_new_tokens_share_one_reload_and_tokens_without_a_policy_keep_the_defaults(
    database_url,
):
    engine = await open_engine(database_url)
    try:
        store = PolicyStore(engine, cache_seconds=3600.0)
        plain, _ = await TokenStore(engine).create("no-policy-row")
        assert (await store.snapshot(knowing=[plain.id])).token(plain.id) == TokenPolicy(plain.id)
        loads = count_policy_loads(engine)
        # Known without a row: the defaults, with no reload.
        assert (await store.snapshot(knowing=[plain.id])).token(plain.id) == TokenPolicy(plain.id)
        assert loads == []
        new, _ = await created_elsewhere(database_url, TokenPolicy("", admin=True))
        snapshots = await asyncio.gather(*(store.snapshot(knowing=[new]) for _ in range(50)))
        assert all(s.token(new).admin for s in snapshots)
        assert len(loads) == 1
        assert store.latest.token(new).admin  # kept for the bookkeeping after a request
    finally:
        await engine.dispose()


def count_policy_loads(engine: Any) -> list[str]:
    """The policy loads run on `engine` from now on (each reads the token_policies table)."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM token_policies" in statement:
            seen.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_a_reload_already_running_before_a_token_existed_is_not_its_answer(database_url):
    engine = await open_engine(database_url)
    try:
        store = PolicyStore(engine, cache_seconds=3600.0)
        await store.snapshot()
        # The reload for token x is held once it has read everything (the
        # listener runs in SQLAlchemy's greenlet, so it can await); token y is
        # made meanwhile, so that reload cannot know it.
        read_ids, release = asyncio.Event(), asyncio.Event()

        def hold(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "FROM token_policies" in statement and not read_ids.is_set():
                read_ids.set()
                await_only(release.wait())

        sa.event.listen(engine.sync_engine, "after_cursor_execute", hold)
        x, _ = await created_elsewhere(database_url, TokenPolicy("", admin=True))
        for_x = asyncio.ensure_future(store.snapshot(knowing=[x]))
        async with asyncio.timeout(30):
            await read_ids.wait()
        y, _ = await created_elsewhere(database_url, TokenPolicy("", admin=True))
        for_y = asyncio.ensure_future(store.snapshot(knowing=[y]))
        await asyncio.sleep(0)  # for_y now waits for the reload that began before y
        release.set()
        assert (await for_x).token(x).admin
        assert (await for_y).token(y).admin
    finally:
        release.set()
        await engine.dispose()
