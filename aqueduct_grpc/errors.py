"""The one error type of the core and its translation to a rich gRPC status.

Core code raises `GatewayError`; `error_exit` turns it into the call's status.
The HTTP door reads the details (README, "Errors"): `ErrorInfo.reason`
becomes the OpenAI `code`, its metadata carries `param`, `http_status`,
`type` and `code` when they must be exact, and `RetryInfo` becomes
`Retry-After`.

Every caller value a message quotes goes through `quoted`, so that one long
value cannot make an error long; `to_status` still caps what it sends, since
gRPC refuses a status whose trailers exceed its metadata limit (8 KiB by
default) and the caller then sees a transport error instead of ours.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "DOMAIN",
    "INTERNAL_ERROR",
    "MAX_MESSAGE_BYTES",
    "MAX_METADATA_CHARS",
    "QUOTED_CHARS",
    "GatewayError",
    "clipped",
    "invalid_argument",
    "quoted",
]

DOMAIN = "aqueduct.gateway"

QUOTED_CHARS = 64
"""The most characters of a caller's value an error message quotes."""

# The message travels three times in the trailers (grpc-message, and the
# status and its field violation in grpc-status-details-bin, base64): 1,000
# UTF-8 bytes keep them well under gRPC's 8 KiB metadata limit.
MAX_MESSAGE_BYTES = 1_000
MAX_METADATA_CHARS = 256
"""The most characters of one ErrorInfo metadata value (`param`, `type`, `code`)."""

_ELLIPSIS = "…"


def clipped(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, the last one `…` when it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


def quoted(value: object, limit: int = QUOTED_CHARS) -> str:
    """`value` in single quotes for an error message: `'abc…'` when longer than `limit`.

    Characters that do not print (newlines, controls) are shown escaped, so a
    quoted value never breaks a message or a log line.
    """
    # One character more than fits is enough to know the value was cut.
    text = str(value)[: limit + 1]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return f"'{clipped(text, limit)}'"


def _clipped_bytes(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    # Cut at a character boundary, leaving room for the ellipsis (3 bytes).
    return encoded[: limit - 3].decode(errors="ignore") + _ELLIPSIS


class GatewayError(Exception):
    """A failure the caller should see, with its gRPC code and details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str,
        param: str | None = None,
        http_status: int | None = None,
        error_type: str | None = None,
        openai_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Creates the GatewayError.

        Args:
            code: the gRPC status code.
            message: shown to the caller as is; never put secrets in it.
            reason: UPPER_SNAKE cause, e.g. MODEL_NOT_FOUND (the OpenAI `code`).
            param: the request field at fault, if any.
            http_status: the exact HTTP status to restore (an upstream's).
            error_type: the OpenAI error `type` to restore (an upstream's).
            openai_code: the OpenAI `code` to restore verbatim (an upstream's).
            retry_after: seconds the caller should wait before retrying.
        """
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.param = param
        self.http_status = http_status
        self.error_type = error_type
        self.openai_code = openai_code
        self.retry_after = retry_after

    def to_status(self) -> grpc.Status:
        """The status with `google.rpc` details, ready for `abort_with_status`."""
        message = _clipped_bytes(self.message, MAX_MESSAGE_BYTES)
        metadata: dict[str, str] = {}
        if self.param is not None:
            metadata["param"] = self.param
        if self.http_status is not None:
            metadata["http_status"] = str(self.http_status)
        if self.error_type is not None:
            metadata["type"] = self.error_type
        if self.openai_code is not None:
            metadata["code"] = self.openai_code
        metadata = {key: clipped(value, MAX_METADATA_CHARS) for key, value in metadata.items()}
        details = [
            _pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata))
        ]
        if self.param is not None and self.code == grpc.StatusCode.INVALID_ARGUMENT:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=metadata["param"], description=message
            )
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        if self.retry_after is not None:
            seconds = max(0, math.ceil(self.retry_after))
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
            details.append(_pack(retry))
        status = status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=message, details=details
        )
        return rpc_status.to_status(status)


def invalid_argument(message: str, param: str, reason: str = "INVALID_VALUE") -> GatewayError:
    """INVALID_ARGUMENT naming the request field at fault."""
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message, reason=reason, param=param)


# What a caller sees for a failure of the gateway itself; the cause is logged.
INTERNAL_ERROR = GatewayError(
    grpc.StatusCode.INTERNAL, "The gateway failed to handle the request.", reason="INTERNAL_ERROR"
)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
