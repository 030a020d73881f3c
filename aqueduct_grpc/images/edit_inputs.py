"""An edit's input images, checked and decoded before the edit is admitted.

Images arrive three ways: multipart file parts and gRPC bytes (`image`, with
`data`), and the JSON form's references (`images`, with `image_url`).
`data:` URLs are decoded here; http(s) URLs would need the gateway to fetch
from hosts the operator allows, which it does not do yet, and `file_id`s
name OpenAI's Files API, which this gateway has not: both are clear 400s.
Afterwards `request.image` holds every input as bytes, so backends see one
shape whatever the caller sent.
"""

from __future__ import annotations

import binascii
import io

import pybase64
from PIL import Image, UnidentifiedImageError

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.errors import GatewayError, invalid_argument
from aqueduct_grpc.image_formats import sniff_image_type

__all__ = ["MAX_INPUT_IMAGES", "MAX_INPUT_IMAGE_BYTES", "decode_inputs"]

MAX_INPUT_IMAGES = 16
MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024  # OpenAI's limit for GPT image models
MAX_INPUT_PIXELS = 8192 * 8192
_FORMATS = ("png", "jpeg", "webp")
_DATA_URL = "data:"


def decode_inputs(request: images_pb2.EditImagesRequest) -> tuple[int, int]:
    """Checks and decodes the request's images in place; returns the first image's size.

    Raises INVALID_ARGUMENT naming the field: no image or more than 16, an
    input that is not a PNG, JPEG or WebP image or is too large, a reference
    the gateway cannot follow, or a mask that is not a PNG of the first
    image's size.
    """
    inputs = [*request.image, *request.images]
    field = "image" if request.image else "images"
    if not inputs:
        raise _invalid(
            "Missing required parameter: 'image'.", "image", "missing_required_parameter"
        )
    if len(inputs) > MAX_INPUT_IMAGES:
        raise _invalid(
            f"Invalid '{field}': at most {MAX_INPUT_IMAGES} images, got {len(inputs)}.",
            field,
            "array_above_max_length",
        )
    sizes = [_decode(image, f"{field}[{index}]") for index, image in enumerate(inputs)]
    if request.images:
        # References now hold their bytes: one list, in the order sent. Uploads
        # stay where they are: copying megabytes per image is what to avoid.
        request.image.extend(request.images)
        del request.images[:]
    if request.HasField("mask"):
        mask_size = _decode(request.mask, "mask")
        if request.mask.content_type != "image/png":
            raise _invalid("Invalid 'mask': the mask must be a PNG image.", "mask", "invalid_value")
        if mask_size != sizes[0]:
            raise _invalid(
                f"Invalid 'mask': it is {mask_size[0]}x{mask_size[1]}, but the image is "
                f"{sizes[0][0]}x{sizes[0][1]}; the mask must be the same size as the first image.",
                "mask",
                "invalid_value",
            )
    if request.HasField("markup"):
        _decode(request.markup, "markup")
    return sizes[0]


def _decode(image: images_pb2.InputImage, param: str) -> tuple[int, int]:
    """Checks the image in place (a data: URL decoded into `data`), sets its content type.

    Returns its width and height.
    """
    if image.HasField("file_id"):
        raise _invalid(
            f"Invalid '{param}': file_id references need OpenAI's Files API, which this "
            "gateway does not offer; upload the image or send it as a data: URL.",
            param,
            "invalid_value",
        )
    if image.HasField("image_url"):
        image.data = _from_url(image.image_url, param)
        image.ClearField("image_url")
    data = image.data
    if not data:
        raise _invalid(f"Invalid '{param}': the image is empty.", param, "invalid_value")
    if len(data) > MAX_INPUT_IMAGE_BYTES:
        raise _invalid(
            f"Invalid '{param}': the image is {len(data)} bytes; at most "
            f"{MAX_INPUT_IMAGE_BYTES} are accepted.",
            param,
            "file_too_large",
        )
    try:
        kind = sniff_image_type(data)
    except ValueError:
        kind = ""
    if kind not in _FORMATS:
        raise _invalid(
            f"Invalid '{param}': not a PNG, JPEG or WebP image.", param, "invalid_image_format"
        )
    image.content_type = f"image/{kind}"  # what the bytes are, whatever the client said
    return _size(data, param)  # its header must read, or no backend can use it


def _from_url(url: str, param: str) -> bytes:
    if not url.startswith(_DATA_URL):
        raise _invalid(
            f"Invalid '{param}.image_url': this gateway does not fetch images from URLs; "
            "send a data: URL (data:image/png;base64,...) or upload the file.",
            f"{param}.image_url",
            "invalid_value",
        )
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise _invalid(
            f"Invalid '{param}.image_url': expected data:image/...;base64,<data>.",
            f"{param}.image_url",
            "invalid_value",
        )
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(
            f"Invalid '{param}.image_url': its data is not valid base64.",
            f"{param}.image_url",
            "invalid_value",
        ) from None


def _size(data: bytes, param: str) -> tuple[int, int]:
    """Width and height from the image's header (Pillow reads no pixels for it)."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise _invalid(
            f"Invalid '{param}': the image cannot be read.", param, "invalid_image_format"
        ) from None
    if width * height > MAX_INPUT_PIXELS:
        # A few kilobytes of PNG can claim gigapixels; decoding them would not fit.
        raise _invalid(
            f"Invalid '{param}': {width}x{height} pixels; at most {MAX_INPUT_PIXELS} are accepted.",
            param,
            "image_too_large",
        )
    return width, height


def _invalid(message: str, param: str, code: str) -> GatewayError:
    return invalid_argument(message, param, reason=code.upper())
