"""Unit tests of gateway_http.errors: the status table, rich details, door errors."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway_http.dialect import OPENAI
from gateway_http.errors import (
    HTTP_STATUS,
    REASON_STATUS,
    HttpError,
    Reason,
    as_http_error,
    door_error,
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
    assert http_status_for(code) == http_status
    # The table is for statuses the core sent: with its rich details.
    error = from_grpc_status(*sent(code, "msg"))
    assert (error.http_status, error.grpc_code, error.param, error.code) == (
        http_status,
        code,
        None,
        None,
    )
    assert OPENAI.describe(error).type == type_


def test_every_error_code_has_a_row() -> None:
    assert set(HTTP_STATUS) == set(C) - {C.OK}
    assert set(REASON_STATUS) == set(Reason)


def sent(code: grpc.StatusCode, message: str, *details: object) -> tuple[Any, ...]:
    """A status as the core sends it: code, message, and the same in rich details."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return code, message, [("grpc-status-details-bin", status.SerializeToString())]


def test_error_info_reason_becomes_lower_case_code() -> None:
    info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND", domain="aqueduct")
    error = from_grpc_status(*sent(C.NOT_FOUND, "The model 'x' does not exist", info))
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
    error = from_grpc_status(*sent(C.INVALID_ARGUMENT, "rejected", info))
    assert (error.http_status, OPENAI.describe(error).type, error.param, error.code) == (
        422,
        "image_generation_user_error",
        "prompt",
        "content_policy_violation",
    )


def test_empty_code_metadata_means_null() -> None:
    info = error_details_pb2.ErrorInfo(reason="SOMETHING", metadata={"code": ""})
    assert from_grpc_status(*sent(C.INVALID_ARGUMENT, "m", info)).code is None


@pytest.mark.parametrize("bad", ["abc", "99", "700", "", "-400"])
def test_invalid_http_status_metadata_is_ignored(bad: str) -> None:
    info = error_details_pb2.ErrorInfo(reason="X", metadata={"http_status": bad})
    assert from_grpc_status(*sent(C.NOT_FOUND, "m", info)).http_status == 404


def test_bad_request_field_gives_param_unless_error_info_did() -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="size", description="unsupported")
    bad.field_violations.add(field="n", description="too many")
    assert from_grpc_status(*sent(C.INVALID_ARGUMENT, "m", bad)).param == "size"
    info = error_details_pb2.ErrorInfo(reason="X", metadata={"param": "quality"})
    assert from_grpc_status(*sent(C.INVALID_ARGUMENT, "m", bad, info)).param == "quality"


@pytest.mark.parametrize(
    ("seconds", "nanos", "header"),
    [(3, 0, "3"), (1, 200_000_000, "2"), (0, 1, "1"), (0, 0, "1"), (59, 999_999_999, "60")],
)
def test_retry_info_becomes_retry_after(seconds: int, nanos: int, header: str) -> None:
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMIT_EXCEEDED")
    error = from_grpc_status(*sent(C.RESOURCE_EXHAUSTED, "slow down", info, retry))
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
    assert error.message is None  # the dialect words a generic one
    message = OPENAI.describe(error).message
    assert "10.1.2.3" not in message
    assert message


# Codes the gRPC library never makes (grpc/doc/statuscodes.md), and
# PERMISSION_DENIED: a server said them, even without rich details.
SERVER_ONLY = [
    C.INVALID_ARGUMENT,
    C.FAILED_PRECONDITION,
    C.OUT_OF_RANGE,
    C.PERMISSION_DENIED,
    C.NOT_FOUND,
    C.ALREADY_EXISTS,
    C.ABORTED,
    C.DATA_LOSS,
]


@pytest.mark.parametrize("code", SERVER_ONLY)
def test_codes_only_a_server_sends_keep_their_message_without_details(
    code: grpc.StatusCode,
) -> None:
    error = from_grpc_status(code, "No such model.", None)
    assert (error.http_status, error.message) == (http_status_for(code), "No such model.")


# Codes the gRPC library makes itself too, and the HTTP status of each without details.
LIBRARY_MADE = [
    (C.RESOURCE_EXHAUSTED, 502),  # not 429: the caller did not exhaust anything
    (C.UNAUTHENTICATED, 502),  # not 401: the door's channel credentials failed
    (C.INTERNAL, 500),
    (C.UNKNOWN, 500),
    (C.UNAVAILABLE, 503),
    (C.DEADLINE_EXCEEDED, 504),
    (C.CANCELLED, 499),
    (C.UNIMPLEMENTED, 501),
]


def test_every_code_is_either_only_a_servers_or_also_the_librarys() -> None:
    library = [code for code, _ in LIBRARY_MADE]
    assert sorted(map(str, [*SERVER_ONLY, *library])) == sorted(map(str, set(C) - {C.OK}))


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (C.RESOURCE_EXHAUSTED, "Stream removed (received metadata size exceeds hard limit)"),
        (C.NOT_FOUND, "another message than the details'"),
    ],
)
def test_details_made_for_another_status_are_not_the_cores_word(
    code: grpc.StatusCode, message: str
) -> None:
    # The library replaced the core's status on its way and kept its trailer.
    info = error_details_pb2.ErrorInfo(reason="MODEL_NOT_FOUND", metadata={"param": "model"})
    _, _, trailers = sent(C.NOT_FOUND, "The model 'x' does not exist.", info)
    error = from_grpc_status(code, message, trailers)
    assert (error.code, error.param) == (None, None)
    if code == C.RESOURCE_EXHAUSTED:
        assert (error.http_status, OPENAI.describe(error).type) == (502, "server_error")
        assert "Stream removed" not in OPENAI.describe(error).message


@pytest.mark.parametrize(("code", "http_status"), LIBRARY_MADE)
def test_a_status_the_grpc_library_may_have_made_is_not_the_cores_word(
    code: grpc.StatusCode, http_status: int, caplog: pytest.LogCaptureFixture
) -> None:
    transport = "Stream removed (received metadata size exceeds hard limit (20480 vs. 16384))"
    error = from_grpc_status(code, transport, [("some-other-trailer", "x")])
    fields = OPENAI.describe(error)
    assert error.http_status == http_status
    assert "Stream removed" not in fields.message and "metadata" not in fields.message
    assert fields.type != "rate_limit_error" and fields.code is None
    assert transport in caplog.text  # for the operator, not the caller


def test_server_error_with_details_keeps_its_message() -> None:
    info = error_details_pb2.ErrorInfo(reason="UPSTREAM_UNAVAILABLE")
    error = from_grpc_status(*sent(C.UNAVAILABLE, "No upstream reachable for 'm'.", info))
    assert error.message == "No upstream reachable for 'm'."
    assert error.code == "upstream_unavailable"


def test_door_error_takes_its_status_from_the_reason_table() -> None:
    error = door_error(Reason.METHOD_NOT_ALLOWED, headers={"Allow": "GET"}, method="PUT", path="/")
    assert (error.http_status, error.grpc_code, error.reason) == (
        405,
        C.INVALID_ARGUMENT,
        Reason.METHOD_NOT_ALLOWED,
    )
    assert (dict(error.facts), error.headers, error.message) == (
        {"method": "PUT", "path": "/"},
        {"Allow": "GET"},
        None,
    )
    assert door_error(Reason.NOT_RUNNING).http_status == 503


def test_any_exception_becomes_an_http_error(caplog: pytest.LogCaptureFixture) -> None:
    own = door_error(Reason.INVALID_JSON)
    assert as_http_error(own) is own
    failed = grpc.aio.AioRpcError(
        C.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), details="No such model."
    )
    call_error = as_http_error(failed)
    assert (call_error.http_status, call_error.grpc_code, call_error.message) == (
        404,
        C.NOT_FOUND,
        "No such model.",
    )
    bug = as_http_error(KeyError("front-internal-detail"), "GET /x")
    assert (bug.http_status, bug.reason, bug.message) == (500, Reason.INTERNAL, None)
    assert "front-internal-detail" in caplog.text and "GET /x" in caplog.text


def test_http_error_str_is_for_logs() -> None:
    assert str(HttpError(404, grpc_code=C.NOT_FOUND, message="gone")) == "404 NOT_FOUND: gone"
