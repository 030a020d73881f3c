"""Unit tests of gateway_http.dialect: OpenAI's wording and envelope, and the fallback."""

from __future__ import annotations

import dataclasses
import json

import grpc
import pytest

from gateway_http.dialect import OPENAI, Dialect, ErrorFields
from gateway_http.errors import HttpError, Reason, door_error, from_grpc_status
from tests.http.test_errors import STATUS_ROWS

C = grpc.StatusCode


def test_openai_has_a_type_and_a_message_for_every_code_and_reason() -> None:
    assert set(OPENAI.type_names) == set(C) - {C.OK}
    assert set(OPENAI.status_messages) == set(C) - {C.OK}
    assert set(OPENAI.messages) == set(Reason)
    assert [OPENAI.type_names[code] for code, _, _ in STATUS_ROWS] == [
        type_ for _, _, type_ in STATUS_ROWS
    ]


def test_error_body_shape() -> None:
    error = door_error(Reason.UNKNOWN_PARAMETER, param="x")
    assert json.loads(OPENAI.error_body(error)) == {
        "error": {
            "message": "Unknown parameter: 'x'.",
            "type": "invalid_request_error",
            "param": "x",
            "code": "unknown_parameter",
        }
    }
    plain = json.loads(OPENAI.error_body(HttpError(500, grpc_code=C.INTERNAL, message="m")))
    assert plain["error"] == {"message": "m", "type": "server_error", "param": None, "code": None}


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (door_error(Reason.INVALID_TYPE, param="n", expected="an integer", got="a string"),
         "Invalid type for 'n': expected an integer, but got a string instead."),
        (door_error(Reason.NO_ROUTE, method="GET", path="/v1/x"), "Invalid URL (GET /v1/x)."),
        (door_error(Reason.BODY_TOO_LARGE, limit=10),
         "The request body is too large: the limit is 10 bytes."),
        (from_grpc_status(C.DEADLINE_EXCEEDED, "deadline hit in 10.0.0.1", ()),
         "The request timed out."),
        (from_grpc_status(C.NOT_FOUND, "", ()), "Invalid request."),
        (from_grpc_status(C.INTERNAL, None, ()),
         "The server had an error while processing your request."),
    ],
)  # fmt: skip
def test_openai_wording(error: HttpError, message: str) -> None:
    assert OPENAI.describe(error).message == message


def test_the_core_chooses_code_and_type_when_it_gives_them() -> None:
    error = HttpError(422, message="m", code="content_policy_violation", type="user_error")
    assert OPENAI.describe(error) == ErrorFields(
        "m", "user_error", None, "content_policy_violation"
    )


def test_error_body_never_fails() -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    unserializable = HttpError(500, message=Hostile())  # type: ignore[arg-type]
    assert OPENAI.error_body(unserializable) == OPENAI.fallback_body
    missing_fact = door_error(Reason.NO_ROUTE)  # its wording needs method and path
    assert OPENAI.error_body(missing_fact) == OPENAI.fallback_body
    incomplete = dataclasses.replace(OPENAI, messages={})
    assert incomplete.error_body(door_error(Reason.INVALID_JSON)) == OPENAI.fallback_body
    assert json.loads(OPENAI.fallback_body)["error"]["type"] == "server_error"


def test_a_dialect_is_data() -> None:
    terse = Dialect(
        type_names=dict.fromkeys(C, "failure"),
        messages=dict.fromkeys(Reason, "no ({param})"),
        codes={},
        status_messages=dict.fromkeys(C, "generic"),
        envelope=lambda f: {"problem": f.message, "kind": f.type},
        fallback_body=b"{}",
    )
    assert json.loads(terse.error_body(door_error(Reason.UNKNOWN_PARAMETER, param="x"))) == {
        "problem": "no (x)",
        "kind": "failure",
    }
    assert json.loads(terse.error_body(from_grpc_status(C.UNAVAILABLE, "hidden", ()))) == {
        "problem": "generic",
        "kind": "failure",
    }
