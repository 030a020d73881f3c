"""Edits whose images arrive in pieces (UploadEditImages): over gRPC, and from the door.

The HTTP door sends every multipart edit this way; these tests drive the RPC
directly too, as a gRPC caller with large images would, and check what the
upstream receives, how the stream's mistakes are refused, and that the
spooled files are replayed whole to a second deployment after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import grpc
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.config import GatewayConfig, parse_config
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images.edit_inputs import MAX_INPUT_IMAGE_BYTES, decode_inputs
from aqueduct_grpc.images.uploaded_files import SPOOL_MEMORY_BYTES, UploadedFiles
from aqueduct_grpc.server import open_core, start_grpc_server
from aqueduct_grpc.testing.fake_upstream import Fail, Succeed
from gateway_http.api.v1 import annotations_pb2
from tests.conftest import UPSTREAM_KEY, bearer, router_config
from tests.e2e.test_edits import EDIT_COMPLETED, EDIT_PARTIAL, left_half_mask, png, rows

Chunk = annotations_pb2.UploadChunk
Upload = images_pb2.UploadEditImagesRequest
LIMIT = 64 * 1024 * 1024  # the core's default message limit


def noisy_png(side: int) -> bytes:
    """A PNG that compresses badly: `side` x `side` pixels of noise, megabytes for 1024."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def pieces(field: str, data: bytes, *, index: int = 0, size: int = 64 * 1024) -> list[Upload]:
    """The chunk messages of one file, `size` bytes each (the first begins it)."""
    starts = range(0, max(len(data), 1), size)
    return [
        Upload(chunk=Chunk(field=field, index=index, data=data[at : at + size], begins=at == 0))
        for at in starts
    ]


def request(files: int = 1, *, mask: bool = False, **fields: Any) -> Upload:
    """The last message: the parameters, and an entry for each streamed file."""
    edit = images_pb2.EditImagesRequest(
        model=fields.pop("model", "gpt-image-1"),
        prompt=fields.pop("prompt", "add a boat"),
        image=[images_pb2.InputImage(filename=f"in{i}.png") for i in range(files)],
        **fields,
    )
    if mask:
        edit.mask.filename = "mask.png"
    return Upload(request=edit)


@contextlib.asynccontextmanager
async def serving(
    config: GatewayConfig, database_url: str
) -> AsyncIterator[tuple[images_pb2_grpc.ImageServiceStub, str]]:
    """A core of its own, serving `config`: a stub on it, and a token."""
    async with open_core(config, database_url=database_url) as core:
        server = await start_grpc_server(core)
        try:
            _, secret = await core.tokens.create("test")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield images_pb2_grpc.ImageServiceStub(channel), secret
        finally:
            await server.stop(0)


async def upload(
    stub: images_pb2_grpc.ImageServiceStub, secret: str, messages: Iterable[Upload]
) -> list[images_pb2.UploadEditImagesResponse]:
    async def sent() -> AsyncIterator[Upload]:
        for message in messages:
            yield message

    return [answer async for answer in stub.UploadEditImages(sent(), metadata=bearer(secret))]


async def refusal(stub, secret, messages: Iterable[Upload]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await upload(stub, secret, messages)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


async def test_files_sent_in_pieces_reach_the_upstream_whole(stub, secret, upstream, gateway):
    big, small, mask = noisy_png(700), png(), left_half_mask((700, 700))
    assert len(big) > SPOOL_MEMORY_BYTES  # spooled to disk, not held in memory
    answers = await upload(
        stub,
        secret,
        [
            *pieces("image", big),
            *pieces("mask", mask),
            *pieces("image", small, index=1),
            request(2, mask=True, n=2),
        ],
    )
    [answer] = answers
    assert answer.WhichOneof("result") == "response"
    assert len(answer.response.data) == 2
    [sent] = upstream.requests
    assert [(f.name, hashlib.sha256(f.data).digest()) for f in sent.files] == [
        ("image[]", hashlib.sha256(big).digest()),
        ("image[]", hashlib.sha256(small).digest()),
        ("mask", hashlib.sha256(mask).digest()),
    ]
    [row] = await rows(gateway)
    assert (row.operation, row.status, row.images) == ("edit", "OK", 2)


async def test_a_streamed_upload_answers_with_the_edits_events(stub, secret):
    answers = await upload(
        stub,
        secret,
        [
            *pieces("image", png((64, 64))),
            request(model="demo", prompt="x", stream=True, partial_images=1),
        ],
    )
    assert [a.WhichOneof("result") for a in answers] == ["event", "event"]
    assert [a.event.type for a in answers] == [EDIT_PARTIAL, EDIT_COMPLETED]
    assert Image.open(io.BytesIO(answers[-1].event.b64_json)).size == (64, 64)


async def test_a_file_begun_again_keeps_only_its_last_bytes(stub, secret, upstream):
    first = left_half_mask()
    second = Image.new("RGBA", (256, 256), (0, 0, 0, 0))  # all to edit: other bytes, same size
    buffer = io.BytesIO()
    second.save(buffer, "PNG")
    second_bytes = buffer.getvalue()
    await upload(
        stub,
        secret,
        [
            *pieces("image", png()),
            *pieces("mask", png((16, 16))),  # replaced by the next: never checked
            *pieces("mask", first, size=100),
            *pieces("mask", second_bytes),
            request(mask=True),
        ],
    )
    assert first != second_bytes
    assert [(f.name, f.data) for f in upstream.requests[0].files][1] == ("mask", second_bytes)


async def test_a_failed_deployment_is_followed_by_one_that_gets_every_byte(upstream, database_url):
    raw = router_config(upstream)
    twice = {
        "model_name": "twice",
        "litellm_params": {
            "model": "openai/gpt-image-1",
            "api_base": upstream.base_url,
            "api_key": "os.environ/TEST_UPSTREAM_KEY",
        },
        "model_info": {"mode": "image_generation"},
    }
    raw["model_list"] += [twice, twice]
    config = parse_config(raw, source="test", environ={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    upstream.plan(Fail(503), Succeed())
    big = noisy_png(700)
    async with serving(config, database_url) as (stub, secret):
        [answer] = await upload(stub, secret, [*pieces("image", big), request(model="twice")])
    assert len(answer.response.data) == 1
    assert [len(r.files) for r in upstream.requests] == [1, 1]
    assert all(r.files[0].data == big for r in upstream.requests)


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([Upload(chunk=Chunk(field="prompt", data=b"x", begins=True)), request()], "prompt"),
        ([Upload(chunk=Chunk(field="mask", index=1, data=b"x", begins=True)), request()], "mask"),
        ([*pieces("image", png(), index=3), request(1)], "image"),
        ([*pieces("image", png())], "request"),
        ([*pieces("image", png()), request(), *pieces("image", png())], "request"),
        ([Upload(), *pieces("image", png()), request()], "part"),
        ([*pieces("image", b"not an image"), request()], "image[0]"),
        ([*pieces("image", png()), request(mask=True)], "mask"),
    ],
    ids=[
        "field-without-files",
        "index-of-a-singular-field",
        "file-without-an-entry",
        "no-request",
        "message-after-the-request",
        "empty-message",
        "not-an-image",
        "entry-without-a-file",
    ],
)
async def test_a_malformed_upload_is_invalid_argument_naming_the_field(
    stub, secret, upstream, gateway, messages, param
):
    error = await refusal(stub, secret, messages)
    metadata = dict(error.trailing_metadata() or ())
    assert "Traceback" not in (error.details() or "")
    assert param in (error.details() or "") or metadata, error.details()
    assert upstream.request_count == 0
    # Accounted like any refused edit.
    assert [row.status for row in await rows(gateway)] == ["INVALID_ARGUMENT"]


async def test_more_files_than_an_edit_takes_is_refused_as_they_arrive(stub, secret, upstream):
    messages = [m for i in range(19) for m in pieces("image", png((8, 8)), index=i)]
    error = await refusal(stub, secret, [*messages, request(19)])
    assert "at most 16" in (error.details() or "")
    assert upstream.request_count == 0


def test_a_file_over_the_limit_is_refused_before_it_is_all_written() -> None:
    piece = b"\0" * (8 * 1024 * 1024)
    with UploadedFiles(max_total_bytes=4 * MAX_INPUT_IMAGE_BYTES) as files:
        with pytest.raises(GatewayError) as caught:
            for index in range(MAX_INPUT_IMAGE_BYTES // len(piece) + 2):
                files.add(Upload(chunk=Chunk(field="image", index=2, data=piece, begins=not index)))
        assert caught.value.reason == "FILE_TOO_LARGE" and caught.value.param == "image[2]"
        ((spooled, _),) = files.files.values()
        # Refused on the piece that passed the limit, which was not written.
        assert spooled.tell() <= MAX_INPUT_IMAGE_BYTES


def test_spooled_files_are_gone_once_the_call_ends() -> None:
    big = b"\x89PNG" + b"\0" * (2 * SPOOL_MEMORY_BYTES)
    with UploadedFiles(max_total_bytes=LIMIT) as files:
        for message in pieces("image", big) + pieces("mask", b"small"):
            files.add(message)
        spooled = {key: file for key, (file, _) in files.files.items()}
        assert {key: size for key, (_, size) in files.files.items()} == {
            ("image", 0): len(big),
            ("mask", 0): 5,
        }
        on_disk = spooled[("image", 0)]._file  # type: ignore[attr-defined]
        assert not isinstance(on_disk, io.BytesIO)  # rolled over to a temporary file
        assert isinstance(spooled[("mask", 0)]._file, io.BytesIO)  # type: ignore[attr-defined]
    assert all(file.closed for file in spooled.values()) and files.files == {}


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=200_000), min_size=1, max_size=4),
    piece=st.integers(min_value=1_000, max_value=70_000),  # within MAX_UPLOAD_MESSAGES
)
def test_pieces_of_any_size_rebuild_each_file_exactly(sizes: list[int], piece: int) -> None:
    sent = [png((4, 4)) + os.urandom(size) for size in sizes]
    edit = images_pb2.EditImagesRequest(image=[images_pb2.InputImage() for _ in sent])
    with UploadedFiles(max_total_bytes=LIMIT, spool_memory_bytes=100_000) as files:
        for index, data in enumerate(sent):
            for message in pieces("image", data, index=index, size=piece):
                files.add(message)
        checked = decode_inputs(edit, files.files)
        assert [image.read() for image in checked.images] == sent
        assert [image.size for image in checked.images] == [len(d) for d in sent]


async def test_the_door_streams_a_large_form_upload_byte_exact(client, upstream, gateway):
    big = noisy_png(500)  # under the test door's 1 MiB body limit, over a piece
    await client.images.edit(
        model="gpt-image-1",
        image=[("a.png", big, "image/png"), ("b.png", png(), "image/png")],
        mask=("m.png", left_half_mask((500, 500)), "image/png"),
        prompt="x",
    )
    [sent] = upstream.requests
    assert [(f.name, f.filename) for f in sent.files] == [
        ("image[]", "image-0.png"),
        ("image[]", "image-1.png"),
        ("mask", "mask.png"),
    ]
    assert [f.data for f in sent.files] == [big, png(), left_half_mask((500, 500))]


async def test_a_form_with_stream_after_its_files_is_answered_as_events(http_door, secret):
    # OpenAI's Node SDK sends fields in the order the caller wrote them.
    form = aiohttp.FormData()
    form.add_field("image", png((64, 64)), filename="in.png", content_type="image/png")
    form.add_field("model", "demo")
    form.add_field("prompt", "x")
    form.add_field("partial_images", "1")
    form.add_field("stream", "true")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{http_door}/v1/images/edits", data=form, headers={"Authorization": f"Bearer {secret}"}
        ) as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        text = await response.text()
    assert text.count(f"event: {EDIT_PARTIAL}") == 1
    assert text.count(f"event: {EDIT_COMPLETED}") == 1


async def test_a_refusal_mid_upload_is_a_400_in_openais_format(client, upstream):
    # The core refuses the 17th image as it arrives; the door answers at once.
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(
            model="gpt-image-1",
            prompt="x",
            image=[(f"{i}.png", png((8, 8)), "image/png") for i in range(19)],
        )
    error = caught.value.response.json()["error"]
    assert error["param"] == "image" and "Traceback" not in caught.value.response.text
    assert upstream.request_count == 0


async def test_a_bad_token_on_a_large_upload_is_a_401(http_door, upstream):
    # Refused before any piece is read: the door must still report the refusal, not its
    # failed writes.
    async with openai.AsyncOpenAI(
        base_url=f"{http_door}/v1", api_key="sk-wrong", max_retries=0
    ) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.images.edit(
                model="gpt-image-1", prompt="x", image=("a.png", noisy_png(500), "image/png")
            )
    assert caught.value.response.json()["error"]["code"] == "invalid_api_key"
    assert upstream.request_count == 0


def test_everything_received_counts_against_the_requests_limit() -> None:
    piece = b"\x89PNG" + b"\0" * (1024 * 1024)
    with UploadedFiles(max_total_bytes=4 * len(piece)) as files:
        with pytest.raises(GatewayError) as caught:
            # One file, begun again and again: each time it is small, in all it is not.
            for _ in range(5):
                files.add(Upload(chunk=Chunk(field="image", data=piece, begins=True)))
        assert caught.value.reason == "REQUEST_TOO_LARGE"
        assert len(files.files) == 1  # what was sent again was closed, not kept


async def test_the_core_refuses_an_upload_past_its_message_limit(upstream, database_url, config):
    small = dataclasses.replace(config, max_message_bytes=2 * 1024 * 1024)
    async with serving(small, database_url) as (stub, secret):
        # Three files of 1 MB: each fits, together they do not.
        messages = [m for i in range(3) for m in pieces("image", noisy_png(600), index=i)]
        error = await refusal(stub, secret, [*messages, request(3)])
    assert "the most one request may carry" in (error.details() or "")
    assert upstream.request_count == 0


async def test_a_caller_that_leaves_mid_upload_leaves_no_usage_row(
    stub, secret, gateway, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    call = stub.UploadEditImages(metadata=bearer(secret))
    for message in pieces("image", noisy_png(300))[:3]:
        await call.write(message)
    call.cancel()

    def ended() -> bool:
        return any(
            r.name == "aqueduct_grpc.access" and "UploadEditImages" in r.getMessage()
            for r in caplog.records
        )

    for _ in range(200):  # the core notices the caller left, and ends the call
        if ended():
            break
        await asyncio.sleep(0.025)
    assert ended()
    assert await rows(gateway) == []
