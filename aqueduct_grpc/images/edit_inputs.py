"""An edit's input images, checked and decoded before the edit is admitted.

Images arrive three ways: multipart file parts and gRPC bytes (`image`, with
`data`), and the JSON form's references (`images`, with `image_url`).
`data:` URLs are decoded here. http(s) URLs arrive already fetched
(`image_fetcher`, from the hosts the operator allows only), their bytes in
`data`, so they are checked exactly as uploads are. Any other URL (`ftp:`, or
an http(s) URL nothing fetched) is a clear 400, and so is a `file_id`: it
names OpenAI's Files API, which this gateway has not. Afterwards
`request.image` holds every input as bytes, so backends see one shape
whatever the caller sent.
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
    inputs = [(image, f"image[{i}]") for i, image in enumerate(request.image)]
    inputs += [(image, f"images[{i}]") for i, image in enumerate(request.images)]
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
    sizes = [_decode(image, param) for image, param in inputs]
    if request.images:
        # References now hold their bytes: one list, in the order sent. Uploads
        # stay where they are: copying megabytes per image is what to avoid.
        request.image.extend(request.images)
        del request.images[:]
    if request.HasField("mask") and request.HasField("markup"):
        raise _invalid(
            "Invalid 'markup': send a mask or a markup, not both.", "markup", "invalid_value"
        )
    for name in ("mask", "markup"):
        # Both are transparent PNGs over the first image: its size, with alpha.
        if request.HasField(name):
            _check_overlay(getattr(request, name), name, sizes[0])
    return sizes[0]


def _check_overlay(image: images_pb2.InputImage, param: str, size: tuple[int, int]) -> None:
    own = _decode(image, param)
    if image.content_type != "image/png":
        raise _invalid(f"Invalid '{param}': it must be a PNG image.", param, "invalid_value")
    if own != size:
        raise _invalid(
            f"Invalid '{param}': it is {own[0]}x{own[1]}, but the image is {size[0]}x{size[1]};"
            f" the {param} must be the same size as the first image.",
            param,
            "invalid_value",
        )
    with Image.open(io.BytesIO(image.data)) as picture:
        has_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
    if not has_alpha:
        # Without transparency it marks nothing: the edit would silently do nothing.
        raise _invalid(
            f"Invalid '{param}': it needs an alpha channel (transparent where it applies).",
            param,
            "invalid_value",
        )


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
        if image.data:
            raise _invalid(
                f"Invalid '{param}': send the image's bytes or its image_url, not both.",
                param,
                "invalid_value",
            )
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
    # The scheme and ";base64" are case-insensitive (RFC 2397).
    if url[: len(_DATA_URL)].lower() != _DATA_URL:
        raise _invalid(
            f"Invalid '{param}.image_url': this gateway reads data: URLs, and http(s) URLs only "
            "from hosts its operator allows (gateway.fetch_image_hosts); send a data: URL "
            "(data:image/png;base64,...) or upload the file.",
            f"{param}.image_url",
            "invalid_value",
        )
    header, comma, payload = url.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        raise _invalid(
            f"Invalid '{param}.image_url': expected data:image/...;base64,<data>.",
            f"{param}.image_url",
            "invalid_value",
        )
    try:
        # Line breaks (MIME-style base64) and the URL-safe alphabet are common.
        compact = "".join(payload.split()).replace("-", "+").replace("_", "/")
        return pybase64.b64decode(compact, validate=True)
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
    except Image.DecompressionBombError:
        raise _invalid(
            f"Invalid '{param}': too many pixels; at most {MAX_INPUT_PIXELS} are accepted.",
            param,
            "image_too_large",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
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
