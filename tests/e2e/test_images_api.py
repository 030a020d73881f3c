"""The Images API as today's SDK sees it: model retrieval, today's parameters, streaming for all."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import grpc
import openai
import pytest
import sqlalchemy as sa

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.server import Core, open_core
from aqueduct_grpc.storage.database import usage_table
from aqueduct_grpc.testing.fake_upstream import FakeUpstream
from tests.conftest import bearer

COMPLETED = "image_generation.completed"
PARTIAL = "image_generation.partial_image"


def error_of(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = caught.value.response.json()
    assert set(body) == {"error"}
    return body["error"]


async def usage_rows(gateway: Core) -> list[Any]:
    await gateway.usage.flush()
    async with gateway.engine.connect() as connection:
        return (await connection.execute(sa.select(usage_table).order_by(usage_table.c.id))).all()


# -- models.retrieve ---------------------------------------------------------------------------


async def test_sdk_retrieves_a_model_by_name_or_alias(client, gateway: Core):
    listed = {m.id: m for m in (await client.models.list()).data}
    model = await client.models.retrieve("gpt-image-1")
    assert model.model_dump() == listed["gpt-image-1"].model_dump()
    assert (model.object, model.owned_by) == ("model", "openai")
    assert (await client.models.retrieve("house-image")).id == "gpt-image-1"  # an alias


async def test_unknown_and_forbidden_models_are_the_same_404(client, gateway: Core, http_door):
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.models.retrieve("no-such-model")
    _, narrow = await gateway.tokens.create("narrow", models=["demo"])
    async with openai.AsyncOpenAI(base_url=f"{http_door}/v1", api_key=narrow) as sdk:
        assert (await sdk.models.retrieve("demo")).id == "aqueduct-demo"
        with pytest.raises(openai.NotFoundError) as forbidden:
            await sdk.models.retrieve("gpt-image-1")
    for caught, name in ((unknown, "no-such-model"), (forbidden, "gpt-image-1")):
        error = error_of(caught)
        assert (error["code"], error["param"]) == ("model_not_found", "model")
        assert error["message"] == (
            f"The model '{name}' does not exist or you do not have access to it."
        )


async def test_grpc_get_model(stub, secret):
    answer = await stub.GetModel(images_pb2.GetModelRequest(model="demo"), metadata=bearer(secret))
    assert (answer.model.id, answer.model.object) == ("aqueduct-demo", "model")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetModel(images_pb2.GetModelRequest(model=""), metadata=bearer(secret))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_created_is_kept_across_restarts(config: GatewayConfig, database_url: str):
    configured = dataclasses.replace(config.models[0], created=1_700_000_000)
    config = dataclasses.replace(config, models=(configured, *config.models[1:]))
    async with open_core(config, database_url=database_url) as first:
        token, _ = await first.tokens.create("reader")
        before = {m.name: m.created for m in first.catalog.visible(token)}
    async with open_core(config, database_url=database_url) as second:
        after = {m.name: m.created for m in second.catalog.visible(token)}
    assert before == after and all(after.values())
    assert after[configured.name] == 1_700_000_000


# -- today's parameters ------------------------------------------------------------------------


async def test_todays_sdk_parameters_reach_the_upstream_and_its_answer_comes_back(
    client, upstream: FakeUpstream
):
    answer = await client.images.generate(
        model="gpt-image-1",
        prompt="a lighthouse",
        complexity="high",
        frame_count=4,
        frame_duration_ms=120,
        output_format="gif",
        quality="xhigh",
        svg={"model": "svg-drawer", "reasoning": {"effort": "low"}},
        safety_identifier="user-7",
    )
    sent = upstream.requests[0].json
    assert {k: sent[k] for k in ("complexity", "frame_count", "frame_duration_ms")} == {
        "complexity": "high",
        "frame_count": 4,
        "frame_duration_ms": 120,
    }
    assert (sent["output_format"], sent["quality"]) == ("gif", "xhigh")
    assert sent["svg"] == {"model": "svg-drawer", "reasoning": {"effort": "low"}}
    # Response fields the contract used to drop.
    assert answer.safety_identifier == "user-7"
    assert answer.svg_usage is not None
    assert answer.svg_usage.model_dump() == upstream.requests[0].reply_json["svg_usage"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"frame_count": 0}, "frame_count"),
        ({"frame_duration_ms": -5}, "frame_duration_ms"),
        ({"svg": {"reasoning": {"effort": "low"}}}, "svg.model"),
        ({"svg": {"model": "m" * 200}}, "svg.model"),
        ({"complexity": "x" * 100}, "complexity"),
    ],
)
async def test_bad_values_of_new_parameters_name_the_field(client, upstream, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model="gpt-image-1", prompt="x", **fields)
    assert error_of(caught)["param"] == param
    assert upstream.request_count == 0


@pytest.mark.parametrize(("asked", "answered"), [("standard", "medium"), ("hd", "high")])
async def test_the_demo_answers_only_valid_quality_values(client, asked, answered):
    answer = await client.images.generate(model="demo", prompt="x", size="256x256", quality=asked)
    assert answer.quality == answered


async def test_the_demo_refuses_a_quality_it_does_not_know(client):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.generate(model="demo", prompt="x", quality="ultra")
    assert error_of(caught)["param"] == "quality"


# -- streaming for every model -----------------------------------------------------------------


async def test_gpt_image_models_stream_without_configuration(client, upstream: FakeUpstream):
    stream = await client.images.generate(
        model="gpt-image-1", prompt="x", stream=True, partial_images=1
    )
    assert [event.type async for event in stream] == [PARTIAL, COMPLETED]
    assert upstream.requests[0].json["stream"] is True


async def test_a_model_that_cannot_stream_still_answers_a_stream(
    client, upstream: FakeUpstream, gateway: Core
):
    # Its upstream model is not a GPT image model: called unary, its images
    # come as completed events, and its usage once, on the last one.
    stream = await client.images.generate(
        model="failover-image", prompt="two ships", n=2, stream=True
    )
    events = [event async for event in stream]
    asked = upstream.requests[-1].json
    assert "stream" not in asked and asked["n"] == 2
    reply = upstream.requests[-1].reply_json
    assert [e.type for e in events] == [COMPLETED, COMPLETED]
    assert [base64.b64decode(e.b64_json) for e in events] == [upstream.image(0), upstream.image(1)]
    assert events[0].usage.total_tokens == 0
    assert events[1].usage.total_tokens == reply["usage"]["total_tokens"]
    [row] = await usage_rows(gateway)
    assert (row.status, row.images, row.total_tokens) == ("OK", 2, reply["usage"]["total_tokens"])


async def test_completed_events_always_carry_usage(client, gateway: Core):
    # The demo reports no usage: the event has zeros (its SDK type requires
    # the field), and the usage row keeps the tokens as unknown.
    stream = await client.images.generate(model="demo", prompt="x", size="256x256", stream=True)
    events = [event async for event in stream]
    completed = events[-1]
    assert completed.type == COMPLETED
    assert completed.usage.total_tokens == 0
    assert completed.usage.input_tokens_details.image_tokens == 0
    [row] = await usage_rows(gateway)
    assert (row.images, row.input_tokens, row.total_tokens) == (1, None, None)
