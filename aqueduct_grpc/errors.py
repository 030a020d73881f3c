"""The one error type of the core and its translation to a rich gRPC status.

Core code raises `GatewayError`; `error_exit` turns it into the call's status.
The HTTP door reads the details (README, "Errors"): `ErrorInfo.reason`
becomes the OpenAI `code`, its metadata carries `param`, `http_status`,
`type` and `code` when they must be exact, and `RetryInfo` becomes
`Retry-After`.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = ["DOMAIN", "INTERNAL_ERROR", "GatewayError", "invalid_argument"]

DOMAIN = "aqueduct.gateway"


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
        metadata: dict[str, str] = {}
        if self.param is not None:
            metadata["param"] = self.param
        if self.http_status is not None:
            metadata["http_status"] = str(self.http_status)
        if self.error_type is not None:
            metadata["type"] = self.error_type
        if self.openai_code is not None:
            metadata["code"] = self.openai_code
        details = [
            _pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata))
        ]
        if self.param is not None and self.code == grpc.StatusCode.INVALID_ARGUMENT:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.param, description=self.message
            )
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        if self.retry_after is not None:
            seconds = max(0, math.ceil(self.retry_after))
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
            details.append(_pack(retry))
        status = status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=self.message, details=details
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
