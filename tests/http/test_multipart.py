"""multipart/form-data bodies through the door: a real aiohttp app before a real `grpc.aio` server.

The gRPC side records each request as it parsed it (`test_testproto.form_handler`),
so every assertion is on what reached the core, after the gRPC hop. Bodies are
built byte by byte here (`form()`), so that malformed ones are exactly what they
say; the well-formed ones are also sent by aiohttp's and OpenAI's own clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import aiohttp
import grpc.aio
import openai
import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import TestClient
from google.api import annotations_pb2 as google_annotations
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from google.protobuf.message import Message
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway_http import create_app
from gateway_http.marshal import MAX_MESSAGE_DEPTH, Marshaler
from gateway_http.multipart import FormReader
from tests.http import test_streaming
from tests.http import test_testproto as tp

MAX_BODY = 256 * 1024
MAX_PART = 32 * 1024
BOUNDARY = "gateway-test-7MA4YWxkTrZu0gW"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[Any, Any]


# -------------------------------------------------------------------- fixtures


@dataclass
class FormCore:
    """The gRPC server's port and the requests it received."""

    port: int = 0
    seen: list[tuple[str, Message]] = field(default_factory=list)

    def only(self, method: str = "Submit") -> Any:
        """The one request received, checking it went to `method`."""
        ((name, request),) = self.seen
        assert name == method
        return request


@pytest.fixture
async def core() -> AsyncIterator[FormCore]:
    server = grpc.aio.server()
    recorded = FormCore()
    server.add_generic_rpc_handlers((tp.form_handler(recorded.seen),))
    recorded.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield recorded
    await server.stop(None)


def app_for(core: FormCore, **options: Any) -> web.Application:
    options = {"max_body_bytes": MAX_BODY, "max_part_bytes": MAX_PART, **options}
    return create_app(grpc_target=f"127.0.0.1:{core.port}", services=[tp.FORM_SERVICE], **options)


@pytest.fixture
async def client(core: FormCore, aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(app_for(core))


# ---------------------------------------------------------------- form bodies


@dataclass(frozen=True)
class Part:
    """One part of a form, as it goes on the wire."""

    name: str | None
    data: bytes
    filename: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    disposition: str | None = None  # the whole Content-Disposition value, when given

    def encode(self) -> bytes:
        disposition = self.disposition or "form-data"
        if self.disposition is None and self.name is not None:
            disposition += f'; name="{self.name}"'
        if self.disposition is None and self.filename is not None:
            disposition += f'; filename="{self.filename}"'
        lines = [f"Content-Disposition: {disposition}", *(f"{k}: {v}" for k, v in self.headers)]
        return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n" + self.data


def text(name: str, value: str, *, charset: str | None = None) -> Part:
    headers = (("Content-Type", f"text/plain; charset={charset}"),) if charset else ()
    return Part(name, value.encode(charset or "utf-8"), headers=headers)


def upload(
    name: str, data: bytes, filename: str = "a.png", content_type: str | None = "image/png"
) -> Part:
    headers = (("Content-Type", content_type),) if content_type is not None else ()
    return Part(name, data, filename=filename, headers=headers)


def form(*parts: Part, boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """The body of a form: each part after a boundary, then the closing boundary."""
    dash = b"--" + boundary.encode()
    body = b"".join(dash + b"\r\n" + part.encode() + b"\r\n" for part in parts)
    return body + (dash + b"--\r\n" if close else b"")


async def send(
    client: Client,
    path: str,
    body: bytes | AsyncIterator[bytes],
    content_type: str = FORM_TYPE,
    *,
    chunked: bool = False,
    **headers: str,
) -> aiohttp.ClientResponse:
    """POSTs a body as it is; `chunked`: in 1 KiB chunks, without a Content-Length."""
    if chunked and isinstance(body, bytes):
        body = in_chunks(body)
    return await client.post(path, data=body, headers={"Content-Type": content_type, **headers})


async def in_chunks(body: bytes, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def error_of(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """The OpenAI error envelope of a response, checking its status."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def refused(
    client: Client, core: FormCore, parts: Iterable[Part], status: int = 400, path: str = ""
) -> dict[str, Any]:
    """The error for a form, which never reached the core."""
    resp = await send(client, path or "/forms/v1/n", form(*parts))
    error = await error_of(resp, status)
    assert core.seen == []
    return error


# ------------------------------------------------------------------- values


async def test_every_scalar_type_from_text_parts(client: Client, core: FormCore) -> None:
    blob = bytes(range(256))
    parts = [
        text("text", "h\u00e9llo, \u4e16\u754c\x00 "),
        text("i32", "-2147483648"),
        text("i64", "9007199254740993"),  # past 2**53: parsed as an integer, not a float
        text("u32", "4294967295"),
        text("u64", "18446744073709551615"),
        text("s32", "-7"),
        text("s64", "-9223372036854775808"),
        text("fx32", "7"),
        text("fx64", "18446744073709551615"),
        text("sfx32", "-8"),
        text("sfx64", "-9"),
        text("f32", "0.5"),
        text("f64", "-1.25e-3"),
        text("flag", "true"),
        text("blob", base64.b64encode(blob).decode()),  # text for bytes: base64, as in JSON
        text("color", "COLOR_BLUE"),
        text("maybe", "0"),  # a field with presence, set to zero
        text("stream", "false"),
        text("wrapped", "12"),
    ]
    resp = await send(client, "/forms/v1/n1", form(*parts))
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert req.name == "n1"
    assert req.text == "h\u00e9llo, \u4e16\u754c\x00 "
    assert (req.i32, req.i64, req.u32, req.u64) == (-(2**31), 2**53 + 1, 2**32 - 1, 2**64 - 1)
    assert (req.s32, req.s64, req.fx32, req.fx64) == (-7, -(2**63), 7, 2**64 - 1)
    assert (req.sfx32, req.sfx64, req.f32, req.f64) == (-8, -9, 0.5, -1.25e-3)
    assert req.flag is True and req.blob == blob and req.color == 2
    assert req.HasField("maybe") and req.maybe == 0
    assert req.HasField("stream") and req.stream is False
    assert req.HasField("wrapped") and req.wrapped.value == 12


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("color", "1", 1),  # an enum by number, as JSON allows
        ("f64", "3", 3.0),  # an integer is a number
        ("f64", "-0", -0.0),
        ("i64", "-0", 0),
        ("flag", "false", False),
        ("text", "", ""),
        ("blob", "AAE", b"\x00\x01"),  # unpadded, as proto3 JSON takes it
        ("blob", "-_8", b"\xfb\xff"),  # URL-safe
    ],
)
async def test_text_values_follow_the_json_rules(
    client: Client, core: FormCore, name: str, value: str, expected: Any
) -> None:
    resp = await send(client, "/forms/v1/n", form(text(name, value)))
    assert resp.status == 200, await resp.text()
    assert getattr(core.only(), name) == expected


async def test_repeated_fields_from_repeated_parts_and_bracket_parts(
    client: Client, core: FormCore
) -> None:
    parts = [
        text("tags", "a"),
        text("nums[]", "1"),
        text("tags[]", "b"),  # both spellings of one list, in order
        text("tags", "c"),
        text("nums[]", "-2"),
        text("colors[]", "COLOR_RED"),
        text("colors[]", "COLOR_BLUE"),
        text("wrapped_list[]", "w1"),
        text("wrapped_list", "w2"),
    ]
    resp = await send(client, "/forms/v1/n", form(*parts))
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert list(req.tags) == ["a", "b", "c"]
    assert list(req.nums) == [1, -2]
    assert list(req.colors) == [1, 2]
    assert [w.value for w in req.wrapped_list] == ["w1", "w2"]


async def test_a_singular_field_sent_twice_keeps_the_last_part(
    client: Client, core: FormCore
) -> None:
    parts = [
        text("i32", "1"),
        text("i32", "2"),
        upload("file", b"first", "1.png"),
        upload("file", b"second", "2.txt", content_type=None),
    ]
    resp = await send(client, "/forms/v1/n", form(*parts))
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert req.i32 == 2
    # The last file whole: no content type left over from the first.
    assert (req.file.data, req.file.filename, req.file.HasField("content_type")) == (
        b"second",
        "2.txt",
        False,
    )


# -------------------------------------------------------------------- files


async def test_a_file_part_sets_a_bytes_field_to_its_contents(
    client: Client, core: FormCore
) -> None:
    # Bytes like a boundary, but not the delimiter (CRLF, "--", the boundary).
    data = b"\x00\xff\r\n--" + BOUNDARY[:-1].encode() + b"\r\n" + BOUNDARY.encode() + b"\r\n-"
    parts = [upload("blob", data), upload("blobs[]", b"one"), upload("blobs[]", b"")]
    resp = await send(client, "/forms/v1/n", form(*parts))
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert req.blob == data
    assert list(req.blobs) == [b"one", b""]


async def test_a_file_part_sets_an_upload_message(client: Client, core: FormCore) -> None:
    resp = await send(
        client, "/forms/v1/n", form(upload("file", PNG, "cat \u00e9.png", "image/png"))
    )
    assert resp.status == 200, await resp.text()
    file = core.only().file
    assert (file.data, file.filename, file.content_type) == (PNG, "cat \u00e9.png", "image/png")
    assert file.note == ""  # not one of the upload's fields: a form leaves it alone


async def test_a_file_without_content_type_or_name_still_arrives(
    client: Client, core: FormCore
) -> None:
    resp = await send(
        client, "/forms/v1/n", form(upload("file", b"raw", filename="", content_type=None))
    )
    assert resp.status == 200, await resp.text()
    file = core.only().file
    assert (file.data, file.filename, file.HasField("content_type")) == (b"raw", "", False)


async def test_an_upload_message_with_only_its_data_field(client: Client, core: FormCore) -> None:
    resp = await send(client, "/forms/v1/n", form(upload("contents", b"just bytes", "x.bin")))
    assert resp.status == 200, await resp.text()
    assert core.only().contents.content == b"just bytes"


@pytest.mark.parametrize("name", ["files", "files[]"])
async def test_several_files(client: Client, core: FormCore, name: str) -> None:
    images = [PNG, b"GIF89a" + b"\x00" * 5000, b""]
    parts = [
        upload(name, data, f"{i}.img", f"image/{kind}")
        for i, (data, kind) in enumerate(zip(images, ["png", "gif", "webp"], strict=True))
    ]
    resp = await send(client, "/forms/v1/n", form(*parts, text("i32", "3")))
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert [(f.data, f.filename, f.content_type) for f in req.files] == [
        (PNG, "0.img", "image/png"),
        (images[1], "1.img", "image/gif"),
        (b"", "2.img", "image/webp"),
    ]
    assert req.i32 == 3


async def test_aiohttps_own_form_client(client: Client, core: FormCore) -> None:
    data = aiohttp.FormData()
    data.add_field("text", "caf\u00e9")
    data.add_field("i64", "5")
    data.add_field("files[]", PNG, filename="a.png", content_type="image/png")
    data.add_field("files[]", b"jpeg!", filename="b.jpg", content_type="image/jpeg")
    resp = await client.post("/forms/v1/n", data=data)
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert (req.text, req.i64) == ("caf\u00e9", 5)
    assert [(f.data, f.filename, f.content_type) for f in req.files] == [
        (PNG, "a.png", "image/png"),
        (b"jpeg!", "b.jpg", "image/jpeg"),
    ]


async def test_the_openai_sdks_image_edit_encoding(client: Client, core: FormCore) -> None:
    # `images.edit` as the official SDK sends it: `image[]` files, a `mask`
    # file, text fields, and nested objects as `svg[model]` (collected here).
    server = client.server
    async with openai.AsyncOpenAI(
        base_url=f"http://{server.host}:{server.port}/sdk/v1", api_key="sk-test", max_retries=0
    ) as sdk:
        await sdk.images.edit(
            image=[("a.png", PNG, "image/png"), ("b.png", b"second", "image/png")],
            mask=("mask.png", b"mask-bytes", "image/png"),
            prompt="add a hat",
            n=2,
            size="1024x1024",
            stream=False,
            svg={"model": "m1"},
        )
    req = core.only("Open")
    assert (req.prompt, req.n, req.stream) == ("add a hat", 2, False)
    assert [(f.data, f.filename, f.content_type) for f in req.image] == [
        (PNG, "a.png", "image/png"),
        (b"second", "b.png", "image/png"),
    ]
    assert (req.mask.data, req.mask.filename) == (b"mask-bytes", "mask.png")
    assert json_format.MessageToDict(req.extra) == {"size": "1024x1024", "svg[model]": "m1"}


# --------------------------------------------------------- unknown and nested


async def test_an_unknown_name_is_rejected_like_an_unknown_json_key(
    client: Client, core: FormCore
) -> None:
    error = await refused(client, core, [text("i32", "1"), text("foo", "1")])
    assert error == {
        "message": "Unknown parameter: 'foo'.",
        "type": "invalid_request_error",
        "param": "foo",
        "code": "unknown_parameter",
    }


async def test_unknown_names_go_to_the_collector_as_strings(client: Client, core: FormCore) -> None:
    parts = [
        text("prompt", "p"),
        text("n", "2"),
        text("quality", "high"),
        text("future", "1"),  # a string, not a number: the form said text
        text("list[]", "a"),
        text("list[]", "b"),
        text("svg[model]", "m"),
        text("extra", "x"),  # the collector's own name is just another unknown name
    ]
    resp = await send(client, "/forms/v1:open", form(*parts))
    assert resp.status == 200, await resp.text()
    req = core.only("Open")
    assert (req.prompt, req.n) == ("p", 2)
    assert json_format.MessageToDict(req.extra) == {
        "quality": "high",
        "future": "1",
        "list": ["a", "b"],
        "svg[model]": "m",
        "extra": "x",
    }


async def test_an_unknown_file_is_never_collected(client: Client, core: FormCore) -> None:
    error = await refused(
        client, core, [text("prompt", "p"), upload("reference", PNG)], path="/forms/v1:open"
    )
    assert (error["param"], error["code"]) == ("reference", "unknown_parameter")


async def test_nested_fields_from_bracket_names(client: Client, core: FormCore) -> None:
    parts = [text("inner[label]", "L"), text("inner[size]", "5"), text("i32", "1")]
    resp = await send(client, "/forms/v1/n", form(*parts))
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert (req.inner.label, req.inner.size, req.i32) == ("L", 5, 1)


@pytest.mark.parametrize(
    ("part", "param", "code", "says"),
    [
        (text("inner", "{}"), "inner", "invalid_value", "as a part named 'inner[field]'"),
        (text("inner[nope]", "1"), "inner.nope", "unknown_parameter", "Unknown parameter"),
        (text("inner[size]", "x"), "inner.size", "invalid_type", "expected an integer"),
        (text("counts[a]", "1"), "counts", "invalid_value", "send the request as JSON"),
        (text("counts", "1"), "counts", "invalid_value", "send the request as JSON"),
        (text("files[label]", "1"), "files", "invalid_type", "but got an object"),
        (text("i32[x]", "1"), "i32", "invalid_type", "expected an integer, but got an object"),
        (text("i32[]", "1"), "i32", "invalid_type", "expected an integer, but got an array"),
    ],
)
async def test_what_a_form_cannot_set_is_a_400_naming_the_field(
    client: Client, core: FormCore, part: Part, param: str, code: str, says: str
) -> None:
    error = await refused(client, core, [part])
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert says in error["message"]


# -------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("i32", "abc", "an integer"),
        ("i32", "1.0", "an integer"),  # JSON's integers have no fraction
        ("i32", " 1", "an integer"),
        ("i32", "1_000", "an integer"),
        ("i32", "+1", "an integer"),
        ("i32", "01", "an integer"),
        ("u64", "0x10", "an integer"),
        ("f64", "NaN", "a number"),
        ("f64", "Infinity", "a number"),
        ("f64", ".5", "a number"),
        ("flag", "True", "a boolean"),
        ("flag", "1", "a boolean"),
        ("color", "COLOR_GREEN", "an enum name"),
        ("blob", "***", "base64 or a file"),
        ("wrapped", "x", "an integer"),
        ("nums", "1", "an integer"),  # the control: a value that parses
        ("nums", "one", "an integer"),
    ],
)
async def test_a_text_value_that_does_not_parse_is_a_400_naming_the_field(
    client: Client, core: FormCore, name: str, value: str, expected: str
) -> None:
    resp = await send(client, "/forms/v1/n", form(text(name, value)))
    if (name, value) == ("nums", "1"):
        assert resp.status == 200, await resp.text()
        return
    error = await error_of(resp, 400)
    assert (error["param"], error["code"]) == (name, "invalid_type")
    assert error["message"] == f"Invalid type for '{name}': expected {expected}, but got '{value}'."
    assert core.seen == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("i32", "2147483648"),
        ("u32", "-1"),
        ("u64", "18446744073709551616"),
        ("i64", "1" + "0" * 5000),  # Python's int() would refuse these digits with its own words
        ("f64", "1e400"),
        ("f32", "1e39"),
    ],
)
async def test_a_number_out_of_range_is_a_400_naming_the_field(
    client: Client, core: FormCore, name: str, value: str
) -> None:
    error = await refused(client, core, [text(name, value)])
    assert (error["param"], error["code"]) == (name, "invalid_value")
    assert (
        error["message"]
        == f"Invalid value for '{name}': the number is out of range for this field."
    )


@pytest.mark.parametrize(
    ("part", "param", "message"),
    [
        (upload("i32", b"1"), "i32", "expected an integer, but got a file instead."),
        (upload("text", b"t"), "text", "expected a string, but got a file instead."),
        (text("file", "not a file"), "file", "expected a file, but got a text field instead."),
        (text("files[]", "x"), "files", "expected a file, but got a text field instead."),
        (upload("file[]", PNG), "file", "expected a file, but got an array instead."),
    ],
)
async def test_a_file_for_a_text_field_and_text_for_a_file_field_are_400s(
    client: Client, core: FormCore, part: Part, param: str, message: str
) -> None:
    error = await refused(client, core, [part])
    assert (error["param"], error["code"]) == (param, "invalid_type")
    assert error["message"] == f"Invalid type for '{param}': {message}"


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        (text("text", "caf\u00e9", charset="latin-1"), "caf\u00e9"),
        (text("text", "\u4e16\u754c", charset="utf-16"), "\u4e16\u754c"),
    ],
)
async def test_a_text_part_is_read_in_its_charset(
    client: Client, core: FormCore, part: Part, expected: str
) -> None:
    resp = await send(client, "/forms/v1/n", form(part))
    assert resp.status == 200, await resp.text()
    assert core.only().text == expected


@pytest.mark.parametrize(
    ("part", "says"),
    [
        (Part("text", b"\xff\xfe\xfd"), "it is not valid utf-8 text."),
        (Part("text", b"x", headers=(("Content-Type", "text/plain; charset=nope"),)), "unknown"),
        (Part("text", b"x", headers=(("Content-Type", "text/plain; charset=rot13"),)), "unknown"),
    ],
)
async def test_text_that_does_not_decode_is_a_400(
    client: Client, core: FormCore, part: Part, says: str
) -> None:
    error = await refused(client, core, [part])
    assert (error["param"], error["code"]) == ("text", "invalid_value")
    assert says in error["message"]


async def test_a_text_part_decoding_to_a_lone_surrogate_is_a_400(
    client: Client, core: FormCore
) -> None:
    part = Part(
        "text", b"\\ud800", headers=(("Content-Type", "text/plain; charset=unicode_escape"),)
    )
    error = await refused(client, core, [part])
    assert (error["param"], error["code"]) == ("text", "invalid_value")
    assert "surrogate" in error["message"]


# --------------------------------------------------------- body, path, query


async def test_path_variables_win_over_the_form(client: Client, core: FormCore) -> None:
    resp = await send(client, "/forms/v1/from-path?i32=9", form(text("name", "from-form")))
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert req.name == "from-path"
    assert req.i32 == 0  # body "*": the query is not read, as for JSON


async def test_body_field_message_with_path_and_query(client: Client, core: FormCore) -> None:
    parts = [text("label", "L"), text("size", "3")]
    resp = await client.put(
        "/forms/v1/p/inner?i32=4&tags=q", data=form(*parts), headers={"Content-Type": FORM_TYPE}
    )
    assert resp.status == 200, await resp.text()
    req = core.only("SubmitInner")
    assert (req.name, req.inner.label, req.inner.size, req.i32, list(req.tags)) == (
        "p",
        "L",
        3,
        4,
        ["q"],
    )
    # The form is the inner message: other names are unknown there.
    resp = await client.put(
        "/forms/v1/p/inner", data=form(text("i32", "1")), headers={"Content-Type": FORM_TYPE}
    )
    assert (await error_of(resp, 400))["param"] == "i32"


@pytest.mark.parametrize(
    ("path", "parts", "check"),
    [
        ("file", [upload("file", PNG, "x.png")], lambda r: r.file.data == PNG),
        ("tags", [text("tags[]", "a"), text("tags", "b")], lambda r: list(r.tags) == ["a", "b"]),
    ],
)
async def test_body_field_of_one_field_takes_parts_of_its_name(
    client: Client, core: FormCore, path: str, parts: list[Part], check: Callable[[Any], bool]
) -> None:
    headers = {"Content-Type": FORM_TYPE}
    resp = await client.put(f"/forms/v1/p/{path}?i32=2", data=form(*parts), headers=headers)
    assert resp.status == 200, await resp.text()
    req = core.seen[-1][1]
    assert check(req) and req.i32 == 2 and req.name == "p"
    resp = await client.put(f"/forms/v1/p/{path}", data=form(text("i32", "1")), headers=headers)
    error = await error_of(resp, 400)
    assert (error["param"], error["code"]) == ("i32", "unknown_parameter")


async def test_an_empty_form_is_an_empty_message(client: Client, core: FormCore) -> None:
    resp = await send(client, "/forms/v1/n", form())
    assert resp.status == 200, await resp.text()
    assert core.only() == tp.FormRequest(name="n")


async def test_json_still_works_on_the_same_route(client: Client, core: FormCore) -> None:
    resp = await client.post("/forms/v1/n", json={"i32": 5, "file": {"data": "AAE="}})
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert (req.i32, req.file.data) == (5, b"\x00\x01")


async def test_a_streaming_flag_in_a_form_selects_the_twin(aiohttp_client: ClientFactory) -> None:
    server = grpc.aio.server()
    ticker = test_streaming.Ticker()
    server.add_generic_rpc_handlers((ticker.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        app = create_app(grpc_target=f"127.0.0.1:{port}", services=[test_streaming.SERVICE])
        client = await aiohttp_client(app)
        resp = await send(client, "/good/count", form(text("upto", "2"), text("live", "true")))
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert await resp.text() == (
            'event: tick\ndata: {"kind":"tick","n":0}\n\n'
            'event: done\ndata: {"kind":"done","n":1}\n\n'
        )
        resp = await send(client, "/good/count", form(text("upto", "2"), text("live", "false")))
        assert await resp.json() == {"total": 2}
        assert ticker.calls == ["CountLive", "Count"]
    finally:
        await server.stop(None)


def upload_service(name: str, data_field: str, **fields: str) -> Any:
    """A service whose request has a `File` message with this upload option."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"gatewayhttp/test/v1/upload_{name}.proto",
        package=f"gatewayhttp.upload.{name}",
        syntax="proto3",
        dependency=["google/api/annotations.proto", "gateway_http/api/v1/annotations.proto"],
    )
    file = fdp.message_type.add(name="File")
    file.options.Extensions[tp.UPLOAD].data_field = data_field
    for option, value in fields.items():
        setattr(file.options.Extensions[tp.UPLOAD], option, value)
    F = descriptor_pb2.FieldDescriptorProto
    file.field.add(name="data", number=1, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    file.field.add(name="label", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    file.field.add(name="chunks", number=3, type=F.TYPE_BYTES, label=F.LABEL_REPEATED)
    outer = fdp.message_type.add(name="Inner")  # the File is one message down
    outer.field.add(
        name="file",
        number=1,
        type=F.TYPE_MESSAGE,
        type_name=f".{fdp.package}.File",
        label=F.LABEL_OPTIONAL,
    )
    request = fdp.message_type.add(name="Request")
    request.field.add(
        name="inner",
        number=1,
        type=F.TYPE_MESSAGE,
        type_name=f".{fdp.package}.Inner",
        label=F.LABEL_OPTIONAL,
    )
    method = fdp.service.add(name="Uploads").method.add(
        name="Put", input_type=f".{fdp.package}.Request", output_type=f".{fdp.package}.Request"
    )
    rule = method.options.Extensions[google_annotations.http]
    rule.post, rule.body = f"/uploads/{name}", "*"
    pool = descriptor_pool.Default()
    try:
        found = pool.FindFileByName(fdp.name)
    except KeyError:
        found = pool.AddSerializedFile(fdp.SerializeToString())
    return found.services_by_name["Uploads"]


@pytest.mark.parametrize(
    ("name", "data_field", "fields", "complaint"),
    [
        ("none", "", {}, "data_field '' is not a singular bytes field"),
        ("missing", "nope", {}, "data_field 'nope' is not a singular bytes field"),
        ("string", "label", {}, "data_field 'label' is not a singular bytes field"),
        ("repeated", "chunks", {}, "data_field 'chunks' is not a singular bytes field"),
        ("filename", "data", {"filename_field": "data"}, "filename_field 'data' is not a singular"),
        ("type", "data", {"content_type_field": "x"}, "content_type_field 'x' is not a singular"),
    ],
)
def test_a_malformed_upload_option_fails_the_start(
    name: str, data_field: str, fields: dict[str, str], complaint: str
) -> None:
    # Even one message down from the request: every message a form can reach is checked.
    service = upload_service(name, data_field, **fields)
    with pytest.raises(ValueError, match=re.escape(complaint)):
        create_app(grpc_target="127.0.0.1:1", services=[service])


def test_a_well_formed_upload_option_builds() -> None:
    service = upload_service("good", "data", filename_field="label")
    assert create_app(grpc_target="127.0.0.1:1", services=[service]) is not None


# ------------------------------------------------------------------ limits


@pytest.mark.parametrize(
    "make", [lambda n: text("text", "x" * n), lambda n: upload("file", b"\x00" * n)]
)
async def test_a_part_over_the_part_limit_is_a_413(
    client: Client, core: FormCore, make: Callable[[int], Part]
) -> None:
    resp = await send(client, "/forms/v1/n", form(make(MAX_PART)))
    assert resp.status == 200, await resp.text()  # exactly the limit: taken
    core.seen.clear()
    name = make(1).name
    error = await refused(client, core, [make(MAX_PART + 1)], status=413)
    assert (error["param"], error["code"]) == (name, "request_too_large")
    assert str(MAX_PART) in error["message"] and "per field" in error["message"]


async def test_a_body_over_the_body_limit_is_a_413(client: Client, core: FormCore) -> None:
    # Every part within its limit, the body over its own.
    parts = [upload("files[]", b"\x01" * (MAX_PART - 1)) for _ in range(MAX_BODY // MAX_PART + 1)]
    error = await refused(client, core, parts, status=413)
    assert error["code"] == "request_too_large"
    assert str(MAX_BODY) in error["message"] and error["param"] is None


async def test_a_chunked_body_stops_at_the_limit(
    aiohttp_client: ClientFactory, core: FormCore
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield form(close=False) + f"--{BOUNDARY}\r\n".encode()
        yield b'Content-Disposition: form-data; name="blobs"; filename="x"\r\n\r\n'
        for _ in range(200):  # 12.8 MB, without end: far more than the door reads
            yield b"\x02" * (64 * 1024)

    # Without a part limit of its own, the part limit is the body limit.
    client = await aiohttp_client(app_for(core, max_part_bytes=None))
    resp = await send(client, "/forms/v1/n", chunks())
    error = await error_of(resp, 413)
    assert str(MAX_BODY) in error["message"] and error["param"] is None
    assert core.seen == []


@pytest.mark.parametrize(
    "body",
    [
        b"preamble line\r\n" * (MAX_BODY // 15 + 1) + form(text("i32", "1")),  # before any part
        form(Part("i32", b"1", headers=tuple((f"X-H{i}", "v" * 8000) for i in range(40)))),
    ],
)
async def test_what_surrounds_the_parts_counts_too(
    client: Client, core: FormCore, body: bytes
) -> None:
    resp = await send(client, "/forms/v1/n", body, chunked=True)
    error = await error_of(resp, 413)
    assert (error["code"], error["param"]) == ("request_too_large", None)
    assert core.seen == []


async def test_a_content_length_over_the_limit_is_a_413_before_reading(
    client: Client, core: FormCore
) -> None:
    body = form(upload("file", b"\x00" * MAX_BODY))
    error = await error_of(await send(client, "/forms/v1/n", body), 413)
    assert str(MAX_BODY) in error["message"]
    assert core.seen == []


def test_the_part_limit_must_be_positive(core: FormCore) -> None:
    with pytest.raises(ValueError, match="max_part_bytes"):
        app_for(core, max_part_bytes=0)


async def test_an_upload_is_read_into_its_field_without_other_copies() -> None:
    size = 8 * 1024 * 1024
    body = form(upload("file", b"\x07" * size), text("i32", "1"))
    # The body as aiohttp holds it when it has all arrived: pieces in a StreamReader.
    protocol = mock.Mock(_reading_paused=True)
    stream = StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    for start in range(0, len(body), 65536):
        stream.feed_data(body[start : start + 65536])
    stream.feed_eof()
    del body
    marshaler = Marshaler()
    forms = FormReader(marshaler, max_body_bytes=2 * size, max_part_bytes=2 * size)
    url = marshaler.request_decoder(tp.FormRequest, "*", ("name",))
    decoder = forms.decoder(tp.FormRequest, "*", url)
    tracemalloc.start()
    try:
        msg: Any = await decoder.decode({"Content-Type": FORM_TYPE}, stream, {"name": "n"}, None)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # At most the read chunks and the one bytes they are joined into, at once;
    # afterwards only the message holds the file (in protobuf's own memory).
    assert peak < 2.5 * size
    assert held < size / 10
    assert (msg.name, msg.i32, len(msg.file.data)) == ("n", 1, size)
    assert msg.file.data == b"\x07" * size


# ---------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        ("multipart/form-data", form(text("i32", "1")), "no boundary"),
        (f"multipart/form-data; boundary={'b' * 71}", b"--x--", "no boundary"),
        (FORM_TYPE, form(text("i32", "1"), close=False), "ends before its closing boundary"),
        (FORM_TYPE, form(text("i32", "1"))[:-40], "ends before its closing boundary"),
        (FORM_TYPE, f"--{BOUNDARY}\r\n".encode(), "ends before its closing boundary"),
        (FORM_TYPE, b"no boundary anywhere", "ends before its closing boundary"),
        (FORM_TYPE, form(boundary="another"), "ends before its closing boundary"),
        (FORM_TYPE, form(Part(None, b"1")), "has no name"),
        (FORM_TYPE, form(Part("x", b"1", disposition="form-data; name")), "no name"),
        (FORM_TYPE, form(Part("x", b"1", disposition="?")), "no name"),
        (FORM_TYPE, form(Part("x", b"1", disposition="form-data; filename=a")), "no name"),
        (FORM_TYPE, form(Part("x", b"1", headers=(("Bad Header", "x"),))), "malformed"),
        (FORM_TYPE, form(Part("x", b"1", headers=(("X-Long", "v" * 9000),))), "malformed"),
        (
            FORM_TYPE,
            form(Part("text", b"aGk=", headers=(("Content-Transfer-Encoding", "base64"),))),
            "Content-Transfer-Encoding",
        ),
        (
            FORM_TYPE,
            form(
                Part(
                    "text",
                    form(text("a", "b"), boundary="inner"),
                    headers=(("Content-Type", "multipart/mixed; boundary=inner"),),
                )
            ),
            "itself multipart",
        ),
    ],
)
async def test_a_malformed_form_is_a_400_saying_why(
    client: Client, core: FormCore, content_type: str, body: bytes, says: str
) -> None:
    resp = await send(client, "/forms/v1/n", body, content_type)
    error = await error_of(resp, 400)
    assert error["message"].startswith("We could not parse the multipart/form-data body")
    assert says in error["message"], error["message"]
    assert error["type"] == "invalid_request_error"
    assert core.seen == []


async def test_identity_transfer_encodings_are_taken(client: Client, core: FormCore) -> None:
    part = Part("text", b"plain", headers=(("Content-Transfer-Encoding", "8bit"),))
    resp = await send(client, "/forms/v1/n", form(part))
    assert resp.status == 200, await resp.text()
    assert core.only().text == "plain"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/mixed; boundary=x",
        "application/octet-stream",
    ],
)
async def test_other_content_types_are_415_naming_both(
    client: Client, core: FormCore, content_type: str
) -> None:
    resp = await send(client, "/forms/v1/n", form(text("i32", "1")), content_type)
    error = await error_of(resp, 415)
    assert "application/json" in error["message"] and "multipart/form-data" in error["message"]
    assert core.seen == []


async def test_a_compressed_form_is_a_415(client: Client, core: FormCore) -> None:
    resp = await send(client, "/forms/v1/n", form(text("i32", "1")), **{"Content-Encoding": "gzip"})
    error = await error_of(resp, 415)
    assert resp.headers["Accept-Encoding"] == "identity"
    assert "'gzip'" in error["message"] and "uncompressed" in error["message"]
    assert core.seen == []


async def test_a_form_deeper_than_the_core_parses_is_a_400(client: Client, core: FormCore) -> None:
    # A recursive message, `child[child]...[name]`: refused where the core's parser would.
    within = "child" + "[child]" * (MAX_MESSAGE_DEPTH - 1) + "[name]"
    resp = await send(client, "/forms/v1:grow", form(text(within, "leaf")))
    assert resp.status == 200, await resp.text()
    tree = core.only("Grow")
    for _ in range(MAX_MESSAGE_DEPTH):
        tree = tree.child
    assert tree.name == "leaf"
    core.seen.clear()
    beyond = "child" + "[child]" * MAX_MESSAGE_DEPTH + "[name]"
    resp = await send(client, "/forms/v1:grow", form(text(beyond, "leaf")))
    error = await error_of(resp, 400)
    assert error["message"] == "The body of your request is nested too deeply."
    assert error["param"].startswith("child.child.child")  # the path, clipped
    assert core.seen == []


# ------------------------------------------------------------- property-based

# Characters a form carries as UTF-8 text: anything but lone surrogates.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=50)
# What goes as it is in a quoted filename: no control characters, quotes or
# escapes, nor the leading slashes aiohttp strips (a client's path).
FILENAMES = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters='"\\;/'), max_size=30
)
BOUNDARIES = st.text(st.sampled_from("abcXYZ0123456789'()+_,-.=?"), min_size=1, max_size=70)


@given(
    name=TEXT,
    numbers=st.tuples(
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(0, 2**64 - 1),
    ),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    flag=st.booleans(),
    tags=st.lists(TEXT, max_size=4),
    files=st.lists(st.tuples(st.binary(max_size=3000), FILENAMES), max_size=3),
    blob=st.binary(max_size=2000),
    boundary=BOUNDARIES,
)
async def test_random_values_and_payloads_round_trip(
    client: Client,
    core: FormCore,
    name: str,
    numbers: tuple[int, int, int],
    ratio: float,
    flag: bool,
    tags: list[str],
    files: list[tuple[bytes, str]],
    blob: bytes,
    boundary: str,
) -> None:
    core.seen.clear()
    i32, i64, u64 = numbers
    parts = [
        text("text", name),
        text("i32", str(i32)),
        text("i64", str(i64)),
        text("u64", str(u64)),
        text("f64", json.dumps(ratio)),  # a number as JSON writes it
        text("flag", json.dumps(flag)),
        *(text("tags[]", tag) for tag in tags),
        upload("blob", blob, "b.bin"),
        *(upload("files", data, filename) for data, filename in files),
    ]
    body = form(*parts, boundary=boundary)
    # A sender picks a boundary its data does not hold (RFC 2046 5.1.1).
    assume(body.count(b"\r\n--" + boundary.encode()) == len(parts))
    resp = await send(client, "/forms/v1/n", body, f'multipart/form-data; boundary="{boundary}"')
    assert resp.status == 200, await resp.text()
    req = core.only()
    assert (req.text, req.i32, req.i64, req.u64, req.f64, req.flag) == (name, *numbers, ratio, flag)
    assert list(req.tags) == tags and req.blob == blob
    assert [(f.data, f.filename) for f in req.files] == files


def mangled(body: bytes) -> st.SearchStrategy[bytes]:
    """`body` cut short, with bytes changed, inserted or taken out."""

    @st.composite
    def mangle(draw: st.DrawFn) -> bytes:
        out = bytearray(body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body)
        for _ in range(draw(st.integers(0, 4))):
            at = draw(st.integers(0, len(out)))
            action = draw(st.sampled_from(["insert", "delete", "flip"]))
            if action == "insert":
                out[at:at] = draw(st.sampled_from([b"\r\n", b"--", b'"', b";", b"\x00", b"["]))
            elif out and at < len(out):
                if action == "delete":
                    del out[at]
                else:
                    out[at] ^= draw(st.integers(1, 255))
        return bytes(out)

    return mangle()


VALID = form(
    text("text", "t"),
    text("tags[]", "a"),
    text("inner[label]", "l"),
    upload("files[]", PNG),
    upload("blob", b"\x00\x01"),
    Part("i32", b"7", headers=(("Content-Type", "text/plain; charset=utf-8"),)),
)
OPEN_VALID = form(text("prompt", "p"), text("x", "y"), upload("image[]", PNG), text("n", "1"))


@given(
    path=st.sampled_from(["/forms/v1/n", "/forms/v1:open"]),
    body=st.one_of(st.binary(max_size=600), mangled(VALID), mangled(OPEN_VALID)),
    content_type=st.sampled_from(
        [
            FORM_TYPE,
            FORM_TYPE,
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            'multipart/form-data; boundary="gateway-test-7MA4YWxkTrZu0gW"; charset=utf-8',
        ]
    ),
    chunked=st.booleans(),
)
async def test_arbitrary_bytes_as_a_form_never_give_a_5xx(
    client: Client, core: FormCore, path: str, body: bytes, content_type: str, chunked: bool
) -> None:
    resp = await send(client, path, body, content_type, chunked=chunked)
    answer = await resp.read()
    assert resp.status < 500, answer[:500]
    if resp.status != 200:
        error = json.loads(answer)["error"]
        assert resp.status in (400, 413) and error["type"] == "invalid_request_error", error
        assert "Traceback" not in error["message"] and "aiohttp" not in error["message"]
