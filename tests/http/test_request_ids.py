"""Request ids on the door's answers: kept when they are plain tokens, replaced otherwise."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway_http import create_app
from tests.http import test_testproto as tp

_PLAIN = re.compile(r"[A-Za-z0-9._:=+/@-]{1,128}")
_MADE = re.compile(r"req_[0-9a-f]{32}")


async def test_every_answer_has_an_id_even_without_a_route(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(grpc_target="127.0.0.1:1", services=[tp.SERVICE]))
    seen = set()
    for path in ("/no/such/route", "/healthz", "/test/v1/echo/x", "/metrics"):
        answer = await client.get(path)
        made = answer.headers["x-request-id"]
        assert _MADE.fullmatch(made), (path, made)
        seen.add(made)
    assert len(seen) == 4


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200))
async def test_a_callers_id_is_echoed_only_when_plain(aiohttp_client: Any, sent: str) -> None:
    # Printable ASCII without spaces: what an HTTP client lets a caller send.
    client = await aiohttp_client(create_app(grpc_target="127.0.0.1:1", services=[tp.SERVICE]))
    answer = await client.get("/no/such/route", headers={"X-Request-ID": sent})
    got = answer.headers["x-request-id"]
    if _PLAIN.fullmatch(sent):
        assert got == sent
    else:
        assert _MADE.fullmatch(got)
    assert answer.status == 404
