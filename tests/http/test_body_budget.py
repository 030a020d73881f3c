"""The door's budget of large request bodies in flight: units, and through a real door.

Through the door, the gRPC side holds each call until the test opens its gate,
so what is held and what waits is exactly observable, with no timing involved.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from gateway_http import create_app
from gateway_http.app import TRANSCODER
from gateway_http.body_budget import SMALL_BODY_BYTES, BodyBudget
from tests.http import test_testproto as tp
from tests.http.test_multipart import FORM_TYPE, form, text, upload

LARGE = SMALL_BODY_BYTES + 1


async def until(condition: Callable[[], bool]) -> None:
    """Yields to the loop until `condition` holds (the test's own timeout bounds it)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the state is the code under test's own
            await asyncio.sleep(0.005)


# ------------------------------------------------------------------------ units


async def test_claims_are_granted_in_arrival_order_within_the_limit() -> None:
    budget = BodyBudget(limit=3 * LARGE)
    order: list[str] = []
    gate = asyncio.Event()

    async def hold(name: str, size: int) -> None:
        async with budget.holding(size, max_body_bytes=10 * LARGE):
            order.append(name)
            await gate.wait()

    first = asyncio.create_task(hold("a", 2 * LARGE))
    await until(lambda: order == ["a"])
    # b does not fit; c would, but comes after b: it waits its turn.
    second = asyncio.create_task(hold("b", 2 * LARGE))
    third = asyncio.create_task(hold("c", LARGE))
    await until(lambda: budget.waiting == 2)
    assert order == ["a"] and budget.held_bytes == 2 * LARGE
    gate.set()
    await asyncio.gather(first, second, third)
    assert order == ["a", "b", "c"] and budget.held_bytes == 0


async def test_small_bodies_never_wait() -> None:
    budget = BodyBudget(limit=LARGE)
    async with budget.holding(LARGE, max_body_bytes=LARGE):
        waiter = asyncio.create_task(_enter(budget, LARGE))
        await until(lambda: budget.waiting == 1)
        async with budget.holding(SMALL_BODY_BYTES, max_body_bytes=LARGE):
            assert budget.held_bytes == LARGE  # not counted
        async with budget.holding(0, max_body_bytes=LARGE):
            pass
    await waiter


async def test_a_body_larger_than_the_budget_runs_alone() -> None:
    budget = BodyBudget(limit=2 * LARGE)
    async with budget.holding(5 * LARGE, max_body_bytes=10 * LARGE):
        assert budget.held_bytes == 2 * LARGE
        other = asyncio.create_task(_enter(budget, LARGE))
        await until(lambda: budget.waiting == 1)
    await other
    assert budget.held_bytes == 0


async def test_an_unknown_length_claims_the_body_limit() -> None:
    budget = BodyBudget(limit=4 * LARGE)
    async with budget.holding(None, max_body_bytes=3 * LARGE):
        assert budget.held_bytes == 3 * LARGE


async def test_a_waiter_that_goes_away_lets_the_next_one_in() -> None:
    budget = BodyBudget(limit=2 * LARGE)
    async with budget.holding(LARGE, max_body_bytes=10 * LARGE):
        big = asyncio.create_task(_enter(budget, 2 * LARGE))  # waits for everything
        await until(lambda: budget.waiting == 1)
        small = asyncio.create_task(_enter(budget, LARGE))  # fits, but queued behind big
        await until(lambda: budget.waiting == 2)
        big.cancel()
        async with asyncio.timeout(10):
            await small  # let in as soon as big left the queue
        assert budget.waiting == 0
    with pytest.raises(asyncio.CancelledError):
        await big
    assert budget.held_bytes == 0


@given(st.lists(st.integers(min_value=0, max_value=8 * LARGE), min_size=1, max_size=12))
def test_what_is_held_never_exceeds_the_budget(sizes: list[int]) -> None:
    async def scenario() -> None:
        budget = BodyBudget(limit=3 * LARGE)
        peak = 0

        async def hold(size: int) -> None:
            nonlocal peak
            async with budget.holding(size, max_body_bytes=8 * LARGE):
                peak = max(peak, budget.held_bytes)
                await asyncio.sleep(0)

        await asyncio.gather(*(hold(size) for size in sizes))
        assert peak <= budget.limit and budget.held_bytes == 0 and budget.waiting == 0

    asyncio.run(scenario())


async def _enter(budget: BodyBudget, size: int) -> None:
    async with budget.holding(size, max_body_bytes=10 * LARGE):
        pass


# ------------------------------------------------------------- through the door


@pytest.fixture
async def gated_core() -> AsyncIterator[tuple[int, list[Any], asyncio.Event]]:
    """A FormService that records each call and answers only once the gate opens."""
    seen: list[Any] = []
    gate = asyncio.Event()

    def make(method: MethodDescriptor) -> grpc.RpcMethodHandler:
        request_class = message_factory.GetMessageClass(method.input_type)

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            seen.append(request)
            await gate.wait()
            return tp.EchoResponse()

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=request_class.FromString,
            response_serializer=tp.EchoResponse.SerializeToString,
        )

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                tp.FORM_SERVICE.full_name, {m.name: make(m) for m in tp.FORM_SERVICE.methods}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, seen, gate
    await server.stop(None)


async def test_uploads_past_the_budget_wait_before_their_body_is_read(
    gated_core: tuple[int, list[Any], asyncio.Event], aiohttp_client: Any
) -> None:
    port, seen, gate = gated_core
    app: web.Application = create_app(
        grpc_target=f"127.0.0.1:{port}",
        services=[tp.FORM_SERVICE],
        max_body_bytes=4 * LARGE,
        max_body_bytes_in_flight=3 * LARGE,
    )
    client: TestClient[Any, Any] = await aiohttp_client(app)
    budget = app[TRANSCODER].bodies
    body = form(upload("file", b"\x89PNG" + bytes(2 * LARGE)))
    headers = {"Content-Type": FORM_TYPE}
    first = asyncio.create_task(client.post("/forms/v1/a", data=body, headers=headers))
    await until(lambda: len(seen) == 1)
    second = asyncio.create_task(client.post("/forms/v1/b", data=body, headers=headers))
    await until(lambda: budget.waiting == 1)
    # A small request is not held up by the waiting upload.
    small = asyncio.create_task(
        client.post("/forms/v1/c", data=form(text("tags", "x")), headers=headers)
    )
    await until(lambda: len(seen) == 2)
    assert [request.name for request in seen] == ["a", "c"]
    gate.set()
    responses = await asyncio.gather(first, second, small)
    assert [response.status for response in responses] == [200, 200, 200]
    assert sorted(request.name for request in seen) == ["a", "b", "c"]
    assert budget.held_bytes == 0


def door_for(port: int, **options: Any) -> web.Application:
    return create_app(
        grpc_target=f"127.0.0.1:{port}",
        services=[tp.FORM_SERVICE],
        max_body_bytes=4 * LARGE,
        max_body_bytes_in_flight=3 * LARGE,
        **options,
    )


async def test_an_upload_that_waits_too_long_is_a_503_to_retry(
    gated_core: tuple[int, list[Any], asyncio.Event], aiohttp_client: Any
) -> None:
    port, seen, gate = gated_core
    client: TestClient[Any, Any] = await aiohttp_client(door_for(port, body_wait_seconds=0.2))
    body = form(upload("file", b"\x89PNG" + bytes(2 * LARGE)))
    headers = {"Content-Type": FORM_TYPE}
    first = asyncio.create_task(client.post("/forms/v1/a", data=body, headers=headers))
    await until(lambda: len(seen) == 1)
    refused = await client.post("/forms/v1/b", data=body, headers=headers)
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert "retry" in (await refused.json())["error"]["message"]
    # Certain refusals do not wait their turn at all.
    too_large = await client.post(
        "/forms/v1/c", data=io.BytesIO(form(upload("file", bytes(5 * LARGE)))), headers=headers
    )
    assert too_large.status == 413
    gate.set()
    assert (await first).status == 200
    assert [request.name for request in seen] == ["a"]


async def test_a_body_that_trickles_in_loses_its_place(
    gated_core: tuple[int, list[Any], asyncio.Event], aiohttp_client: Any
) -> None:
    port, seen, gate = gated_core
    gate.set()
    app = door_for(port, body_read_seconds=0.3)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    body = form(upload("file", b"\x89PNG" + bytes(2 * LARGE)))

    async def trickle() -> AsyncIterator[bytes]:
        yield body[:1000]
        await asyncio.sleep(30)  # far past the read limit: the door gives up first
        yield body[1000:]

    headers = {"Content-Type": FORM_TYPE, "Content-Length": str(len(body))}
    slow = await client.post("/forms/v1/slow", data=trickle(), headers=headers)
    assert slow.status == 408
    assert app[TRANSCODER].bodies.held_bytes == 0
    fast = await client.post("/forms/v1/fast", data=body, headers={"Content-Type": FORM_TYPE})
    assert fast.status == 200
    assert [request.name for request in seen] == ["fast"]
