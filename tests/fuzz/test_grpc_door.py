"""Property-based: the gRPC door against malformed bytes and hostile values, on a real core.

Every method of ImageService and AdminService gets serialized messages that
do not parse (random bytes, valid messages mutated or truncated, wrong wire
types, bad UTF-8, huge lengths) through a raw channel, with an admin token, a
plain token and none; ImageService also gets well-formed requests whose every
field holds a hostile value. Whatever the input, the answer is a status meant
for a client: never UNKNOWN or INTERNAL, short details with no Python
internals, the upstream's key nowhere, and a quiet log. The default profile
bounds each test (`--hypothesis-profile=long` for more examples).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqueduct.admin.v1 import admin_pb2
from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.server import Core
from tests.accounting import token_with
from tests.conftest import UPSTREAM_KEY, bearer
from tests.grpc_errors import details_of

FD = descriptor.FieldDescriptor

METHODS: list[descriptor.MethodDescriptor] = [
    method
    for file, service in ((images_pb2, "ImageService"), (admin_pb2, "AdminService"))
    for method in file.DESCRIPTOR.services_by_name[service].methods
]

# What a client's input may be answered with; UNKNOWN, INTERNAL, UNAVAILABLE and
# the like would mean the gateway failed on it.
CLIENT_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
INTERNALS = ("Traceback", "<class", "Error parsing", "DecodeError", "Exception", 'File "')
MAX_DETAILS = 1_000
# A run may log a line about malformed messages (rate-limited), never more than a few.
MAX_LOG_RECORDS = 3

# Strings a fuzzer would try: empty, blank, controls, markup, odd unicode, names
# the gateway knows, and values long enough to overflow anything that echoes them.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "\r\nx-injected: 1",
            "\u202e\u200b\ufeff",
            "😀" * 50,
            "../../../../etc/passwd",
            "%s%n{0}{{7*7}}",
            "' OR 1=1 --",
            "1024x1024",
            "url",
            "b64_json",
            "auto",
        ]
    ),
    st.sampled_from(["gpt-image-1", "demo", "forwarding-image", "fuzz-admin", "fuzz-plain"]),
    st.sampled_from(["x" * 9_000, "é" * 70_000, "u" * 300_000]),
)
HOSTILE_INTS = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([-1, 0, 1, 3, 4, 10, 11, 100, 101, 2**31 - 1, -(2**31)]),
)
HOSTILE_INT64S = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**62]))
HOSTILE_DOUBLES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, -0.0, 1e308])
)


def _scalar(fd: FD) -> st.SearchStrategy[Any]:
    if fd.type == FD.TYPE_STRING:
        return HOSTILE_TEXT
    if fd.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if fd.type == FD.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return HOSTILE_DOUBLES
    if fd.type in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return HOSTILE_INT64S
    if fd.type == FD.TYPE_ENUM:
        return st.sampled_from([v.number for v in fd.enum_type.values])
    return HOSTILE_INTS


def _values(fd: FD, depth: int) -> st.SearchStrategy[Any]:
    """Values for one field: a message, a scalar, a list of them or a map."""
    entry = fd.message_type
    if entry is not None and entry.GetOptions().map_entry:
        keys = _scalar(entry.fields_by_name["key"])
        return st.dictionaries(keys, _values(entry.fields_by_name["value"], depth), max_size=3)
    single = messages(entry, depth + 1) if entry is not None else _scalar(fd)
    return st.lists(single, max_size=3) if fd.is_repeated else single


def _assign(message: Message, fd: FD, value: Any) -> None:
    if isinstance(value, Message):
        getattr(message, fd.name).CopyFrom(value)
    elif isinstance(value, dict):
        field = getattr(message, fd.name)
        for key, item in value.items():
            if isinstance(item, Message):
                field[key].CopyFrom(item)
            else:
                field[key] = item
    elif isinstance(value, list):
        getattr(message, fd.name).extend(value)
    else:
        setattr(message, fd.name, value)


@st.composite
def _message(draw: st.DrawFn, kind: descriptor.Descriptor, depth: int) -> Message:
    made = message_factory.GetMessageClass(kind)()
    # A real oneof (Value's kind) gets at most one member; proto3 `optional`
    # fields sit alone in synthetic oneofs and are set independently.
    choices = [o.fields for o in kind.oneofs if len(o.fields) > 1]
    members = {fd.name for fields in choices for fd in fields}
    for fd in kind.fields:
        if fd.name not in members and draw(st.booleans()):
            _assign(made, fd, draw(_values(fd, depth)))
    for fields in choices:
        chosen = draw(st.sampled_from([None, *fields]))
        if chosen is not None:
            _assign(made, chosen, draw(_values(chosen, depth)))
    return made


def messages(kind: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `kind` with any subset of fields set, each to a hostile value."""
    if depth > 3:  # recursive types (Struct, Value) stop here
        return st.just(message_factory.GetMessageClass(kind)())
    return _message(kind, depth)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@st.composite
def malformed(draw: st.DrawFn, method: descriptor.MethodDescriptor) -> bytes:
    """Bytes meant to break the parser of `method`'s request type."""
    kind = method.input_type
    valid = draw(messages(kind)).SerializeToString()
    numbers = [fd.number for fd in kind.fields] or [1]
    # Fields whose bytes are parsed further: UTF-8 text, or a message.
    parsed = [fd.number for fd in kind.fields if fd.type in (FD.TYPE_STRING, FD.TYPE_MESSAGE)]
    how = draw(
        st.sampled_from(["random", "mutated", "truncated", "wire", "utf8", "huge", "varint"])
    )
    if how == "mutated" and valid:
        at = draw(st.integers(0, len(valid) - 1))
        return valid[:at] + bytes([draw(st.integers(0, 255))]) + valid[at + 1 :]
    if how == "truncated" and len(valid) > 1:
        return valid[: draw(st.integers(1, len(valid) - 1))]
    if how == "wire":
        # A known field under another wire type, cut short, or an invalid one (6, 7).
        wire_type = draw(st.sampled_from([1, 3, 4, 5, 6, 7]))
        return valid + _varint(draw(st.sampled_from(numbers)) << 3 | wire_type) + b"\x01"
    if how == "utf8" and parsed:
        bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"a\x80b", b"\xf8"]))
        return valid + _varint(draw(st.sampled_from(parsed)) << 3 | 2) + _varint(len(bad)) + bad
    if how == "huge":
        length = draw(st.sampled_from([2**31, 2**32 - 1, 2**62, 64 * 1024 * 1024]))
        return valid + _varint(draw(st.sampled_from(numbers)) << 3 | 2) + _varint(length) + b"abc"
    if how == "varint":
        # One that never ends (eleven continuation bytes), or one cut short.
        return valid + b"\x08" + draw(st.sampled_from([b"\xff" * 11, b"\xff"]))
    return draw(st.binary(min_size=1, max_size=200))


@pytest.fixture
async def tokens(gateway: Core) -> dict[str, Sequence[tuple[str, str]] | None]:
    return {
        "admin": bearer(await token_with(gateway, "fuzz-admin", admin=True)),
        "plain": bearer(await token_with(gateway, "fuzz-plain")),
        "none": None,
    }


def core_reason(error: grpc.aio.AioRpcError) -> str | None:
    """The ErrorInfo reason the core put in the status, if it is the status received."""
    try:
        return details_of(error).reason
    except ValueError:  # its details say another code than the call ended with
        return None


def assert_answer_is_for_a_client(error: grpc.aio.AioRpcError | None, caplog: Any) -> None:
    if error is not None:
        details = error.details() or ""
        assert error.code() in CLIENT_CODES, (error.code(), details)
        # The core's own refusal, not one gRPC made up on the way (say, trailers
        # too large for the client: RESOURCE_EXHAUSTED with transport text).
        assert core_reason(error) is not None, (error.code(), details)
        assert len(details) <= MAX_DETAILS, len(details)
        assert not any(word in details for word in INTERNALS), details
        trailers = str(error.trailing_metadata()) + str(error.initial_metadata())
        assert UPSTREAM_KEY not in details and UPSTREAM_KEY not in trailers
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) <= MAX_LOG_RECORDS, [r.getMessage() for r in logged]
    assert not [r for r in logged if r.levelno >= logging.ERROR], [r.getMessage() for r in logged]


async def call_raw(
    channel: grpc.aio.Channel,
    method: descriptor.MethodDescriptor,
    data: bytes,
    metadata: Sequence[tuple[str, str]] | None,
) -> grpc.aio.AioRpcError | None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            async for _ in channel.unary_stream(path)(data, metadata=metadata, timeout=30):
                pass
        else:
            await channel.unary_unary(path)(data, metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error
    return None


@st.composite
def method_and_bytes(draw: st.DrawFn) -> tuple[descriptor.MethodDescriptor, bytes]:
    method = draw(st.sampled_from(METHODS))
    return method, draw(malformed(method))


@given(case=method_and_bytes(), who=st.sampled_from(["admin", "plain", "none"]))
async def test_malformed_messages_to_every_method_get_a_client_status(
    channel, tokens, caplog, case, who
):
    method, data = case
    error = await call_raw(channel, method, data, tokens[who])
    assert_answer_is_for_a_client(error, caplog)


@st.composite
def method_and_message(draw: st.DrawFn) -> tuple[descriptor.MethodDescriptor, bytes]:
    method = draw(st.sampled_from(METHODS))
    return method, draw(messages(method.input_type)).SerializeToString()


@given(case=method_and_message(), who=st.sampled_from(["admin", "plain", "none"]))
async def test_well_formed_messages_with_hostile_values_get_a_client_status(
    channel, tokens, caplog, case, who
):
    method, data = case
    error = await call_raw(channel, method, data, tokens[who])
    assert_answer_is_for_a_client(error, caplog)


# Generation requests that get far: each field unset or valid, except one or two
# hostile ones (the demo model renders them, the fake upstream answers the others;
# unknown parameters are sent only as the hostile value).
GENERATE = images_pb2.DESCRIPTOR.services_by_name["ImageService"].methods_by_name
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), HOSTILE_DOUBLES, HOSTILE_TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=6,
)
VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.sampled_from(["a lighthouse", "ein Leuchtturm 🌊"]),
    "model": st.sampled_from(["gpt-image-1", "forwarding-image", "demo"]),
    "n": st.integers(1, 2),
    "size": st.sampled_from(["auto", "256x256", "1024x1024"]),
    "quality": st.sampled_from(["auto", "low", "high"]),
    "style": st.sampled_from(["vivid", "natural"]),
    "response_format": st.just("b64_json"),
    "user": st.text(max_size=20),
    "background": st.sampled_from(["auto", "opaque"]),
    "moderation": st.sampled_from(["auto", "low"]),
    "output_compression": st.integers(0, 100),
    "output_format": st.sampled_from(["png", "jpeg", "webp"]),
    "safety_identifier": st.text(max_size=20),
    "partial_images": st.integers(0, 2),
}
HOSTILE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    fd.name: _values(fd, 0) for fd in images_pb2.GenerateImagesRequest.DESCRIPTOR.fields
}
HOSTILE_FIELDS["extra_parameters"] = st.dictionaries(HOSTILE_TEXT, JSON_VALUES, max_size=3)


@st.composite
def generation_requests(draw: st.DrawFn) -> images_pb2.GenerateImagesRequest:
    hostile = draw(st.sets(st.sampled_from(sorted(HOSTILE_FIELDS)), min_size=1, max_size=2))
    request = images_pb2.GenerateImagesRequest()
    for name in HOSTILE_FIELDS:
        if name in hostile:
            value = draw(HOSTILE_FIELDS[name])
        elif name in ("prompt", "model") or (name in VALID_FIELDS and draw(st.booleans())):
            value = draw(VALID_FIELDS[name])
        else:
            continue
        if name == "extra_parameters":
            request.extra_parameters.update(value)
        else:
            _assign(request, request.DESCRIPTOR.fields_by_name[name], value)
    return request


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=generation_requests(), streaming=st.booleans())
async def test_hostile_generation_requests_get_a_client_status(
    channel, tokens, caplog, request, streaming
):
    if streaming:
        request.ClearField("stream")
        method = GENERATE["StreamGenerateImages"]
        data = images_pb2.StreamGenerateImagesRequest(request=request).SerializeToString()
    else:
        method, data = GENERATE["GenerateImages"], request.SerializeToString()
    error = await call_raw(channel, method, data, tokens["plain"])
    assert_answer_is_for_a_client(error, caplog)


@given(extras=HOSTILE_FIELDS["extra_parameters"])
async def test_parameters_a_model_forwards_get_a_client_status(channel, tokens, caplog, extras):
    request = images_pb2.GenerateImagesRequest(prompt="a lighthouse", model="forwarding-image")
    request.extra_parameters.update(extras)
    data = request.SerializeToString()
    error = await call_raw(channel, GENERATE["GenerateImages"], data, tokens["plain"])
    assert_answer_is_for_a_client(error, caplog)
