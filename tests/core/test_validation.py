"""Checks that hold for every model, as units: messages, params and bounds."""

from __future__ import annotations

import math

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import ConfigError, ModelConfig
from aqueduct_grpc.errors import QUOTED_CHARS, GatewayError
from aqueduct_grpc.images.catalog import ModelCatalog
from aqueduct_grpc.images.validation import (
    MAX_FORWARDED_BYTES,
    MAX_MODEL_CHARS,
    STRING_BOUNDS,
    check_model_name,
    storable,
    validate,
)
from aqueduct_grpc.storage.database import usage_table

Request = images_pb2.GenerateImagesRequest

REJECTING = ModelConfig(name="strict", deployments=())
FORWARDING = ModelConfig(name="open", deployments=(), unknown_parameters="forward")

# The request field each bound covers, and the usage column that keeps it.
COLUMNS = {"size": "size", "quality": "quality", "user": "end_user"}
COLUMNS["safety_identifier"] = "safety_identifier"


def refusal(request: Request, model: ModelConfig = REJECTING) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        validate(request, model)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def column_length(column: str) -> int:
    kind = usage_table.c[column].type
    assert isinstance(kind, sa.String) and kind.length
    return kind.length


def test_a_missing_prompt_and_an_empty_one_get_openais_two_messages() -> None:
    missing = refusal(Request())
    assert (missing.message, missing.param, missing.reason) == (
        "Missing required parameter: 'prompt'.",
        "prompt",
        "MISSING_REQUIRED_PARAMETER",
    )
    for blank in ("", "  \n"):
        empty = refusal(Request(prompt=blank))
        assert (empty.message, empty.param, empty.reason) == (
            "Invalid 'prompt': empty string.",
            "prompt",
            "EMPTY_STRING",
        )


def test_every_bound_fits_the_column_that_keeps_the_value() -> None:
    assert set(STRING_BOUNDS) == set(COLUMNS)
    for field, limit in STRING_BOUNDS.items():
        assert limit <= column_length(COLUMNS[field])
    # The row keeps the model name cut to its column; cut, it must still be over the bound.
    assert MAX_MODEL_CHARS < column_length("requested_model")


@pytest.mark.parametrize("field", list(STRING_BOUNDS))
def test_a_stored_string_over_its_bound_is_refused_naming_the_field(field: str) -> None:
    limit = STRING_BOUNDS[field]
    validate(Request(prompt="x", **{field: "v" * limit}), REJECTING)  # at the bound: fine
    error = refusal(Request(prompt="x", **{field: "v" * 300_000}))
    assert (error.param, error.reason) == (field, "STRING_ABOVE_MAX_LENGTH")
    assert error.message == (
        f"Invalid '{field}': string too long. Expected a string with maximum length {limit}, "
        "but got a string with length 300000 instead."
    )


def test_a_model_name_over_its_bound_is_refused() -> None:
    check_model_name("m" * MAX_MODEL_CHARS)
    with pytest.raises(GatewayError) as caught:
        check_model_name("m" * (MAX_MODEL_CHARS + 1))
    assert (caught.value.param, caught.value.reason) == ("model", "STRING_ABOVE_MAX_LENGTH")
    assert "m" * 10 not in caught.value.message


def test_storable_cuts_to_the_column_and_drops_nul() -> None:
    kept = storable("u" * 300_000, "end_user")
    assert len(kept) == column_length("end_user") and kept.endswith("…")
    assert storable("a\x00b", "end_user") == "a\ufffdb"
    assert storable("1024x1024", "size") == "1024x1024"


def test_an_unknown_parameter_with_a_long_name_is_quoted_short() -> None:
    extras = struct_pb2.Struct()
    extras.update({"k" * 9_000: 1})
    error = refusal(Request(prompt="x", extra_parameters=extras))
    assert error.reason == "UNKNOWN_PARAMETER"
    assert len(error.message) < 100 and error.param is not None
    assert len(error.param) == QUOTED_CHARS


def test_a_long_response_format_is_quoted_short() -> None:
    error = refusal(Request(prompt="x", response_format="r" * 9_000))
    assert error.param == "response_format" and len(error.message) < 150


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_forwarded_parameters_must_be_json_numbers(number: float) -> None:
    extras = struct_pb2.Struct()
    extras.update({"fine": 1.5, "deep": {"list": [1, {"x": number}]}})
    error = refusal(Request(prompt="x", extra_parameters=extras), FORWARDING)
    assert (error.param, error.reason) == ("deep", "INVALID_VALUE")
    extras["deep"] = "fine"
    validate(Request(prompt="x", extra_parameters=extras), FORWARDING)


def test_a_configured_model_name_no_request_could_give_is_refused_at_start_up() -> None:
    name = "m" * (MAX_MODEL_CHARS + 1)
    with pytest.raises(ConfigError, match="longer than 128 characters"):
        ModelCatalog((ModelConfig(name=name, deployments=()),), default_model=name)


def test_forwarded_parameters_are_bounded_in_all_naming_the_largest() -> None:
    extras = struct_pb2.Struct()
    extras.update({"small": "s" * 1_000, "big": "b" * MAX_FORWARDED_BYTES})
    error = refusal(Request(prompt="x", extra_parameters=extras), FORWARDING)
    assert (error.param, error.reason) == ("big", "INVALID_VALUE")
    extras["big"] = "b" * (MAX_FORWARDED_BYTES // 2)
    validate(Request(prompt="x", extra_parameters=extras), FORWARDING)


def test_a_declared_parameter_is_not_forwarded_among_the_unknown_ones() -> None:
    extras = struct_pb2.Struct()
    extras.update({"input_fidelity": "high", "quality": []})
    error = refusal(Request(prompt="x", extra_parameters=extras), FORWARDING)
    assert (error.param, error.reason) == ("quality", "INVALID_VALUE")
