"""Checks on a GenerateImagesRequest that hold for every model, before it is admitted.

Only what holds for every model is checked here (required prompt, n range,
unsupported modes, the length of every string the usage row keeps);
model-specific values (sizes, qualities) are the upstream's to judge, and its
error comes back to the caller unchanged.
"""

from __future__ import annotations

import math
import re

import sqlalchemy as sa
from google.protobuf import struct_pb2

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import ModelConfig
from aqueduct_grpc.errors import QUOTED_CHARS, GatewayError, clipped, invalid_argument, quoted
from aqueduct_grpc.storage.database import usage_table

__all__ = [
    "MAX_FORWARDED_BYTES",
    "MAX_IMAGES",
    "MAX_MODEL_CHARS",
    "MAX_PARTIAL_IMAGES",
    "MAX_PROMPT_CHARS",
    "STRING_BOUNDS",
    "check_model_name",
    "storable",
    "validate",
]

MAX_IMAGES = 10
MAX_PARTIAL_IMAGES = 3
MAX_PROMPT_CHARS = 32_000

MAX_MODEL_CHARS = 128
"""The longest model name a request may give (OpenAI documents none).

Kept below the usage column `requested_model` (200): the row keeps a name cut
to its column, and the cut name must still be over this bound to be refused.
"""

MAX_FORWARDED_BYTES = 256 * 1024
"""The most the parameters a model forwards unread may take, in all (encoded).

Far more than any image parameter needs, and far less than what makes an
upstream request a bulk upload (aiohttp warns from 1 MiB).
"""

STRING_BOUNDS = {
    # OpenAI documents no bound for these; each fits its usage column.
    "size": 32,
    "quality": 32,
    "user": 256,
    # OpenAI's documented maximum.
    "safety_identifier": 64,
}
"""The longest value of each string field a usage row keeps (besides `model`)."""

# Enumerated strings the upstream judges (complexity, effort): far longer than any value.
_SHORT_CHARS = 32


def storable(value: str, column: str) -> str:
    """`value` as the usage column `column` can hold it: cut to its length, NUL replaced.

    PostgreSQL's text cannot hold NUL; SQLite would keep any length.
    """
    kind = usage_table.c[column].type
    limit = kind.length if isinstance(kind, sa.String) and kind.length else len(value)
    return clipped(value, limit).replace("\x00", "\ufffd")


# Names a gRPC caller could also put among the unknown parameters; forwarded,
# they would skip the checks above (an `n` of 1,000, a `stream` the answer is
# not read as) and what admission charged.
_DECLARED = {
    message.DESCRIPTOR.full_name: frozenset(f.name for f in message.DESCRIPTOR.fields)
    for message in (images_pb2.GenerateImagesRequest, images_pb2.EditImagesRequest)
}


# What a multipart field name may be (its Content-Disposition header quotes it).
_FORM_NAME = re.compile(r"[!#-~]+")


def _declared(
    request: images_pb2.GenerateImagesRequest | images_pb2.EditImagesRequest,
) -> frozenset[str]:
    return _DECLARED[request.DESCRIPTOR.full_name]


def _invalid(message: str, param: str, code: str) -> GatewayError:
    # The OpenAI code this gateway answers with, as the reason (upper-cased).
    return invalid_argument(message, param, reason=code.upper())


def _too_long(param: str, limit: int, length: int | None = None) -> GatewayError:
    got = "" if length is None else f", but got a string with length {length} instead"
    return _invalid(
        f"Invalid '{param}': string too long. Expected a string with maximum length {limit}{got}.",
        param,
        "string_above_max_length",
    )


def check_model_name(name: str) -> None:
    """Raises INVALID_ARGUMENT when `name` is longer than any model name may be.

    The name may be the usage row's copy, cut to its column, so the message
    does not say how long it was.
    """
    if len(name) > MAX_MODEL_CHARS:
        raise _too_long("model", MAX_MODEL_CHARS)


def validate(
    request: images_pb2.GenerateImagesRequest | images_pb2.EditImagesRequest,
    model: ModelConfig,
    *,
    streaming: bool = False,
) -> None:
    """Raises INVALID_ARGUMENT naming the field when the request cannot be served.

    A generation and an edit share these parameters (same names). `streaming`
    says the request came through the method's streaming twin.
    """
    if not request.HasField("prompt"):
        raise _invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if not request.prompt.strip():
        # OpenAI's shape for "" (a prompt of spaces describes nothing either).
        raise _invalid("Invalid 'prompt': empty string.", "prompt", "empty_string")
    if len(request.prompt) > MAX_PROMPT_CHARS:
        raise _too_long("prompt", MAX_PROMPT_CHARS, len(request.prompt))
    for name, limit in STRING_BOUNDS.items():
        if request.HasField(name) and len(value := getattr(request, name)) > limit:
            raise _too_long(name, limit, len(value))
    if request.HasField("n") and not 1 <= request.n <= MAX_IMAGES:
        raise _invalid(
            f"Invalid 'n': integer must be between 1 and {MAX_IMAGES}, got {request.n}.",
            "n",
            "integer_out_of_range",
        )
    for name in ("frame_count", "frame_duration_ms"):
        if request.HasField(name) and (value := getattr(request, name)) < 1:
            raise _invalid(
                f"Invalid {quoted(name)}: integer must be at least 1, got {value}.",
                name,
                "integer_below_min_value",
            )
    if request.HasField("complexity") and len(request.complexity) > _SHORT_CHARS:
        raise _too_long("complexity", _SHORT_CHARS, len(request.complexity))
    if request.HasField("svg"):
        _validate_svg(request.svg)
    if request.HasField("output_compression") and not 0 <= request.output_compression <= 100:
        raise _invalid(
            f"Invalid 'output_compression': integer must be between 0 and 100, "
            f"got {request.output_compression}.",
            "output_compression",
            "integer_out_of_range",
        )
    if streaming:
        _validate_streaming(request, model)
    elif request.stream:
        # The HTTP door routes `stream: true` to the streaming twin itself.
        method = type(request).__name__.removesuffix("Request")
        raise _invalid(
            f"{method} does not stream; call Stream{method} for a stream.",
            "stream",
            "unsupported_value",
        )
    if request.HasField("response_format") and request.response_format not in ("b64_json", "url"):
        raise _invalid(
            f"Invalid value: {quoted(request.response_format)}. "
            "Supported values are: 'b64_json' and 'url'.",
            "response_format",
            "invalid_value",
        )
    _validate_extras(
        request.extra_parameters,
        model,
        _declared(request),
        as_form=isinstance(request, images_pb2.EditImagesRequest),
    )


def _validate_svg(svg: images_pb2.SvgOptions) -> None:
    if not svg.HasField("model"):
        raise _invalid(
            "Missing required parameter: 'svg.model'.", "svg.model", "missing_required_parameter"
        )
    if len(svg.model) > MAX_MODEL_CHARS:
        raise _too_long("svg.model", MAX_MODEL_CHARS, len(svg.model))
    effort = svg.reasoning.effort
    if svg.reasoning.HasField("effort") and len(effort) > _SHORT_CHARS:
        raise _too_long("svg.reasoning.effort", _SHORT_CHARS, len(effort))


def _validate_extras(
    extras: struct_pb2.Struct, model: ModelConfig, declared_names: frozenset[str], *, as_form: bool
) -> None:
    if not extras.fields:
        return
    names = sorted(extras.fields)
    if model.unknown_parameters == "reject":
        name = names[0]
        raise _invalid(
            f"Unknown parameter: {quoted(name)}.", clipped(name, QUOTED_CHARS), "unknown_parameter"
        )
    if as_form and any(not _FORM_NAME.fullmatch(name) for name in names):
        name = next(n for n in names if not _FORM_NAME.fullmatch(n))
        raise _invalid(
            f"Invalid {quoted(name)}: an edit forwards its parameters as form fields, whose "
            "names cannot hold quotes, spaces or control characters.",
            clipped(name, QUOTED_CHARS),
            "invalid_value",
        )
    declared = sorted(declared_names.intersection(names))
    if declared:
        raise _invalid(
            f"Invalid {quoted(declared[0])}: a declared parameter, "
            "not one to forward among the unknown ones.",
            declared[0],
            "invalid_value",
        )
    if extras.ByteSize() > MAX_FORWARDED_BYTES:
        name = max(names, key=lambda n: extras.fields[n].ByteSize())
        raise _invalid(
            f"Invalid {quoted(name)}: too large to forward; the parameters this gateway "
            f"forwards unread may take {MAX_FORWARDED_BYTES} bytes in all.",
            clipped(name, QUOTED_CHARS),
            "invalid_value",
        )
    # Forwarded as JSON, which has no NaN or Infinity (only a gRPC caller can send them).
    for name in names:
        if not _finite(extras.fields[name]):
            raise _invalid(
                f"Invalid {quoted(name)}: NaN and Infinity are not JSON numbers.",
                clipped(name, QUOTED_CHARS),
                "invalid_value",
            )


def _finite(value: struct_pb2.Value) -> bool:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return math.isfinite(value.number_value)
    if kind == "struct_value":
        return all(_finite(v) for v in value.struct_value.fields.values())
    if kind == "list_value":
        return all(_finite(v) for v in value.list_value.values)
    return True


def _validate_streaming(
    request: images_pb2.GenerateImagesRequest | images_pb2.EditImagesRequest, model: ModelConfig
) -> None:
    if request.HasField("partial_images") and not (
        0 <= request.partial_images <= MAX_PARTIAL_IMAGES
    ):
        raise _invalid(
            f"Invalid 'partial_images': integer must be between 0 and {MAX_PARTIAL_IMAGES}, "
            f"got {request.partial_images}.",
            "partial_images",
            "integer_out_of_range",
        )
    if request.HasField("response_format") and request.response_format == "url":
        raise _invalid(
            "Streamed images arrive inline: response_format 'url' cannot be used with 'stream'.",
            "response_format",
            "unsupported_value",
        )
