"""Unit tests of gateway_http.errors: the status table, details, the envelope."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway_http.errors import (
    FALLBACK_BODY,
    STATUS_TABLE,
    ApiError,
    error_body,
    from_grpc_status,
    http_status_for,
)

C = grpc.StatusCode


# The status table as the design states it: (gRPC code, HTTP status, OpenAI type).
STATUS_ROWS = [
    (C.INVALID_ARGUMENT, 400, "invalid_request_error"),
    (C.FAILED_PRECONDITION, 400, "invalid_request_error"),
    (C.OUT_OF_RANGE, 400, "invalid_request_error"),
    (C.UNAUTHENTICATED, 401, "invalid_request_error"),
    (C.PERMISSION_DENIED, 403, "permission_denied_error"),
    (C.NOT_FOUND, 404, "not_found_error"),
    (C.ALREADY_EXISTS, 409, "conflict_error"),
    (C.ABORTED, 409, "conflict_error"),
    (C.RESOURCE_EXHAUSTED, 429, "rate_limit_error"),
    (C.CANCELLED, 499, "invalid_request_error"),
    (C.UNKNOWN, 500, "server_error"),
    (C.INTERNAL, 500, "server_error"),
    (C.DATA_LOSS, 500, "server_error"),
    (C.UNIMPLEMENTED, 501, "server_error"),
    (C.UNAVAILABLE, 503, "server_error"),
    (C.DEADLINE_EXCEEDED, 504, "timeout_error"),
]


@pytest.mark.parametrize(("code", "http_status", "type_"), STATUS_ROWS)
def test_status_table(code: grpc.StatusCode, http_status: int, type_: str) -> None:
    assert http_status_for(code) == (http_status, type_)
    error = from_grpc_status(code, "msg", ())
    assert (error.http_status, error.type, error.param, error.code) == (
        http_status,
        type_,
        None,
        None,
    )


def test_every_error_code_has_a_row() -> None:
    assert set(STATUS_TABLE) == set(C) - {C.OK}


def _trailers(*details: object, code: int = code_pb2.INVALID_ARGUMENT) -> list[tuple[str, bytes]]:
    status = status_pb2.Status(code=code, message="m")
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return [("grpc-status-details-bin", status.SerializeToString())]


def test_error_info_reason_becomes_lower_case_code() -> None:
    info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND", domain="aqueduct")
    error = from_grpc_status(C.NOT_FOUND, "The model 'x' does not exist", _trailers(info))
    assert error.http_status == 404
    assert error.code == "model_not_found"
    assert error.message == "The model 'x' does not exist"
    assert error.param is None


def test_error_info_metadata_overrides() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="UPSTREAM_ERROR",
        metadata={
            "code": "content_policy_violation",
            "param": "prompt",
            "http_status": "422",
            "type": "image_generation_user_error",
        },
    )
    error = from_grpc_status(C.INVALID_ARGUMENT, "rejected", _trailers(info))
    assert (error.http_status, error.type, error.param, error.code) == (
        422,
        "image_generation_user_error",
        "prompt",
        "content_policy_violation",
    )


def test_empty_code_metadata_means_null() -> None:
    info = error_details_pb2.ErrorInfo(reason="SOMETHING", metadata={"code": ""})
    assert from_grpc_status(C.INVALID_ARGUMENT, "m", _trailers(info)).code is None


@pytest.mark.parametrize("bad", ["abc", "99", "700", "", "-400"])
def test_invalid_http_status_metadata_is_ignored(bad: str) -> None:
    info = error_details_pb2.ErrorInfo(reason="X", metadata={"http_status": bad})
    assert from_grpc_status(C.NOT_FOUND, "m", _trailers(info)).http_status == 404


def test_bad_request_field_gives_param_unless_error_info_did() -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="size", description="unsupported")
    bad.field_violations.add(field="n", description="too many")
    assert from_grpc_status(C.INVALID_ARGUMENT, "m", _trailers(bad)).param == "size"
    info = error_details_pb2.ErrorInfo(reason="X", metadata={"param": "quality"})
    assert from_grpc_status(C.INVALID_ARGUMENT, "m", _trailers(bad, info)).param == "quality"


@pytest.mark.parametrize(
    ("seconds", "nanos", "header"),
    [(3, 0, "3"), (1, 200_000_000, "2"), (0, 1, "1"), (0, 0, "1"), (59, 999_999_999, "60")],
)
def test_retry_info_becomes_retry_after(seconds: int, nanos: int, header: str) -> None:
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMIT_EXCEEDED")
    error = from_grpc_status(
        C.RESOURCE_EXHAUSTED, "slow down", _trailers(info, retry, code=code_pb2.RESOURCE_EXHAUSTED)
    )
    assert error.http_status == 429
    assert error.headers == {"Retry-After": header}
    assert error.code == "rate_limit_exceeded"


def test_malformed_details_are_ignored() -> None:
    error = from_grpc_status(
        C.INVALID_ARGUMENT, "bad n", [("grpc-status-details-bin", b"\xff\xff not a proto")]
    )
    assert (error.http_status, error.message, error.code) == (400, "bad n", None)


def test_server_errors_without_details_do_not_leak_their_message() -> None:
    leaked = "failed to connect to all addresses; last error: ipv4:10.1.2.3:50051"
    error = from_grpc_status(C.UNAVAILABLE, leaked, ())
    assert error.http_status == 503
    assert "10.1.2.3" not in error.message
    assert error.message


def test_client_errors_without_details_keep_their_message() -> None:
    error = from_grpc_status(C.UNAUTHENTICATED, "Incorrect API key provided.", None)
    assert (error.http_status, error.message) == (401, "Incorrect API key provided.")


def test_server_error_with_details_keeps_its_message() -> None:
    info = error_details_pb2.ErrorInfo(reason="UPSTREAM_UNAVAILABLE")
    error = from_grpc_status(C.UNAVAILABLE, "No upstream reachable for 'm'.", _trailers(info))
    assert error.message == "No upstream reachable for 'm'."
    assert error.code == "upstream_unavailable"


def test_error_body_shape() -> None:
    body = json.loads(error_body("Unknown parameter: 'x'.", "invalid_request_error", "x", "c"))
    assert body == {
        "error": {
            "message": "Unknown parameter: 'x'.",
            "type": "invalid_request_error",
            "param": "x",
            "code": "c",
        }
    }
    assert json.loads(error_body("m", "server_error"))["error"]["param"] is None
    assert json.loads(error_body("m", "server_error"))["error"]["code"] is None


def test_error_body_never_fails() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    assert error_body(Hostile(), "x") == FALLBACK_BODY
    assert json.loads(FALLBACK_BODY)["error"]["type"] == "server_error"


def test_api_error_body() -> None:
    error = ApiError(413, "too big", code="request_too_large")
    assert json.loads(error.body())["error"]["code"] == "request_too_large"
