"""Which image format some bytes hold, from their magic number.

Shared by the image links (a stored file's name and content type) and the
upstreams (bytes downloaded from an upstream must be an image); and a WebP
image's size from its header, which Pillow reads only by reading the whole
file into memory, twice.
"""

from __future__ import annotations

__all__ = ["WEBP_HEADER_BYTES", "sniff_image_type", "webp_size"]

WEBP_HEADER_BYTES = 30
"""What `webp_size` reads: the RIFF header and the start of the first chunk."""


def sniff_image_type(data: bytes) -> str:
    """The format of image bytes ("png", "jpeg", "webp", "gif"), from their magic number."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise ValueError("not a PNG, JPEG, WebP or GIF image")


def webp_size(header: bytes) -> tuple[int, int]:
    """A WebP image's width and height, from its first `WEBP_HEADER_BYTES` bytes.

    The first chunk says it (Google's WebP container and bitstream
    specifications): `VP8X` (extended: animation, alpha) its canvas, `VP8 `
    (lossy) its key frame's header, `VP8L` (lossless) its first 28 bits.

    Raises:
        ValueError: The bytes are none of the three.
    """
    chunk = header[12:16]
    if len(header) >= WEBP_HEADER_BYTES and chunk == b"VP8X":
        width = 1 + int.from_bytes(header[24:27], "little")
        return width, 1 + int.from_bytes(header[27:30], "little")
    if len(header) >= WEBP_HEADER_BYTES and chunk == b"VP8 " and header[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(header[26:28], "little") & 0x3FFF
        return width, int.from_bytes(header[28:30], "little") & 0x3FFF
    if len(header) >= 25 and chunk == b"VP8L" and header[20] == 0x2F:
        bits = int.from_bytes(header[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ValueError("not a WebP image whose size its header gives")
