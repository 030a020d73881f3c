"""The JSON on the wire, through the HTTP door, against OpenAI's published schemas.

The schemas are vendored in tests/openai_spec (its header says from where and when). Raw
HTTP, not the SDK: the SDK parses leniently, and a client that does not is what this is for.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_edits import left_half_mask, png
from tests.openai_spec import validate

# What each operation answers: (path, ImagesResponse's stream twin, its event type prefix).
OPERATIONS = {
    "generations": ("/v1/images/generations", "ImageGenStreamEvent", "image_generation"),
    "edits": ("/v1/images/edits", "ImageEditStreamEvent", "image_edit"),
}
# The demo (builtin renderer) and gpt-image-1 (the fake upstream) stream; failover-image's
# upstream model does not, so the gateway answers its streams with completed events only.
STREAMING_MODELS = ["demo", "gpt-image-1"]


@pytest.fixture
async def http(http_door: str, secret: str) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(base_url=http_door, headers=headers) as session:
        yield session


async def post(
    http: aiohttp.ClientSession, operation: str, **fields: Any
) -> aiohttp.ClientResponse:
    """An image request as the SDK sends it: JSON for generations, multipart for edits."""
    path = OPERATIONS[operation][0]
    fields = {"prompt": "a lighthouse at dusk", **fields}
    if operation == "generations":
        return await http.post(path, json=fields)
    # A 256x256 input, with `size` left to "auto": OpenAI's answer is one of its sizes.
    form = aiohttp.FormData()
    form.add_field("image", png(), filename="in.png", content_type="image/png")
    form.add_field("mask", left_half_mask(), filename="mask.png", content_type="image/png")
    for name, value in fields.items():
        form.add_field(name, json.dumps(value) if not isinstance(value, str) else value)
    return await http.post(path, data=form)


async def json_answer(response: aiohttp.ClientResponse, status: int) -> Any:
    async with response:
        assert (response.status, response.content_type) == (status, "application/json"), (
            await response.text()
        )
        return await response.json()


async def stream_events(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    """The data of each Server-Sent Event, after checking its name is the data's type."""
    async with response:
        assert (response.status, response.content_type) == (200, "text/event-stream"), (
            await response.text()
        )
        text = await response.text()
    events = []
    for frame in filter(None, text.split("\n\n")):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        assert set(lines) <= {"event", "data"}, frame[:200]
        data = json.loads(lines["data"])
        assert lines.get("event", data.get("type")) == data.get("type"), frame[:200]
        events.append(data)
    return events


# -- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
@pytest.mark.parametrize("model", [*STREAMING_MODELS, "failover-image"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_answers_are_images_responses(http, operation, model, response_format):
    answer = await json_answer(
        await post(http, operation, model=model, n=2, response_format=response_format), 200
    )
    validate(answer, "ImagesResponse")
    assert [list(image) for image in answer["data"]] == [[response_format]] * 2


@pytest.mark.parametrize("model", STREAMING_MODELS)
@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_streamed_partials_and_completion_are_stream_events(http, operation, model):
    _, schema, prefix = OPERATIONS[operation]
    events = await stream_events(
        await post(http, operation, model=model, stream=True, partial_images=2)
    )
    for event in events:
        validate(event, schema)
    partial, completed = f"{prefix}.partial_image", f"{prefix}.completed"
    assert [event["type"] for event in events] == [partial, partial, completed]


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_a_stream_of_a_model_that_cannot_stream_is_completed_events(http, operation):
    _, schema, prefix = OPERATIONS[operation]
    events = await stream_events(
        await post(http, operation, model="failover-image", n=2, stream=True, partial_images=2)
    )
    for event in events:
        validate(event, schema)
    assert [event["type"] for event in events] == [f"{prefix}.completed"] * 2


# -- models ------------------------------------------------------------------------------------


async def test_the_model_list_is_a_list_models_response(http):
    answer = await json_answer(await http.get("/v1/models"), 200)
    validate(answer, "ListModelsResponse")
    assert {"aqueduct-demo", "gpt-image-1"} <= {model["id"] for model in answer["data"]}


@pytest.mark.parametrize("name", ["demo", "aqueduct-demo", "gpt-image-1"])
async def test_one_model_is_a_model(http, name):
    answer = await json_answer(await http.get(f"/v1/models/{name}"), 200)
    validate(answer, "Model")


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/models/no-such-model", None, 404),
        ("POST", "/v1/images/generations", {"model": "no-such-model", "prompt": "x"}, 404),
        ("GET", "/v1/no/such/route", None, 404),
        ("POST", "/v1/images/generations", {"model": "demo", "prompt": "x", "quality": "x"}, 400),
        ("POST", "/v1/images/generations", {"model": "demo", "prompt": "x", "n": 0}, 400),
        ("POST", "/v1/images/generations", {"model": "demo"}, 400),
        ("POST", "/v1/images/generations", {"model": "demo", "stream": "yes"}, 400),
    ],
)
async def test_errors_are_error_responses(http, method, path, body, status):
    answer = await json_answer(await http.request(method, path, json=body), status)
    validate(answer, "ErrorResponse")


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic Zm9vOmJhcg=="])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/images/generations")]
)
async def test_refused_tokens_are_error_responses(http_door, method, path, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    async with aiohttp.ClientSession(base_url=http_door, headers=headers) as anonymous:
        body = {"model": "demo", "prompt": "x"} if method == "POST" else None
        answer = await json_answer(await anonymous.request(method, path, json=body), 401)
    validate(answer, "ErrorResponse")
