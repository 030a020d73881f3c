"""The error dialect of the door: how its errors read and look on the wire.

The door's runtime says *what* failed (`gateway_http.errors.HttpError`); a
`Dialect` says how that reads: the type name for each kind of error, the
wording of the door's own refusals, the generic messages that replace ones the
core may not show, and the envelope around them. `Dialect.error_body()` is the
one function that shapes an error body, and it cannot fail.

`OPENAI` is the dialect of OpenAI's API, `{"error": {"message", "type",
"param", "code"}}`, which its SDKs parse; it is `create_app`'s default.
Another dialect is another instance, e.g. `dataclasses.replace(OPENAI, ...)`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import grpc

from gateway_http.errors import HTTP_STATUS, HttpError, Reason

__all__ = ["OPENAI", "Dialect", "ErrorFields", "openai_envelope"]

_log = logging.getLogger(__name__)


class ErrorFields(NamedTuple):
    """An error as worded by a dialect, before its envelope.

    Attributes:
        message: Text for the caller (never a stack trace).
        type: The dialect's error type, e.g. `invalid_request_error`.
        param: The offending parameter, or None.
        code: A machine-readable code such as `unknown_parameter`, or None.
    """

    message: str
    type: str
    param: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class Dialect:
    """How the door's errors read and look.

    Attributes:
        type_names: The error type for each gRPC code (door errors use the
            code of their kind, see `gateway_http.errors.REASON_STATUS`).
        messages: The wording of each of the door's own `Reason`s: a
            `str.format` template over the error's facts and `param`.
        codes: The machine-readable code of a door `Reason`; none if absent.
        status_messages: For each gRPC code, the message sent when the core
            gave none, or one that may not be shown (errors of the gRPC
            library itself, which can name internal addresses).
        envelope: Builds the JSON value of an error body from its fields.
        fallback_body: Sent when an error body cannot be built.
        stream_error_event: The Server-Sent Event name of an error that
            happens after a stream started (its data is the error body).
        content_type: The content type of error bodies.
    """

    type_names: Mapping[grpc.StatusCode, str]
    messages: Mapping[Reason, str]
    codes: Mapping[Reason, str]
    status_messages: Mapping[grpc.StatusCode, str]
    envelope: Callable[[ErrorFields], object]
    fallback_body: bytes
    stream_error_event: str = "error"
    content_type: str = "application/json"

    def describe(self, error: HttpError) -> ErrorFields:
        """The error as this dialect words it.

        Raises:
            KeyError: The dialect lacks an entry the error needs.
        """
        if error.reason is not None:
            message = self.messages[error.reason].format(param=error.param, **error.facts)
            code = self.codes.get(error.reason)
        else:
            message = error.message or self.status_messages[error.grpc_code]
            code = error.code
        type_ = error.type or self.type_names[error.grpc_code]
        return ErrorFields(message, type_, error.param, code)

    def error_body(self, error: HttpError) -> bytes:
        """The serialized error body; never raises.

        Returns:
            UTF-8 JSON bytes; `fallback_body` if anything goes wrong.
        """
        try:
            text = json.dumps(self.envelope(self.describe(error)), ensure_ascii=False)
            # A caller's value quoted in an error may hold a lone surrogate,
            # which has no UTF-8 form: it is sent as "?".
            return text.encode("utf-8", "replace")
        except Exception:  # the one place where anything goes: the body must exist
            _log.exception("could not build an error body for %s", error.http_status)
            return self.fallback_body


def openai_envelope(fields: ErrorFields) -> object:
    """`{"error": {"message", "type", "param", "code"}}`, absent values as null."""
    return {"error": fields._asdict()}


_INVALID_REQUEST = "invalid_request_error"
_SERVER_ERROR = "server_error"
_SERVER_MESSAGE = "The server had an error while processing your request."

C = grpc.StatusCode

_OPENAI_TYPES: Mapping[grpc.StatusCode, str] = {
    C.INVALID_ARGUMENT: _INVALID_REQUEST,
    C.FAILED_PRECONDITION: _INVALID_REQUEST,
    C.OUT_OF_RANGE: _INVALID_REQUEST,
    # OpenAI reports a bad API key as an invalid request, not a distinct type.
    C.UNAUTHENTICATED: _INVALID_REQUEST,
    C.PERMISSION_DENIED: "permission_denied_error",
    C.NOT_FOUND: "not_found_error",
    C.ALREADY_EXISTS: "conflict_error",
    C.ABORTED: "conflict_error",
    C.RESOURCE_EXHAUSTED: "rate_limit_error",
    C.CANCELLED: _INVALID_REQUEST,
    C.UNKNOWN: _SERVER_ERROR,
    C.INTERNAL: _SERVER_ERROR,
    C.DATA_LOSS: _SERVER_ERROR,
    C.UNIMPLEMENTED: _SERVER_ERROR,
    C.UNAVAILABLE: _SERVER_ERROR,
    C.DEADLINE_EXCEEDED: "timeout_error",
}

_OPENAI_STATUS_MESSAGES: Mapping[grpc.StatusCode, str] = {
    **{
        code: _SERVER_MESSAGE if status >= 500 else "Invalid request."
        for code, status in HTTP_STATUS.items()
    },
    C.CANCELLED: "The request was cancelled.",
    C.DEADLINE_EXCEEDED: "The request timed out.",
    C.UNAVAILABLE: "The service is temporarily unavailable. Please retry.",
    C.UNIMPLEMENTED: "This operation is not implemented.",
}

_OPENAI_MESSAGES: Mapping[Reason, str] = {
    Reason.INVALID_JSON: (
        "We could not parse the JSON body of your request. The API expects a JSON "
        "object in the request body; what was sent was not valid JSON."
    ),
    Reason.NESTED_TOO_DEEPLY: "The body of your request is nested too deeply.",
    Reason.BODY_NOT_OBJECT: "The request body must be a JSON object, but got {got}.",
    Reason.INVALID_TYPE: (
        "Invalid type for '{param}': expected {expected}, but got {got} instead."
    ),
    Reason.INVALID_TYPE_IN_TEXT: (
        "Invalid type for '{param}': expected {expected}, but got '{text}'."
    ),
    Reason.INVALID_VALUE: "Invalid value for '{param}': {why}",
    Reason.INVALID_UTF8: (
        "Invalid value for '{param}': it contains a lone UTF-16 surrogate, which is not "
        "valid Unicode text."
    ),
    Reason.UNKNOWN_PARAMETER: "Unknown parameter: '{param}'.",
    Reason.INVALID_MULTIPART: (
        "We could not parse the multipart/form-data body of your request: {why}"
    ),
    Reason.NO_ROUTE: "Invalid URL ({method} {path}).",
    Reason.METHOD_NOT_ALLOWED: "Method not allowed ({method} {path}). Allowed: {allowed}.",
    Reason.BODY_TOO_LARGE: "The request body is too large: the limit is {limit} bytes.",
    Reason.PART_TOO_LARGE: (
        "The form field '{param}' is too large: the limit is {limit} bytes per field."
    ),
    Reason.UNSUPPORTED_MEDIA_TYPE: (
        "Unsupported Content-Type: the request body must be JSON (application/json) or a "
        "form (multipart/form-data)."
    ),
    Reason.UNSUPPORTED_CONTENT_ENCODING: (
        "Unsupported Content-Encoding '{encoding}': the request body must be uncompressed "
        "or use one of: {supported}."
    ),
    Reason.UNSUPPORTED_FORM_ENCODING: (
        "Unsupported Content-Encoding '{encoding}': a multipart/form-data body must be sent "
        "uncompressed."
    ),
    Reason.UNREADABLE_BODY: (
        "The request body could not be read: it does not match its Content-Encoding or "
        "Transfer-Encoding."
    ),
    Reason.MALFORMED_HTTP: (
        "The request is not valid HTTP: its request line, a header or its chunked body "
        "is malformed."
    ),
    Reason.HEAD_TOO_LARGE: (
        "The request's URL or one of its headers is too long: the limit is {limit} bytes."
    ),
    Reason.REFUSED: "The request was refused: {status} {phrase}.",
    Reason.NOT_RUNNING: "The service is starting or stopping.",
    Reason.UPLOADS_BUSY: (
        "The gateway is receiving as many uploads as it takes at once; retry in a few seconds."
    ),
    Reason.BODY_TIMEOUT: "The request body did not arrive within {seconds} seconds.",
    Reason.BAD_GATEWAY: _SERVER_MESSAGE,
    Reason.INTERNAL: _SERVER_MESSAGE,
}

_OPENAI_CODES: Mapping[Reason, str] = {
    Reason.BODY_NOT_OBJECT: "invalid_type",
    Reason.INVALID_TYPE: "invalid_type",
    Reason.INVALID_TYPE_IN_TEXT: "invalid_type",
    Reason.INVALID_VALUE: "invalid_value",
    Reason.INVALID_UTF8: "invalid_value",
    Reason.UNKNOWN_PARAMETER: "unknown_parameter",
    Reason.BODY_TOO_LARGE: "request_too_large",
    Reason.PART_TOO_LARGE: "request_too_large",
}

OPENAI = Dialect(
    type_names=_OPENAI_TYPES,
    messages=_OPENAI_MESSAGES,
    codes=_OPENAI_CODES,
    status_messages=_OPENAI_STATUS_MESSAGES,
    envelope=openai_envelope,
    fallback_body=(
        b'{"error":{"message":"The server had an error while processing your request.",'
        b'"type":"server_error","param":null,"code":null}}'
    ),
)
