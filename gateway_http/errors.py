"""The door's errors: what went wrong, without the words a client reads.

An `HttpError` says what failed (HTTP status, the gRPC code of its kind, and
either the core's message or the door's own `Reason` with its facts); a
`gateway_http.dialect.Dialect` turns it into a body. Two places make them:

* the door itself refuses a request (bad JSON, no route, body too large):
  `door_error(Reason..., **facts)`, its HTTP status from `REASON_STATUS`;
  the caller's values it quotes are clipped to `MAX_QUOTED_CHARS`;
* aiohttp refused a request before the door saw it (a malformed request
  head, an unknown `Expect`, ...): `as_http_error()` maps its exception to a
  door `Reason`, never quoting aiohttp's text (it echoes the raw headers);
* a gRPC call failed: `from_grpc_status()`, the one gRPC -> HTTP conversion,
  with the status table `HTTP_STATUS` and the rich details the core attaches in
  `grpc-status-details-bin` (`google.rpc.Status`):

  * `ErrorInfo.reason` -> `code` (lower-cased), unless `metadata["code"]` is
    given (verbatim; `""` means none); `metadata["param"]` -> `param`;
    `metadata["http_status"]` -> the exact HTTP status; `metadata["type"]` ->
    `type` (the dialect's error type, chosen by the core).
  * `BadRequest.field_violations[0].field` -> `param` when ErrorInfo gave none.
  * `RetryInfo.retry_delay` -> `Retry-After` (whole seconds, rounded up, >= 1).

  The details count only when they describe the call's status (same code
  and message, as `grpc_status.rpc_status.from_call` checks): the gRPC
  library can replace a status on its way and keep the trailer, e.g.
  RESOURCE_EXHAUSTED "Stream removed (received metadata size exceeds hard
  limit…)" over the core's NOT_FOUND. A status without such details may
  have been made by the library itself, on either side of the hop (a
  trailer over a limit, a reset stream, a refused connection): the core did
  not say it. Its message is then dropped (and logged) unless its code is
  one the library never makes; and RESOURCE_EXHAUSTED or UNAUTHENTICATED,
  which would blame the caller (429, 401), becomes a 502: the hop failed,
  not the caller.

`as_http_error()` is what the error handler calls for any exception.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field

import grpc
import grpc.aio
from aiohttp import http_exceptions, web
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "HTTP_STATUS",
    "MAX_QUOTED_CHARS",
    "REASON_STATUS",
    "HttpError",
    "Reason",
    "as_http_error",
    "door_error",
    "from_grpc_status",
    "http_status_for",
]

_log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"

C = grpc.StatusCode

# gRPC code -> HTTP status. Rows the design table does not fix follow
# grpc-gateway's choices.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    C.INVALID_ARGUMENT: 400,
    # A failed precondition is something the caller can fix, not a server fault.
    C.FAILED_PRECONDITION: 400,
    C.OUT_OF_RANGE: 400,
    C.UNAUTHENTICATED: 401,
    C.PERMISSION_DENIED: 403,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.ABORTED: 409,
    C.RESOURCE_EXHAUSTED: 429,
    # 499 is nginx's "client closed request": the caller gave up, not us.
    C.CANCELLED: 499,
    C.UNKNOWN: 500,
    C.INTERNAL: 500,
    C.DATA_LOSS: 500,
    C.UNIMPLEMENTED: 501,
    C.UNAVAILABLE: 503,
    C.DEADLINE_EXCEEDED: 504,
}

# Codes the gRPC library never makes itself (grpc/doc/statuscodes.md; its
# authorization policy makes PERMISSION_DENIED, with a fixed harmless text):
# without rich details, a server still said them, and their message is for the
# caller. Any other status without details may be the library's own (e.g.
# "failed to connect to all addresses; ... ipv4:10.0.0.5:50051", "Stream
# removed"), so its message is dropped (the dialect words a generic one) and
# only logged.
_SERVER_ONLY_CODES = frozenset(
    {
        C.INVALID_ARGUMENT,
        C.FAILED_PRECONDITION,
        C.OUT_OF_RANGE,
        C.PERMISSION_DENIED,
        C.NOT_FOUND,
        C.ALREADY_EXISTS,
        C.ABORTED,
        C.DATA_LOSS,
    }
)
# Codes the library also makes whose HTTP status blames the caller: made by
# the library (a message or trailer over a limit, failed channel credentials),
# they are a failure of the hop, which the caller did not cause.
_BLAMES_CALLER = frozenset({C.RESOURCE_EXHAUSTED, C.UNAUTHENTICATED})

# The longest caller value (a param, a path) a door error quotes.
MAX_QUOTED_CHARS = 200


class Reason(enum.Enum):
    """Why the door itself refused or failed a request (the dialect words each).

    The facts each one carries for the dialect's wording are listed; `param`
    is always available too.
    """

    INVALID_JSON = "invalid_json"
    NESTED_TOO_DEEPLY = "nested_too_deeply"
    BODY_NOT_OBJECT = "body_not_object"  # got: what the body was ("an array")
    INVALID_TYPE = "invalid_type"  # expected, got: noun phrases ("an integer")
    # A value sent as text (a path variable, a query parameter, a form field)
    # that does not parse as its field's type. expected; text: what was sent
    INVALID_TYPE_IN_TEXT = "invalid_type_in_text"
    INVALID_VALUE = "invalid_value"  # why: one sentence
    INVALID_UTF8 = "invalid_utf8"  # a string with no UTF-8 form (a lone surrogate)
    UNKNOWN_PARAMETER = "unknown_parameter"
    INVALID_MULTIPART = "invalid_multipart"  # why: one sentence (a multipart body's framing)
    NO_ROUTE = "no_route"  # method, path
    METHOD_NOT_ALLOWED = "method_not_allowed"  # method, path, allowed
    BODY_TOO_LARGE = "body_too_large"  # limit: bytes
    PART_TOO_LARGE = "part_too_large"  # limit: bytes (param: the part's name)
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNSUPPORTED_CONTENT_ENCODING = "unsupported_content_encoding"  # encoding, supported
    UNSUPPORTED_FORM_ENCODING = "unsupported_form_encoding"  # encoding: of a multipart body
    UNREADABLE_BODY = "unreadable_body"
    MALFORMED_HTTP = "malformed_http"  # the request head is not valid HTTP/1.1
    HEAD_TOO_LARGE = "head_too_large"  # limit: bytes of the URL or of one header
    REFUSED = "refused"  # status, phrase: an HTTP refusal of aiohttp's (e.g. 417)
    NOT_RUNNING = "not_running"
    UPLOADS_BUSY = "uploads_busy"  # the door holds all the upload bytes it may; retry
    BODY_TIMEOUT = "body_timeout"  # seconds: the body did not arrive within them
    BAD_GATEWAY = "bad_gateway"  # the call to the core failed on its way
    INTERNAL = "internal"


# Reason -> (HTTP status, gRPC code of its kind). The code picks the
# dialect's error type, as for errors from the core.
REASON_STATUS: Mapping[Reason, tuple[int, grpc.StatusCode]] = {
    Reason.INVALID_JSON: (400, C.INVALID_ARGUMENT),
    Reason.NESTED_TOO_DEEPLY: (400, C.INVALID_ARGUMENT),
    Reason.BODY_NOT_OBJECT: (400, C.INVALID_ARGUMENT),
    Reason.INVALID_TYPE: (400, C.INVALID_ARGUMENT),
    Reason.INVALID_TYPE_IN_TEXT: (400, C.INVALID_ARGUMENT),
    Reason.INVALID_VALUE: (400, C.INVALID_ARGUMENT),
    Reason.INVALID_UTF8: (400, C.INVALID_ARGUMENT),
    Reason.UNKNOWN_PARAMETER: (400, C.INVALID_ARGUMENT),
    Reason.INVALID_MULTIPART: (400, C.INVALID_ARGUMENT),
    # Routing errors are the caller's: an invalid request, not a missing resource.
    Reason.NO_ROUTE: (404, C.INVALID_ARGUMENT),
    Reason.METHOD_NOT_ALLOWED: (405, C.INVALID_ARGUMENT),
    Reason.BODY_TOO_LARGE: (413, C.INVALID_ARGUMENT),
    Reason.PART_TOO_LARGE: (413, C.INVALID_ARGUMENT),
    Reason.UNSUPPORTED_MEDIA_TYPE: (415, C.INVALID_ARGUMENT),
    Reason.UNSUPPORTED_CONTENT_ENCODING: (415, C.INVALID_ARGUMENT),
    Reason.UNSUPPORTED_FORM_ENCODING: (415, C.INVALID_ARGUMENT),
    Reason.UNREADABLE_BODY: (400, C.INVALID_ARGUMENT),
    Reason.MALFORMED_HTTP: (400, C.INVALID_ARGUMENT),
    # 400, not 414 or 431: aiohttp does not say whether the URL or a header was too long.
    Reason.HEAD_TOO_LARGE: (400, C.INVALID_ARGUMENT),
    Reason.REFUSED: (400, C.INVALID_ARGUMENT),  # the status is aiohttp's
    Reason.NOT_RUNNING: (503, C.UNAVAILABLE),
    Reason.UPLOADS_BUSY: (503, C.UNAVAILABLE),
    Reason.BODY_TIMEOUT: (408, C.DEADLINE_EXCEEDED),
    Reason.BAD_GATEWAY: (502, C.UNAVAILABLE),
    Reason.INTERNAL: (500, C.INTERNAL),
}


@dataclass(slots=True)
class HttpError(Exception):
    """An error to send to the HTTP caller, before a dialect words it.

    Attributes:
        http_status: The HTTP status code.
        grpc_code: The kind of error, as a gRPC code (it picks the dialect's
            error type when `type` is None).
        reason: The door's own reason, or None for an error from the core.
        facts: The values the dialect's wording of `reason` uses.
        message: The core's message for the caller, or None (the dialect
            words one for `reason`, or a generic one for `grpc_code`).
        param: The offending parameter, or None.
        code: A machine-readable code from the core (e.g. `model_not_found`),
            or None. For door errors the dialect gives the code.
        type: The dialect's error type when the core chose it, else None.
        headers: Extra response headers (e.g. `Retry-After`, `Allow`).
    """

    http_status: int
    _: KW_ONLY
    grpc_code: grpc.StatusCode = C.INVALID_ARGUMENT
    reason: Reason | None = None
    facts: Mapping[str, object] = field(default_factory=dict)
    message: str | None = None
    param: str | None = None
    code: str | None = None
    type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        """The status, the reason (or gRPC code) and the message (or facts), on one line."""
        kind = self.reason.value if self.reason is not None else self.grpc_code.name
        return f"{self.http_status} {kind}: {self.message or dict(self.facts)}"


def door_error(
    reason: Reason,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    **facts: object,
) -> HttpError:
    """The error for one of the door's own refusals.

    Args:
        reason: What went wrong.
        param: The offending parameter, or None.
        headers: Extra response headers.
        **facts: The values the wording of `reason` uses (see `Reason`).

    Returns:
        The error, with its status from `REASON_STATUS`.
    """
    http_status, grpc_code = REASON_STATUS[reason]
    return HttpError(
        http_status,
        grpc_code=grpc_code,
        reason=reason,
        facts={k: _clip(v) if isinstance(v, str) else v for k, v in facts.items()},
        param=None if param is None else _clip(param),
        headers=headers or {},
    )


def _clip(text: str) -> str:
    """A caller's value as an error quotes it: at most `MAX_QUOTED_CHARS`."""
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return text[: MAX_QUOTED_CHARS - 1] + "\u2026"


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status for a gRPC code; 500 for anything unknown."""
    return HTTP_STATUS.get(code, 500)


def _parse_details(
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> status_pb2.Status | None:
    """The `google.rpc.Status` in the trailing metadata, if any and well-formed."""
    if not trailing_metadata:
        return None
    for key, value in trailing_metadata:
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:
                _log.warning("ignoring malformed %s trailer", DETAILS_KEY)
                return None
    return None


def _retry_after(delay_seconds: int, delay_nanos: int) -> str:
    """Whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(delay_seconds + delay_nanos / 1e9)))


def from_grpc_status(
    code: grpc.StatusCode,
    details: str | None,
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> HttpError:
    """Builds the HTTP error for a failed gRPC call: the one conversion.

    Args:
        code: The call's status code.
        details: The call's status message.
        trailing_metadata: The call's trailing metadata, where the core puts
            `grpc-status-details-bin`.

    Returns:
        The error to send; never raises on malformed details (they are ignored).
    """
    rich = _parse_details(trailing_metadata)
    message = details or None
    if rich is not None and (rich.code != code.value[0] or rich.message != (details or "")):
        rich = None  # not the status the details were made for: not the core's word
    if rich is None:
        if code in _SERVER_ONLY_CODES:
            return HttpError(http_status_for(code), grpc_code=code, message=message)
        _log.warning("gRPC %s without the core's details: %s", code.name, (message or "")[:500])
        if code in _BLAMES_CALLER:
            return door_error(Reason.BAD_GATEWAY)
        return HttpError(http_status_for(code), grpc_code=code)
    error = HttpError(http_status_for(code), grpc_code=code, message=message)

    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    for any_detail in rich.details:
        try:
            if any_detail.Is(info.DESCRIPTOR):
                any_detail.Unpack(info)
                meta = info.metadata
                if "code" in meta:
                    error.code = meta["code"] or None
                elif info.reason:
                    error.code = info.reason.lower()
                if meta.get("param"):
                    error.param = meta["param"]
                if meta.get("type"):
                    error.type = meta["type"]
                status_text = meta.get("http_status", "")
                if status_text.isdecimal() and 400 <= int(status_text) <= 599:
                    error.http_status = int(status_text)
            elif any_detail.Is(bad_request.DESCRIPTOR):
                any_detail.Unpack(bad_request)
            elif any_detail.Is(retry.DESCRIPTOR):
                any_detail.Unpack(retry)
                delay = retry.retry_delay
                error.headers["Retry-After"] = _retry_after(delay.seconds, delay.nanos)
        except Exception:
            _log.warning("ignoring malformed error detail %s", any_detail.type_url)
    if error.param is None and bad_request.field_violations:
        error.param = bad_request.field_violations[0].field or None
    return error


def as_http_error(exc: Exception, where: str = "") -> HttpError:
    """The HTTP error for any exception met while serving a request.

    Args:
        exc: What was raised: the door's own error, a failed gRPC call, or a
            bug (logged with its traceback, never shown to the caller).
        where: What was being served, for the log (e.g. `POST /v1/x`).

    Returns:
        The error to send.
    """
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        return from_grpc_status(exc.code(), exc.details(), exc.trailing_metadata())
    if isinstance(exc, http_exceptions.HttpProcessingError):
        return _refused_by_parser(exc)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        return _refused_by_aiohttp(exc)
    _log.error("unexpected error for %s", where or "a request", exc_info=exc)
    return door_error(Reason.INTERNAL)


def _refused_by_parser(exc: http_exceptions.HttpProcessingError) -> HttpError:
    """A request aiohttp's HTTP parser rejected (its text quotes the raw head: not used)."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return door_error(Reason.HEAD_TOO_LARGE, limit=exc.args[1])  # (line, limit, size)
    if isinstance(exc, http_exceptions.PayloadEncodingError):
        return door_error(Reason.UNREADABLE_BODY)
    return door_error(Reason.MALFORMED_HTTP)


def _refused_by_aiohttp(exc: web.HTTPException) -> HttpError:
    """An HTTP refusal aiohttp made itself, after parsing (its body is text/plain).

    E.g. 404 for a target no route can take (`CONNECT host:443`, `OPTIONS *`),
    417 for an unknown `Expect`.
    """
    error = door_error(Reason.REFUSED, status=exc.status, phrase=exc.reason)
    error.http_status = exc.status
    if exc.status >= 500:
        error.grpc_code = C.INTERNAL
    return error
