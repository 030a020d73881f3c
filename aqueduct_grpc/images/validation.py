"""Checks on a GenerateImagesRequest that hold for every model, before it is admitted.

Only what holds for every model is checked here (required prompt, n range,
unsupported modes); model-specific values (sizes, qualities) are the
upstream's to judge, and its error comes back to the caller unchanged.
"""

from __future__ import annotations

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import ModelConfig
from aqueduct_grpc.errors import GatewayError, invalid_argument

__all__ = ["MAX_IMAGES", "MAX_PARTIAL_IMAGES", "MAX_PROMPT_CHARS", "validate"]

MAX_IMAGES = 10
MAX_PARTIAL_IMAGES = 3
MAX_PROMPT_CHARS = 32_000


def _invalid(message: str, param: str, code: str) -> GatewayError:
    # The OpenAI code this gateway answers with, as the reason (upper-cased).
    return invalid_argument(message, param, reason=code.upper())


def validate(
    request: images_pb2.GenerateImagesRequest, model: ModelConfig, *, streaming: bool = False
) -> None:
    """Raises INVALID_ARGUMENT naming the field when the request cannot be served.

    `streaming` says the request came through StreamGenerateImages.
    """
    if not request.prompt.strip():
        raise _invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if len(request.prompt) > MAX_PROMPT_CHARS:
        raise _invalid(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{MAX_PROMPT_CHARS}, but got a string with length {len(request.prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )
    if request.HasField("n") and not 1 <= request.n <= MAX_IMAGES:
        raise _invalid(
            f"Invalid 'n': integer must be between 1 and {MAX_IMAGES}, got {request.n}.",
            "n",
            "integer_out_of_range",
        )
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
        # The HTTP door routes `stream: true` to StreamGenerateImages itself.
        raise _invalid(
            "GenerateImages does not stream; call StreamGenerateImages for a stream.",
            "stream",
            "unsupported_value",
        )
    if request.HasField("response_format") and request.response_format not in ("b64_json", "url"):
        raise _invalid(
            f"Invalid value: '{request.response_format}'. "
            "Supported values are: 'b64_json' and 'url'.",
            "response_format",
            "invalid_value",
        )
    extras = request.extra_parameters.fields
    if extras and model.unknown_parameters == "reject":
        name = sorted(extras)[0]
        raise _invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")


def _validate_streaming(request: images_pb2.GenerateImagesRequest, model: ModelConfig) -> None:
    if not model.supports_streaming:
        raise _invalid(
            f"The model '{model.name}' does not support streaming; omit 'stream'.",
            "stream",
            "unsupported_value",
        )
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
