"""The built-in offline image model: a DEMO/TEST backend, not a generator.

It renders a real picture of the requested size and format locally (a
gradient seeded by the prompt, with the prompt written on it) so the gateway
does its whole job on a machine with no API key and no network. Rendering
runs in a worker thread so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import textwrap
import time
from typing import Any

import grpc
from PIL import Image, ImageDraw, ImageOps

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import GatewayError

__all__ = ["SIZES", "BuiltinImageBackend"]

SIZES = {
    "256x256": (256, 256),
    "512x512": (512, 512),
    "1024x1024": (1024, 1024),
    "1536x1024": (1536, 1024),
    "1024x1536": (1024, 1536),
    "1792x1024": (1792, 1024),
    "1024x1792": (1024, 1792),
}
_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_VALUE", param=param
    )


class BuiltinImageBackend:
    """Renders placeholder images from the prompt; same answer shape as gpt-image-1."""

    async def generate(
        self, deployment: Deployment, body: dict[str, Any], timeout: float
    ) -> images_pb2.GenerateImagesResponse:
        """Renders `body["n"]` images as the OpenAI body asks."""
        size_name = body.get("size", "auto")
        if size_name == "auto":
            size_name = "1024x1024"
        if size_name not in SIZES:
            raise _invalid(
                f"Invalid value: '{size_name}'. Supported values are: "
                + ", ".join(f"'{s}'" for s in ["auto", *SIZES])
                + ".",
                "size",
            )
        output_format = body.get("output_format", "png")
        if output_format not in _FORMATS:
            raise _invalid(
                f"Invalid value: '{output_format}'. "
                "Supported values are: 'png', 'jpeg' and 'webp'.",
                "output_format",
            )
        background = body.get("background", "auto")
        if background == "transparent" and output_format == "jpeg":
            raise _invalid("Transparent background is not supported for jpeg.", "background")
        n = int(body.get("n", 1))
        quality = int(body.get("output_compression", 100))
        renders = [
            asyncio.to_thread(
                _render, body["prompt"], index, SIZES[size_name], output_format, background, quality
            )
            for index in range(n)
        ]
        images = await asyncio.wait_for(asyncio.gather(*renders), timeout)
        response = images_pb2.GenerateImagesResponse(
            created=int(time.time()),
            background="transparent" if background == "transparent" else "opaque",
            output_format=output_format,
            quality="medium" if body.get("quality", "auto") == "auto" else body["quality"],
            size=size_name,
        )
        for data in images:
            response.data.add(b64_json=data)
        return response


def _render(
    prompt: str,
    index: int,
    size: tuple[int, int],
    output_format: str,
    background: str,
    quality: int,
) -> bytes:
    seed = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    dark, light = (tuple(seed[0:3]), tuple(seed[3:6]))
    # A 256-pixel gradient scaled up: cheap, and no two prompts look alike.
    gradient = Image.linear_gradient("L").rotate(seed[6] % 4 * 90)
    picture = ImageOps.colorize(gradient, dark, light).resize(size, Image.Resampling.BILINEAR)
    if background == "transparent":
        picture = picture.convert("RGBA")
        picture.putalpha(Image.linear_gradient("L").resize(size))
    draw = ImageDraw.Draw(picture)
    caption = textwrap.fill(f"aqueduct demo #{index + 1}: {prompt}", width=max(20, size[0] // 12))
    draw.multiline_text(
        (16, 16), caption[:800], fill=(255, 255, 255), font_size=max(12, size[0] // 48)
    )
    buffer = io.BytesIO()
    if output_format == "png":
        picture.save(buffer, "PNG", compress_level=1)
    else:
        picture.save(buffer, _FORMATS[output_format], quality=max(1, quality))
    return buffer.getvalue()
