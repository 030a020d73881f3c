"""Property-based: the HTTP door against hostile requests, in front of a real core.

Bodies mix valid generation requests with hostile values in every field kind
(strings with lone surrogates, controls or 9,000+ characters, integers out of
range, NaN and infinities, wrong types, deep nesting, unknown keys, odd
unicode), sent with hostile headers, paths, queries and methods through an
HTTP client; raw request heads that aiohttp's own parser rejects go over a
plain socket. The core behind the door is the real one, its upstream the fake
one, answering normally. Whatever the input, the answer is one a client
caused: never a 5xx (nor a 429: no limits are set), every error is the JSON
envelope with string `message` and `type`, and no answer or log line carries
Python internals, gRPC transport text, the upstream's key or the caller's
token. The default profile bounds each test (`--hypothesis-profile=long` for
more examples).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import UPSTREAM_KEY

# Texts that must never reach a client: Python internals, aiohttp's parser
# quoting the raw head, gRPC's transport errors.
LEAKS = (
    "Traceback",
    "codec",
    "<class",
    'File "',
    "Exception",
    "Got more than",
    "Invalid header",
    "Please install",
    "Stream removed",
    "metadata size",
    "RST_STREAM",
    "grpc",
)

# Strings a fuzzer would try, lone UTF-16 surrogates included (what a JSON
# escape such as "\ud800" decodes to, with no UTF-8 form).
SHORT_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "\x7f\x1b[31m",
            "\r\nx-injected: 1",
            "\ud800",
            "a\udfffb",
            "\ud83d",  # half of an emoji
            "\u202e\u200b\ufeff",
            "😀" * 50,
            "%s%n{0}{{7*7}}",
            "1024x1024",
            "auto",
            "gpt-image-1",
            "demo",
        ]
    ),
)
# Long ones, rarer: they overflow whatever echoes them (a URL, a gRPC trailer).
HOSTILE_TEXT = st.one_of(
    *[SHORT_TEXT] * 5, st.sampled_from(["x" * 9_000, "é" * 40_000, "u" * 200_000])
)
HOSTILE_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([-1, 0, 11, 2**31, -(2**31) - 1, 2**63, 2**64, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN and Infinity are not JSON
)
SCALARS = st.one_of(st.none(), st.booleans(), HOSTILE_NUMBERS, HOSTILE_TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested up to 600 levels deep: arrays, objects, or both in turn."""
    # Around protobuf's depth limit (33 objects or 50 arrays deep), and past the door's stack.
    levels = draw(st.one_of(st.integers(1, 20), st.integers(25, 120), st.integers(120, 600)))
    shape = draw(st.sampled_from(["array", "object", "both"]))
    value: Any = draw(SCALARS)
    for level in range(levels):
        array = shape == "array" or (shape == "both" and level % 2 == 0)
        value = [value] if array else {"a": value}
    return value


HOSTILE_VALUES = st.one_of(SCALARS, JSON_VALUES, deep())

# What a valid request may set (small, so the demo model renders quickly).
VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["gpt-image-1", "forwarding-image", "demo", "house-image"]),
    "n": st.integers(1, 2),
    "size": st.sampled_from(["auto", "256x256"]),
    "quality": st.sampled_from(["auto", "low"]),
    "response_format": st.sampled_from(["b64_json", "url"]),
    "user": st.text(max_size=20),
    "background": st.sampled_from(["auto", "opaque"]),
    "output_format": st.sampled_from(["png", "jpeg"]),
    "safety_identifier": st.text(max_size=20),
    "stream": st.booleans(),
    "partial_images": st.integers(0, 2),
}
KNOWN_FIELDS = [
    *VALID_FIELDS,
    "prompt",
    "style",
    "moderation",
    "output_compression",
]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A JSON body: a valid request with some hostile fields and unknown keys, or worse."""
    kind = draw(st.sampled_from(["request"] * 5 + ["deep", "not an object", "bytes", "escapes"]))
    if kind == "deep":  # in a parameter the contract lacks: the core parses it as a Struct
        model = draw(st.sampled_from(["gpt-image-1", "forwarding-image"]))
        return dumps({"prompt": "a lighthouse", "model": model, draw(SHORT_TEXT): draw(deep())})
    if kind == "not an object":
        return dumps(draw(JSON_VALUES))
    if kind == "bytes":  # invalid UTF-8, truncated JSON, CESU-8 surrogates
        raw = draw(
            st.sampled_from([b'{"prompt": "a', b"\xff\xfe{}", b'{"prompt": "\xed\xa0\x80"}'])
        )
        return draw(st.one_of(st.just(raw), st.binary(max_size=200)))
    if kind == "escapes":  # what a JSON encoder of another language may send
        key = draw(st.sampled_from(["prompt", "user", "model", "future"]))
        escape = draw(st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\u0041", "\\u0000"]))
        return f'{{"prompt": "a cat", "{key}": "x{escape}y"}}'.encode()
    request: dict[str, Any] = {"prompt": "a lighthouse"}
    for name in draw(st.lists(st.sampled_from(sorted(VALID_FIELDS)), max_size=4)):
        request[name] = draw(VALID_FIELDS[name])
    for name in draw(st.lists(st.sampled_from(KNOWN_FIELDS), max_size=2)):
        request[name] = draw(HOSTILE_VALUES)
    for _ in range(draw(st.integers(0, 2))):
        request[draw(SHORT_TEXT)] = draw(HOSTILE_VALUES)
    return dumps(request)


def dumps(value: Any) -> bytes:
    """JSON as a hostile client sends it: NaN as `NaN`, lone surrogates as escapes."""
    return json.dumps(value, allow_nan=True).encode()


PATHS = st.one_of(
    st.sampled_from(
        [
            "/v1/images/generations",
            "/images/generations",
            "/v1/models",
            "/v1/images/files/x",
            "/v1/images/files/%ED%A0%80",
            "/v1/images/files/" + "a" * 5000,
            "/v1/../v1/models",
            "/%00",
            "/v1/images/generations/",
        ]
    ),
    SHORT_TEXT.map(lambda text: "/v1/images/files/" + quote(text, errors="surrogatepass")),
)
QUERIES = st.one_of(
    st.just(""),
    st.dictionaries(SHORT_TEXT, SHORT_TEXT, max_size=3).map(
        lambda query: (
            "?"
            + "&".join(
                f"{quote(k, errors='surrogatepass')}={quote(v, errors='surrogatepass')}"
                for k, v in query.items()
            )
        )
    ),
    st.sampled_from(["?signature=", "?stream=true&n=99999999999", "?%ff=%fe"]),
)
METHODS = st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
    ]
)
# Printable ASCII only: an HTTP client refuses to send anything else (the raw
# socket test sends the rest).
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as opened:
        yield opened


def auth_headers(secret: str) -> st.SearchStrategy[dict[str, str]]:
    return st.sampled_from(
        [
            {"Authorization": f"Bearer {secret}"},
            {},
            {"Authorization": "Bearer aqk-not-a-token"},
            {"Authorization": f"Bearer {secret}x"},
            {"Authorization": f"Basic {secret}"},
            {"Authorization": "Bearer " + "a" * 7000},
        ]
    )


def assert_for_a_client(status: int, headers: Any, body: bytes, secret: str) -> None:
    """The answer is one a client's input caused, shaped as the door promises."""
    text = body.decode("utf-8")  # always UTF-8, even for a caller's lone surrogates
    assert status < 500, (status, text[:500])
    assert status != 429, text[:500]  # no limits are set: a 429 would be made up
    assert UPSTREAM_KEY not in text and secret not in text
    content_type = headers.get("Content-Type", "")
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, text[:200])
        error = json.loads(text)["error"]
        assert isinstance(error["message"], str) and error["message"], error
        assert isinstance(error["type"], str) and error["type"], error
        assert error["param"] is None or isinstance(error["param"], str), error
        assert error["code"] is None or isinstance(error["code"], str), error
        assert not [leak for leak in LEAKS if leak in error["message"]], error
        # The door only sends the core what its parser takes (depth, UTF-8).
        assert error["code"] != "malformed_message", error
    elif content_type.startswith("text/event-stream"):
        for frame in text.split("\n\n"):
            if frame.startswith("event: error"):
                error = json.loads(frame.split("data: ", 1)[1])["error"]
                assert error["type"] != "server_error", error
                assert not [leak for leak in LEAKS if leak in error["message"]], error


def assert_quiet_log(caplog: pytest.LogCaptureFixture) -> None:
    """The door logged no bug of its own, and saw no status the core did not send."""
    door = [r for r in caplog.records if r.name.startswith("gateway_http")]
    assert not [r.getMessage() for r in door if r.levelno >= logging.ERROR]
    assert not [r.getMessage() for r in door if "without the core's details" in r.getMessage()]
    caplog.clear()


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, Any, bytes]:
    # A file-like body: aiohttp warns about large raw bytes.
    async with session.post(url, data=io.BytesIO(body or b""), headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


@given(body=bodies())
async def test_hostile_bodies_get_an_answer_for_a_client(
    http_door: str,
    secret: str,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
) -> None:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    status, response_headers, answer = await post(
        session, f"{http_door}/v1/images/generations", body, headers
    )
    assert_for_a_client(status, response_headers, answer, secret)
    assert_quiet_log(caplog)


@given(data=st.data())
async def test_hostile_requests_get_an_answer_for_a_client(
    http_door: str,
    secret: str,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    method = data.draw(METHODS, "method")
    path = data.draw(PATHS, "path")
    url = http_door + path + data.draw(QUERIES, "query")
    headers = data.draw(auth_headers(secret), "auth")
    body = data.draw(bodies(), "body") if data.draw(st.booleans(), "with a body") else None
    if body is not None:
        headers["Content-Type"] = data.draw(CONTENT_TYPES, "content type")
        encoding = data.draw(st.sampled_from(["", "gzip", "deflate", "br", "zstd", "x"]))
        if encoding:
            headers["Content-Encoding"] = encoding
            body = gzip.compress(body) if encoding == "gzip" else body
    for name in data.draw(
        st.lists(st.sampled_from(["X-Request-Id", "Host", "Accept"]), max_size=2)
    ):
        headers[name] = data.draw(HEADER_TEXT, name)
    payload = None if body is None else io.BytesIO(body)
    async with session.request(method, url, data=payload, headers=headers) as resp:
        answer = await resp.read()
        assert_for_a_client(resp.status, resp.headers, answer, secret)
    assert_quiet_log(caplog)


# ------------------------------------------------------- what aiohttp's parser sees

RAW_METHODS = st.sampled_from(
    [b"GET", b"POST", b"G@T", b"get", b"CONNECT", b"\x16\x03\x01", b"PO ST", b"BREW", b""]
)
RAW_TARGETS = st.one_of(
    st.sampled_from(
        [
            b"/v1/models",
            b"/v1/images/generations",
            b"*",
            b"example.com:443",
            b"http://evil.example/v1/models",
            b"/" + b"a" * 9000,
            b"/\x00",
            b"/\xff\xfe",
            b"/ /",
        ]
    ),
    st.binary(max_size=30).map(lambda raw: b"/" + raw.replace(b" ", b"").replace(b"\r\n", b"")),
)
RAW_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"HTTX/1.1"])
RAW_HEADER_BYTES = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"a\x01b", b"\x7f", b"a" * 9000, "é".encode(), b"\xff", b" x", b""]),
)


@st.composite
def raw_requests(draw: st.DrawFn, secret: str) -> bytes:
    """A request head aiohttp's parser may reject, with a complete body when it has one."""
    line = b" ".join([draw(RAW_METHODS), draw(RAW_TARGETS), draw(RAW_VERSIONS)])
    if draw(st.booleans()):  # a bare LF, or no CR at all
        line += draw(st.sampled_from([b"\n", b"\r"]))
    headers = [b"Host: door", b"Connection: close"]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"X-Fuzz", b"X A", b"", b"Content-Type", b"X-\x00"]))
        headers.append(name + b": " + draw(RAW_HEADER_BYTES))
    if draw(st.booleans()):  # the caller's token, next to a byte the parser refuses
        headers.append(b"Authorization: Bearer " + secret.encode() + draw(RAW_HEADER_BYTES))
    if draw(st.booleans()):
        headers += [b"X-Many: 1"] * draw(st.sampled_from([10, 200]))
    body = draw(st.sampled_from([b"", b'{"prompt": "a"}', b"\x1f\x8b junk"]))
    framing = draw(st.sampled_from(["length", "chunked", "bad chunk", "both", "duplicate"]))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif framing == "bad chunk":
        headers.append(b"Transfer-Encoding: chunked")
        body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    elif framing == "both":
        headers += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
    else:
        headers += [b"Content-Length: %d" % len(body)] * 2
    if draw(st.booleans()):
        headers.append(b"Content-Encoding: " + draw(st.sampled_from([b"br", b"zstd", b"gzip"])))
    return line + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


async def exchange(url: str, raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """Sends raw bytes; the final response, or None if the door closed without one."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except asyncio.IncompleteReadError:
                return None  # e.g. an empty method: nothing to answer
            lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
            if status >= 200:
                break  # an interim 100 Continue is followed by the answer
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return status, headers, body


@given(data=st.data())
async def test_requests_aiohttp_refuses_get_the_envelope(
    http_door: str, secret: str, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    raw = data.draw(raw_requests(secret), "raw request")
    answer = await exchange(http_door, raw)
    if answer is not None:
        status, headers, body = answer
        assert_for_a_client(status, {"Content-Type": headers.get("content-type", "")}, body, secret)
    assert secret not in caplog.text and "Traceback" not in caplog.text
    assert_quiet_log(caplog)
