"""gateway_http.server: what aiohttp refuses by itself still gets the door's envelope.

Raw bytes over a real loopback socket, to a `DoorRunner`-served app (no core
needed: none of these requests reaches it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway_http import DoorRunner, create_app, serve
from tests.conftest import closed_port
from tests.http.test_app import IMAGES

SECRET = "aqk-door-test-secret-0123456789"
POST = b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

# (raw request, HTTP status): each one aiohttp answers itself, in text/plain.
REFUSED_BY_AIOHTTP = {
    "url over 8 KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "header over 8 KiB": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", 400),
    "too many headers": (
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
        400,
    ),
    "control character in the token": (
        f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n".encode(),
        400,
    ),
    "invalid method": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "TLS on the HTTP port": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
    "bad version": (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    "NUL in the path": (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bare LF": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "duplicate Content-Length": (POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    "bad chunk size": (POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    "unknown Transfer-Encoding": (POST + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    "CONNECT": (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 404),
    "OPTIONS *": (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "unknown Expect": (POST + b"Expect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417),
    "brotli body": (POST + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", 415),
    "zstd body": (POST + b"Content-Encoding: zstd\r\nContent-Length: 2\r\n\r\n{}", 415),
    "deflate that is not": (
        POST + b"Content-Encoding: deflate\r\nContent-Length: 2\r\n\r\n{}",
        400,
    ),
}


@pytest.fixture
async def door() -> AsyncIterator[int]:
    """A door on a loopback port, in front of a core that is not there."""
    app = create_app(grpc_target=f"127.0.0.1:{closed_port()}", services=[IMAGES])
    runner = DoorRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site.port
    await runner.cleanup()


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends raw bytes; the response's status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(("raw", "status"), REFUSED_BY_AIOHTTP.values(), ids=REFUSED_BY_AIOHTTP)
async def test_what_aiohttp_refuses_is_the_envelope(
    door: int, raw: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    got, headers, body = await exchange(door, raw)
    assert got == status
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and isinstance(error["message"], str)
    # Nothing of aiohttp's own text, which quotes the raw head (the token too).
    for text in ("Got more than", "Invalid header", "Please install", "b'", "Traceback"):
        assert text not in error["message"]
    assert SECRET not in body.decode()
    assert SECRET not in caplog.text and "Traceback" not in caplog.text


async def test_an_unsupported_coding_names_the_supported_ones(door: int) -> None:
    raw = POST + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"
    _, headers, body = await exchange(door, raw)
    assert headers["accept-encoding"] == "gzip, deflate"
    assert "'br'" in json.loads(body)["error"]["message"]


async def test_ordinary_requests_still_reach_the_door(door: int) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{door}/nowhere") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "Invalid URL (GET /nowhere)."
        # Keep-alive is unaffected: a second request on the pooled connection.
        async with session.get(f"http://127.0.0.1:{door}/v1/models") as resp:
            assert resp.status == 503  # the core is not there


async def test_a_bug_out_of_a_handler_is_a_500_envelope_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(grpc_target=f"127.0.0.1:{closed_port()}", services=[IMAGES])

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("internal-detail")

    app.router.add_get("/broken", broken)
    runner = DoorRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        status, headers, body = await exchange(
            site.port, b"GET /broken HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    finally:
        await runner.cleanup()
    assert status == 500 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["type"] == "server_error"
    assert "internal-detail" not in body.decode()
    assert "internal-detail" in caplog.text  # for the operator, with its traceback


async def test_serve_announces_its_port_and_stops_on_sigterm() -> None:
    app = create_app(grpc_target=f"127.0.0.1:{closed_port()}", services=[IMAGES])
    announced: asyncio.Queue[str] = asyncio.Queue()
    served = asyncio.create_task(
        serve(app, host="127.0.0.1", port=0, announce=announced.put_nowait)
    )
    url = await announced.get()
    port = int(url.rsplit(":", 1)[1])
    status, headers, _ = await exchange(port, b"G@T / HTTP/1.1\r\n\r\n")
    assert (status, headers["content-type"][:16]) == (400, "application/json")
    os.kill(os.getpid(), signal.SIGTERM)  # caught by serve(), not the test process
    await served
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
