"""The built-in offline image model: a DEMO/TEST backend, not a generator.

It renders a real picture of the requested size and format locally (a
gradient seeded by the prompt, with the prompt written on it) so the gateway
does its whole job on a machine with no API key and no network. Rendering
runs in a worker thread so the event loop keeps serving other requests.
It streams too: partial images are coarser renders of the final picture,
each one finer than the last.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import textwrap
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageOps

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import invalid_argument, quoted
from aqueduct_grpc.upstreams.openai.wire import COMPLETED, PARTIAL_IMAGE

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
# Qualities asked for -> the one answered: always one of OpenAI's response values
# (low|medium|high|...), also for DALL-E's "standard" and "hd".
_QUALITIES = {
    "auto": "medium",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "standard": "medium",
    "hd": "high",
}


@dataclass(frozen=True)
class _Job:
    """What the request asks for, checked, with the defaults filled in."""

    prompt: str
    n: int
    size_name: str
    output_format: str
    background: str
    quality: str
    compression: int

    def render(self, index: int) -> bytes:
        return _render(
            self.prompt,
            index,
            SIZES[self.size_name],
            self.output_format,
            self.background,
            self.compression,
        )

    def echoed(self) -> dict[str, Any]:
        """The settings OpenAI reports beside the images."""
        return {
            "background": "transparent" if self.background == "transparent" else "opaque",
            "output_format": self.output_format,
            "quality": self.quality,
            "size": self.size_name,
        }


class BuiltinImageBackend:
    """Renders placeholder images from the prompt; same answer shape as gpt-image-1."""

    async def generate(
        self, request: images_pb2.GenerateImagesRequest, deployment: Deployment
    ) -> images_pb2.GenerateImagesResponse:
        """Renders the `n` images the request asks for."""
        job = _job(request)
        renders = [asyncio.to_thread(job.render, index) for index in range(job.n)]
        images = await asyncio.gather(*renders)
        response = images_pb2.GenerateImagesResponse(created=int(time.time()), **job.echoed())
        for data in images:
            response.data.add(b64_json=data)
        return response

    async def stream(
        self, request: images_pb2.GenerateImagesRequest, deployment: Deployment
    ) -> AsyncGenerator[images_pb2.StreamGenerateImagesResponse, None]:
        """Yields `partial_images` coarse renders, then the final image, for each image."""
        job = _job(request)
        partials = request.partial_images if request.HasField("partial_images") else 0
        echoed = job.echoed()
        for index in range(job.n):
            final = await asyncio.to_thread(job.render, index)
            for step in range(partials):
                # Blocks of 2^(partials - step + 2) pixels: each partial finer.
                block = 1 << (partials - step + 2)
                coarse = await asyncio.to_thread(_coarsen, final, block, job)
                yield images_pb2.StreamGenerateImagesResponse(
                    type=PARTIAL_IMAGE,
                    b64_json=coarse,
                    created_at=int(time.time()),
                    partial_image_index=step,
                    **echoed,
                )
            yield images_pb2.StreamGenerateImagesResponse(
                type=COMPLETED, b64_json=final, created_at=int(time.time()), **echoed
            )


def _job(request: images_pb2.GenerateImagesRequest) -> _Job:
    def given(name: str, default: str) -> str:
        return getattr(request, name) if request.HasField(name) else default

    size_name = given("size", "auto")
    if size_name == "auto":
        size_name = "1024x1024"
    if size_name not in SIZES:
        raise invalid_argument(
            f"Invalid value: {quoted(size_name)}. Supported values are: "
            + ", ".join(f"'{s}'" for s in ["auto", *SIZES])
            + ".",
            "size",
        )
    output_format = given("output_format", "png")
    if output_format not in _FORMATS:
        raise invalid_argument(
            f"Invalid value: {quoted(output_format)}. "
            "Supported values are: 'png', 'jpeg' and 'webp'.",
            "output_format",
        )
    background = given("background", "auto")
    if background == "transparent" and output_format == "jpeg":
        raise invalid_argument("Transparent background is not supported for jpeg.", "background")
    quality = _QUALITIES.get(given("quality", "auto"))
    if quality is None:
        raise invalid_argument(
            f"Invalid value: {quoted(given('quality', ''))}. Supported values are: "
            + ", ".join(f"'{q}'" for q in _QUALITIES)
            + ".",
            "quality",
        )
    return _Job(
        prompt=request.prompt,
        n=request.n if request.HasField("n") else 1,
        size_name=size_name,
        output_format=output_format,
        background=background,
        quality=quality,
        compression=request.output_compression if request.HasField("output_compression") else 100,
    )


def _coarsen(final: bytes, block: int, job: _Job) -> bytes:
    picture = Image.open(io.BytesIO(final))
    width, height = picture.size
    small = picture.resize((max(1, width // block), max(1, height // block)), Image.Resampling.BOX)
    return _encode(
        small.resize((width, height), Image.Resampling.NEAREST), job.output_format, job.compression
    )


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
    return _encode(picture, output_format, quality)


def _encode(picture: Image.Image, output_format: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if output_format == "png":
        picture.save(buffer, "PNG", compress_level=1)
    else:
        picture.save(buffer, _FORMATS[output_format], quality=max(1, quality))
    return buffer.getvalue()
