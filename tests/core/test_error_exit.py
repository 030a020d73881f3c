"""The error exit: statuses that always fit gRPC's trailers, and malformed messages refused.

The interceptor runs on a real `aio.server` with a generic service of all
four method kinds, so each way grpc deserializes a request is exercised.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from aqueduct_grpc.error_exit import MALFORMED_MESSAGE, ErrorExit
from aqueduct_grpc.errors import (
    MAX_MESSAGE_BYTES,
    MAX_METADATA_CHARS,
    QUOTED_CHARS,
    clipped,
    invalid_argument,
    quoted,
)
from tests.grpc_errors import details_of

SERVICE = "test.Echo"
BAD_UTF8 = b"\x0a\x03\x0a\x01\xff"  # Struct{fields: {"\xff": ...}}: not UTF-8


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpt-image-1", "'gpt-image-1'"),
        ("x" * QUOTED_CHARS, "'" + "x" * QUOTED_CHARS + "'"),
        ("x" * 9_000, "'" + "x" * (QUOTED_CHARS - 1) + "…'"),
        ("a\nb\x00", "'a\\nb\\x00'"),
        (42, "'42'"),
    ],
)
def test_quoted_cuts_long_values_and_shows_controls_escaped(value: object, expected: str) -> None:
    assert quoted(value) == expected


def test_quoted_stays_short_however_many_controls_the_value_holds() -> None:
    assert len(quoted("\x00" * 9_000)) == QUOTED_CHARS + 2


def test_clipped_keeps_short_text_and_marks_a_cut() -> None:
    assert clipped("abc", 3) == "abc"
    assert clipped("abcd", 3) == "ab…"


@pytest.mark.parametrize("char", ["x", "é", "😀"])
def test_a_status_always_fits_grpcs_trailers(char: str) -> None:
    # Whatever some code puts in a message or a param, the status stays small.
    error = invalid_argument(char * 9_000, param="p" * 9_000)
    error.openai_code = "c" * 9_000
    status = error.to_status()
    assert len(status.details.encode()) <= MAX_MESSAGE_BYTES
    assert status.details.endswith("…")
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert len(details) < 2 * MAX_MESSAGE_BYTES + 4 * MAX_METADATA_CHARS + 200


def test_a_short_status_is_sent_unchanged() -> None:
    status = invalid_argument("Invalid 'n'.", "n").to_status()
    assert status.details == "Invalid 'n'."


# --------------------------------------------------------------- a real server


# A refusal kept as a module constant, as the core keeps some.
SHARED_REFUSAL = invalid_argument("refused, as ever", "shared")
REFUSED = struct_pb2.Struct(fields={"shared": struct_pb2.Value(bool_value=True)})


async def unary_unary(request: struct_pb2.Struct, context: Any) -> struct_pb2.Struct:
    if "fail" in request.fields:
        raise invalid_argument("refused", "fail")
    if "shared" in request.fields:
        raise SHARED_REFUSAL
    return request


async def unary_stream(
    request: struct_pb2.Struct, context: Any
) -> AsyncIterator[struct_pb2.Struct]:
    yield request
    yield request


async def stream_unary(
    requests: AsyncIterator[struct_pb2.Struct], context: Any
) -> struct_pb2.Struct:
    count = len([request async for request in requests])
    return struct_pb2.Struct(fields={"count": struct_pb2.Value(number_value=count)})


async def stream_stream(
    requests: AsyncIterator[struct_pb2.Struct], context: Any
) -> AsyncIterator[struct_pb2.Struct]:
    async for request in requests:
        yield request


KINDS = {
    "UnaryUnary": (grpc.unary_unary_rpc_method_handler, unary_unary),
    "UnaryStream": (grpc.unary_stream_rpc_method_handler, unary_stream),
    "StreamUnary": (grpc.stream_unary_rpc_method_handler, stream_unary),
    "StreamStream": (grpc.stream_stream_rpc_method_handler, stream_stream),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def channel(clock: Clock) -> AsyncIterator[grpc.aio.Channel]:
    handlers = {
        name: build(
            behaviour,
            request_deserializer=struct_pb2.Struct.FromString,
            response_serializer=struct_pb2.Struct.SerializeToString,
        )
        for name, (build, behaviour) in KINDS.items()
    }
    server = grpc.aio.server(
        interceptors=[ErrorExit([SERVICE], malformed_log_seconds=60, clock=clock)]
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(0)


async def call_raw(channel: grpc.aio.Channel, kind: str, *messages: bytes) -> Any:
    path = f"/{SERVICE}/{kind}"
    if kind == "UnaryUnary":
        return await channel.unary_unary(path)(messages[0])
    if kind == "UnaryStream":
        return [m async for m in channel.unary_stream(path)(messages[0])]
    if kind == "StreamUnary":
        return await channel.stream_unary(path)(iter(messages))
    return [m async for m in channel.stream_stream(path)(iter(messages))]


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_malformed_message_is_invalid_argument_in_every_kind_of_method(
    channel: grpc.aio.Channel, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = struct_pb2.Struct(fields={"a": struct_pb2.Value(string_value="b")}).SerializeToString()
    assert await call_raw(channel, kind, good, good)  # well-formed messages are served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(channel, kind, BAD_UTF8, BAD_UTF8)
    found = details_of(caught.value)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (found.message, found.reason) == (MALFORMED_MESSAGE.message, "MALFORMED_MESSAGE")
    assert [(r.levelno, r.name) for r in caplog.records] == [
        (logging.WARNING, "aqueduct_grpc.error_exit")
    ]
    assert caplog.records[0].exc_info is None


async def test_a_good_message_after_good_ones_in_a_stream_then_a_bad_one_is_refused(
    channel: grpc.aio.Channel,
) -> None:
    good = struct_pb2.Struct().SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(channel, "StreamStream", good, good, BAD_UTF8)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_malformed_messages_are_logged_once_per_interval_with_a_count(
    channel: grpc.aio.Channel, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError):
            await call_raw(channel, "UnaryUnary", BAD_UTF8)
    clock.now += 30  # still within the interval
    with pytest.raises(grpc.aio.AioRpcError):
        await call_raw(channel, "UnaryUnary", BAD_UTF8)
    assert [r.getMessage() for r in caplog.records] == ["refused a malformed request message"]
    clock.now += 31
    with pytest.raises(grpc.aio.AioRpcError):
        await call_raw(channel, "UnaryUnary", BAD_UTF8)
    assert [r.getMessage() for r in caplog.records][1:] == [
        "refused a malformed request message (and 5 more since the last report)"
    ]


async def test_a_gateway_error_leaves_as_its_status(channel: grpc.aio.Channel) -> None:
    fail = struct_pb2.Struct(fields={"fail": struct_pb2.Value(bool_value=True)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(channel, "UnaryUnary", fail.SerializeToString())
    found = details_of(caught.value)
    assert (found.code, found.message, found.metadata["param"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "refused",
        "fail",
    )


async def test_a_refusal_raised_again_and_again_keeps_no_traceback(
    channel: grpc.aio.Channel,
) -> None:
    # A module constant raised per call would otherwise grow one traceback forever.
    for _ in range(20):
        with pytest.raises(grpc.aio.AioRpcError):
            await call_raw(channel, "UnaryUnary", BAD_UTF8)
        with pytest.raises(grpc.aio.AioRpcError):
            await call_raw(channel, "UnaryUnary", REFUSED.SerializeToString())
    assert MALFORMED_MESSAGE.__traceback__ is None and SHARED_REFUSAL.__traceback__ is None
