"""Every request's id: the caller's `X-Request-ID`, or one made here; on every answer.

The id is what ties a client's report to the door's and the core's log
lines, the usage row and the upstream's own logs, so every response carries
it (errors, streams and the door's own refusals alike) and the core receives
it as `x-request-id` metadata. A caller's id is kept when it is a plain token
of at most 128 characters (it goes into logs and headers); any other value is
replaced, not echoed.
"""

from __future__ import annotations

import re
import secrets

from aiohttp import web

__all__ = [
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "is_plain_request_id",
    "new_request_id",
    "request_id_of",
    "stamp",
]

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID = web.RequestKey("request_id", str)
"""Where a request's id is kept on the aiohttp request."""

_ACCEPTED = re.compile(r"[A-Za-z0-9._:=+/@-]{1,128}")


def new_request_id() -> str:
    """A fresh id, in the shape OpenAI's own ids have (`req_` + 32 hex digits)."""
    return "req_" + secrets.token_hex(16)


def is_plain_request_id(text: str) -> bool:
    """Whether a caller's id may be kept: a plain token (it goes into logs and headers)."""
    return _ACCEPTED.fullmatch(text) is not None


def request_id_of(request: web.BaseRequest) -> str:
    """The request's id, chosen on first asking and kept on the request."""
    known = request.get(REQUEST_ID)
    if known is None:
        sent = request.headers.get(REQUEST_ID_HEADER)
        known = sent if sent is not None and is_plain_request_id(sent) else new_request_id()
        request[REQUEST_ID] = known
    return known


async def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the id goes on every response, before its headers are sent."""
    response.headers[REQUEST_ID_HEADER] = request_id_of(request)
