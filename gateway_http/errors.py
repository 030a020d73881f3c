"""gRPC status -> HTTP status and the OpenAI error envelope.

One table maps every gRPC code to an HTTP status and an OpenAI error `type`;
`error_body()` shapes `{"error": {"message", "type", "param", "code"}}` and can
never fail. `from_grpc_status()` reads the rich details the core attaches in
`grpc-status-details-bin` (`google.rpc.Status`):

* `ErrorInfo.reason` -> `code` (lower-cased), unless `metadata["code"]` is given
  (verbatim; `""` means null); `metadata["param"]` -> `param`;
  `metadata["http_status"]` -> the exact HTTP status; `metadata["type"]` -> `type`.
* `BadRequest.field_violations[0].field` -> `param` when ErrorInfo gave none.
* `RetryInfo.retry_delay` -> `Retry-After` (whole seconds, rounded up, >= 1).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "STATUS_TABLE",
    "ApiError",
    "error_body",
    "from_grpc_status",
    "http_status_for",
]

_log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

# gRPC code -> (HTTP status, OpenAI error type). Rows the design table does
# not fix follow grpc-gateway's choices, with OpenAI's type names.
STATUS_TABLE: Mapping[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, INVALID_REQUEST),
    # A failed precondition is something the caller can fix, not a server fault.
    grpc.StatusCode.FAILED_PRECONDITION: (400, INVALID_REQUEST),
    grpc.StatusCode.OUT_OF_RANGE: (400, INVALID_REQUEST),
    # OpenAI reports a bad API key as an invalid request, not a distinct type.
    grpc.StatusCode.UNAUTHENTICATED: (401, INVALID_REQUEST),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_denied_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.ABORTED: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    # 499 is nginx's "client closed request": the caller gave up, not us.
    grpc.StatusCode.CANCELLED: (499, INVALID_REQUEST),
    grpc.StatusCode.UNKNOWN: (500, SERVER_ERROR),
    grpc.StatusCode.INTERNAL: (500, SERVER_ERROR),
    grpc.StatusCode.DATA_LOSS: (500, SERVER_ERROR),
    grpc.StatusCode.UNIMPLEMENTED: (501, SERVER_ERROR),
    grpc.StatusCode.UNAVAILABLE: (503, SERVER_ERROR),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}

# Codes whose message is meant for the caller even without rich details. For
# the others, a status without details may come from the gRPC library itself
# (e.g. "failed to connect to all addresses; ... ipv4:10.0.0.5:50051"), so the
# message is replaced by a generic one and only logged.
_CALLER_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

_GENERIC_MESSAGES: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.CANCELLED: "The request was cancelled.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The request timed out.",
    grpc.StatusCode.UNAVAILABLE: "The service is temporarily unavailable. Please retry.",
    grpc.StatusCode.UNIMPLEMENTED: "This operation is not implemented.",
}
GENERIC_SERVER_MESSAGE = "The server had an error while processing your request."

# Written when even the envelope cannot be serialized.
FALLBACK_BODY = (
    b'{"error":{"message":"The server had an error while processing your request.",'
    b'"type":"server_error","param":null,"code":null}}'
)


@dataclass(slots=True)
class ApiError(Exception):
    """An error to send to the HTTP caller as an OpenAI envelope.

    Attributes:
        http_status: The HTTP status code.
        message: Human-readable text for the caller (never a stack trace).
        type: OpenAI error type, e.g. `invalid_request_error`.
        param: The offending parameter, or None.
        code: A machine-readable code such as `unknown_parameter`, or None.
        headers: Extra response headers (e.g. `Retry-After`, `Allow`).
    """

    http_status: int
    message: str
    type: str = INVALID_REQUEST
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.http_status} {self.type}: {self.message}"

    def body(self) -> bytes:
        """The serialized envelope."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: Any, type_: Any, param: Any = None, code: Any = None) -> bytes:
    """Serializes the OpenAI error envelope; never raises.

    Args:
        message: Text for the caller.
        type_: OpenAI error type.
        param: Offending parameter, or None (JSON null).
        code: Machine-readable code, or None (JSON null).

    Returns:
        UTF-8 JSON bytes; a constant generic body if anything goes wrong.
    """
    try:
        error = {
            "message": str(message),
            "type": str(type_),
            "param": None if param is None else str(param),
            "code": None if code is None else str(code),
        }
        return json.dumps({"error": error}, ensure_ascii=False).encode("utf-8")
    except Exception:  # the one place where anything goes: the body must exist
        _log.exception("could not serialize an error envelope")
        return FALLBACK_BODY


def http_status_for(code: grpc.StatusCode) -> tuple[int, str]:
    """The HTTP status and OpenAI error type for a gRPC code.

    Args:
        code: The gRPC status code.

    Returns:
        `(http_status, type)`; `(500, "server_error")` for anything unknown.
    """
    return STATUS_TABLE.get(code, (500, SERVER_ERROR))


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
) -> ApiError:
    """Builds the HTTP error for a failed gRPC call.

    Args:
        code: The call's status code.
        details: The call's status message.
        trailing_metadata: The call's trailing metadata, where the core puts
            `grpc-status-details-bin`.

    Returns:
        The error to send; never raises on malformed details (they are ignored).
    """
    http_status, type_ = http_status_for(code)
    rich = _parse_details(trailing_metadata)
    message = details or ""
    if rich is None and code not in _CALLER_CODES:
        if message:
            _log.warning("gRPC %s without details: %s", code.name, message)
        message = _GENERIC_MESSAGES.get(code, GENERIC_SERVER_MESSAGE)
    elif not message:
        message = (rich.message if rich else "") or _GENERIC_MESSAGES.get(
            code, GENERIC_SERVER_MESSAGE if http_status >= 500 else "Invalid request."
        )
    error = ApiError(http_status, message, type_)
    if rich is None:
        return error

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
