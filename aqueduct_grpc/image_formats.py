"""Which image format some bytes hold, from their magic number.

Shared by the image links (a stored file's name and content type) and the
upstreams (bytes downloaded from an upstream must be an image).
"""

from __future__ import annotations

__all__ = ["sniff_image_type"]


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
