"""An edit's input images, checked before the edit is admitted.

Images arrive four ways: multipart file parts streamed in pieces
(`UploadEditImages`, spooled by `uploaded_files`), gRPC bytes (`image`, with
`data`), and the JSON form's references (`images`, with `image_url`).
`data:` URLs are decoded here. http(s) URLs arrive already fetched
(`image_fetcher`, from the hosts the operator allows only), their bytes in
`data`, so they are checked exactly as uploads are. Any other URL (`ftp:`, or
an http(s) URL nothing fetched) is a clear 400, and so is a `file_id`: it
names OpenAI's Files API, which this gateway has not.

The result is an `Edit`: the request with every input as an `ImageFile`,
one list in the order sent, so backends see one shape whatever the caller
sent. Only headers are read to check them: a spooled upload stays on disk.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

import pybase64
from PIL import Image, UnidentifiedImageError

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.errors import GatewayError, invalid_argument
from aqueduct_grpc.image_formats import WEBP_HEADER_BYTES, sniff_image_type, webp_size

__all__ = [
    "MAX_INPUT_IMAGES",
    "MAX_INPUT_IMAGE_BYTES",
    "Edit",
    "ImageFile",
    "decode_inputs",
    "too_large",
]

MAX_INPUT_IMAGES = 16
MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024  # OpenAI's limit for GPT image models
MAX_INPUT_PIXELS = 8192 * 8192
_FORMATS = ("png", "jpeg", "webp")
_DATA_URL = "data:"
_MAGIC_BYTES = 16  # enough for every format's magic number (`sniff_image_type`)


@dataclass(frozen=True)
class ImageFile:
    """One checked input image: its bytes, in memory or spooled to disk, and their type.

    Attributes:
        file: The bytes, read from the start by `opened()` and `read()`.
        size: Their length.
        content_type: What the bytes are (`image/png`), whatever the client said.
    """

    file: IO[bytes]
    size: int
    content_type: str

    def opened(self) -> IO[bytes]:
        """The file, at its start (for one reader at a time)."""
        self.file.seek(0)
        return self.file

    def read(self) -> bytes:
        """The whole image, in memory."""
        return self.opened().read()


@dataclass(frozen=True)
class Edit:
    """An edit as backends take it: the request, and its inputs checked.

    Attributes:
        request: The request; backends read its parameters, not its images.
        images: The images to edit, in the order sent (uploads, then references).
        mask: Transparent where the first image is edited; None without one.
        markup: The markup overlay; None without one.
        size: The first image's width and height.
    """

    request: images_pb2.EditImagesRequest
    images: tuple[ImageFile, ...]
    mask: ImageFile | None
    markup: ImageFile | None
    size: tuple[int, int]


# A streamed upload's file by its field and index ("image", 0), as spooled.
Uploads = Mapping[tuple[str, int], tuple[IO[bytes], int]]


def decode_inputs(request: images_pb2.EditImagesRequest, uploads: Uploads | None = None) -> Edit:
    """Checks the request's images (decoding data: URLs); returns the edit backends take.

    Raises INVALID_ARGUMENT naming the field: no image or more than 16, an
    input that is not a PNG, JPEG or WebP image or is too large, a reference
    the gateway cannot follow, or a mask that is not a PNG of the first
    image's size; or an uploaded file that no entry of the request is for.

    Args:
        request: The request.
        uploads: The files streamed for its entries (`UploadEditImages`), by
            field and index; their entries' `data` is empty.
    """
    uploads = uploads or {}
    inputs = [(image, "image", i) for i, image in enumerate(request.image)]
    inputs += [(image, "images", i) for i, image in enumerate(request.images)]
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
    if request.HasField("mask") and request.HasField("markup"):
        raise _invalid(
            "Invalid 'markup': send a mask or a markup, not both.", "markup", "invalid_value"
        )
    entries = {(name, i) for _, name, i in inputs}
    entries.update((name, 0) for name in ("mask", "markup") if request.HasField(name))
    for name, index in uploads:
        if (name, index) not in entries:
            raise _invalid(
                f"Invalid '{name}': a file was sent for {name}[{index}], which the request "
                "does not have.",
                name,
                "invalid_value",
            )
    images = [_decode(image, f"{name}[{i}]", uploads.get((name, i))) for image, name, i in inputs]
    sizes = [size for _, size in images]
    overlays: dict[str, ImageFile] = {}
    for name in ("mask", "markup"):
        # Both are transparent PNGs over the first image: its size, with alpha.
        if request.HasField(name):
            overlays[name] = _check_overlay(
                getattr(request, name), name, uploads.get((name, 0)), sizes[0]
            )
    return Edit(
        request=request,
        images=tuple(file for file, _ in images),
        mask=overlays.get("mask"),
        markup=overlays.get("markup"),
        size=sizes[0],
    )


def _check_overlay(
    image: images_pb2.InputImage,
    param: str,
    upload: tuple[IO[bytes], int] | None,
    size: tuple[int, int],
) -> ImageFile:
    file, own = _decode(image, param, upload)
    if file.content_type != "image/png":
        raise _invalid(f"Invalid '{param}': it must be a PNG image.", param, "invalid_value")
    if own != size:
        raise _invalid(
            f"Invalid '{param}': it is {own[0]}x{own[1]}, but the image is {size[0]}x{size[1]};"
            f" the {param} must be the same size as the first image.",
            param,
            "invalid_value",
        )
    with Image.open(file.opened()) as picture:
        has_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
    if not has_alpha:
        # Without transparency it marks nothing: the edit would silently do nothing.
        raise _invalid(
            f"Invalid '{param}': it needs an alpha channel (transparent where it applies).",
            param,
            "invalid_value",
        )
    return file


def _decode(
    image: images_pb2.InputImage, param: str, upload: tuple[IO[bytes], int] | None
) -> tuple[ImageFile, tuple[int, int]]:
    """Checks one input: its bytes (uploaded, in `data`, or a data: URL's) and its header.

    Returns it as a file, with its width and height.
    """
    if image.HasField("file_id"):
        raise _invalid(
            f"Invalid '{param}': file_id references need OpenAI's Files API, which this "
            "gateway does not offer; upload the image or send it as a data: URL.",
            param,
            "invalid_value",
        )
    if upload is not None:
        if image.data or image.HasField("image_url"):
            raise _invalid(
                f"Invalid '{param}': its file was uploaded; send no data or image_url with it.",
                param,
                "invalid_value",
            )
        return _checked(upload[0], upload[1], param)
    if image.HasField("image_url"):
        if image.data:
            raise _invalid(
                f"Invalid '{param}': send the image's bytes or its image_url, not both.",
                param,
                "invalid_value",
            )
        data = _from_url(image.image_url, param)
    else:
        data = image.data  # the one copy out of the message
    return _checked(io.BytesIO(data), len(data), param)


def _checked(file: IO[bytes], size: int, param: str) -> tuple[ImageFile, tuple[int, int]]:
    """The image in `file` (`size` bytes) checked: its length, format and header."""
    if not size:
        raise _invalid(f"Invalid '{param}': the image is empty.", param, "invalid_value")
    if size > MAX_INPUT_IMAGE_BYTES:
        raise too_large(param, size)
    file.seek(0)
    try:
        kind = sniff_image_type(file.read(_MAGIC_BYTES))
    except ValueError:
        kind = ""
    if kind not in _FORMATS:
        raise _invalid(
            f"Invalid '{param}': not a PNG, JPEG or WebP image.", param, "invalid_image_format"
        )
    checked = ImageFile(file, size, f"image/{kind}")
    return checked, _size(checked, param)  # its header must read, or no backend can use it


def too_large(param: str, size: int, *, at_least: bool = False) -> GatewayError:
    """The error for an input image of `size` bytes (`at_least`: or more), over the limit."""
    more = " or more" if at_least else ""
    return _invalid(
        f"Invalid '{param}': the image is {size} bytes{more}; at most "
        f"{MAX_INPUT_IMAGE_BYTES} are accepted.",
        param,
        "file_too_large",
    )


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


def _size(image: ImageFile, param: str) -> tuple[int, int]:
    """Width and height from the image's header (Pillow reads no pixels for it).

    A WebP's come from `webp_size`: Pillow would read the whole file into
    memory to open it, twice over.
    """
    try:
        if image.content_type == "image/webp":
            width, height = webp_size(image.opened().read(WEBP_HEADER_BYTES))
            if not width or not height:
                raise ValueError("an empty picture")
        else:
            with Image.open(image.opened()) as picture:
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
