"""The built-in offline image model: a DEMO/TEST backend, not a generator.

It renders a real picture of the requested size and format locally (a
gradient seeded by the prompt, with the prompt written on it) so the gateway
does its whole job on a machine with no API key and no network. Rendering
runs in a worker thread so the event loop keeps serving other requests.
It streams too: partial images are coarser renders of the final picture,
each one finer than the last. And it edits for real: the rendering replaces
the mask's transparent area of the first input image (or, with no mask, is
blended over the whole image), so an edit visibly keeps its input.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import math
import textwrap
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, ImageDraw, ImageOps

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import invalid_argument, quoted
from aqueduct_grpc.images.edit_inputs import Edit
from aqueduct_grpc.upstreams.openai.wire import EDIT_EVENTS, GENERATION_EVENTS, StreamEvents

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
# The sizes a GPT image model answers with, which OpenAI's `ImagesResponse` allows.
_REPORTED_SIZES = frozenset({"1024x1024", "1536x1024", "1024x1536"})
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
# With no mask, the rendering's weight over the input: an even blend edits every
# pixel yet keeps the input recognisable.
_UNMASKED_BLEND = 0.5
# Reference images (image[1:]) shown as thumbnails this fraction of the
# output's shorter side, along the bottom edge of the rendering.
_THUMBNAIL_FRACTION = 8

_Settings = images_pb2.GenerateImagesRequest | images_pb2.EditImagesRequest
_Event = TypeVar(
    "_Event", images_pb2.StreamGenerateImagesResponse, images_pb2.StreamEditImagesResponse
)


@dataclass(frozen=True)
class _Job:
    """What the request asks for, checked, with the defaults filled in."""

    prompt: str
    n: int
    size: tuple[int, int]
    output_format: str
    background: str
    quality: str
    compression: int

    @property
    def size_name(self) -> str:
        """The size as OpenAI writes it, e.g. `1024x1024`."""
        return f"{self.size[0]}x{self.size[1]}"

    def render(self, index: int) -> bytes:
        picture = _picture(self.prompt, index, self.size, self.background)
        return _encode(picture, self.output_format, self.compression)

    def echoed(self) -> dict[str, Any]:
        """The settings OpenAI reports beside the images.

        The size only when it is one a GPT image model answers with: OpenAI's
        schema allows no other, and DALL-E, whose sizes the others are,
        reports none.
        """
        echoed = {
            "background": "transparent" if self.background == "transparent" else "opaque",
            "output_format": self.output_format,
            "quality": self.quality,
        }
        if self.size_name in _REPORTED_SIZES:
            echoed["size"] = self.size_name
        return echoed


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
        async for event in _streamed(job, request, job.render, GENERATION_EVENTS):
            yield event

    async def stream_edit(
        self, edit: Edit, deployment: Deployment
    ) -> AsyncGenerator[images_pb2.StreamEditImagesResponse, None]:
        """An edit's images as a stream: coarse renders of each edited image, then the image."""
        job, source = await _edit_inputs(edit)
        async for event in _streamed(
            job, edit.request, functools.partial(source.edit, job), EDIT_EVENTS
        ):
            yield event

    async def edit(self, edit: Edit, deployment: Deployment) -> images_pb2.EditImagesResponse:
        """Renders the prompt into the first image's masked area, `n` times.

        The caller has checked the inputs: 1 to 16 images that Pillow opens,
        and a mask (when set) with an alpha channel, of the first image's size.
        """
        job, source = await _edit_inputs(edit)
        edits = [asyncio.to_thread(source.edit, job, index) for index in range(job.n)]
        images = await asyncio.gather(*edits)
        response = images_pb2.EditImagesResponse(created=int(time.time()), **job.echoed())
        for data in images:
            response.data.add(b64_json=data)
        return response


async def _streamed(
    job: _Job,
    request: _Settings,
    render: Callable[[int], bytes],
    events: StreamEvents[_Event],
) -> AsyncGenerator[_Event, None]:
    """For each of the job's images: `partial_images` coarser copies of `render(index)`, then it."""
    partials = request.partial_images if request.HasField("partial_images") else 0
    # An event always names a size (OpenAI's schema requires one): "auto" for a
    # size a GPT image model would not answer with.
    echoed = {"size": "auto", **job.echoed()}
    for index in range(job.n):
        final = await asyncio.to_thread(render, index)
        for step in range(partials):
            # Blocks of 2^(partials - step + 2) pixels: each partial finer.
            block = 1 << (partials - step + 2)
            coarse = await asyncio.to_thread(_coarsen, final, block, job)
            yield events.message(
                type=events.partial_image,
                b64_json=coarse,
                created_at=int(time.time()),
                partial_image_index=step,
                **echoed,
            )
        yield events.message(
            type=events.completed, b64_json=final, created_at=int(time.time()), **echoed
        )


async def _edit_inputs(edit: Edit) -> tuple[_Job, _EditSource]:
    """The edit's settings and its decoded inputs.

    The caller has checked the inputs: 1 to 16 images that Pillow opens,
    and a mask (when set) with an alpha channel, of the first image's size.
    """
    # The size "auto" means is the input's.
    job = _job(edit.request, auto_size=_nearest_size(edit.size))
    try:
        source = await asyncio.to_thread(_EditSource.load, edit, job)
    except Exception:
        # A header that reads over pixels that do not (a truncated file).
        raise invalid_argument(
            "Invalid 'image': an input image could not be decoded.", "image"
        ) from None
    return job, source


@dataclass(frozen=True)
class _EditSource:
    """The decoded inputs of an edit, at the output size, shared by its `n` outputs."""

    base: Image.Image
    # "L": 255 where the rendering shows, 0 where the input stays.
    edit_area: Image.Image | None
    thumbnails: tuple[Image.Image, ...]
    keeps_alpha: bool

    @classmethod
    def load(cls, edit: Edit, job: _Job) -> _EditSource:
        with Image.open(io.BytesIO(edit.images[0].read())) as first:
            keeps_alpha = first.mode in ("RGBA", "LA", "PA") or "transparency" in first.info
            base = first.convert("RGBA").resize(job.size, Image.Resampling.BICUBIC)
        edit_area = None
        if edit.mask is not None:
            with Image.open(io.BytesIO(edit.mask.read())) as mask:
                alpha = mask.convert("RGBA").getchannel("A")
            # NEAREST keeps the edge crisp: a pixel is edited or it is not.
            alpha = alpha.resize(job.size, Image.Resampling.NEAREST)
            edit_area = alpha.point([255] + [0] * 255)
        side = max(1, min(job.size) // _THUMBNAIL_FRACTION)
        thumbnails = []
        for reference in edit.images[1:]:
            with Image.open(io.BytesIO(reference.read())) as picture:
                # draft() lets JPEG decode at a fraction of its size: thumbnails stay cheap.
                picture.draft("RGB", (side, side))
                small = picture.convert("RGBA")
            small.thumbnail((side, side))
            thumbnails.append(small)
        return cls(base, edit_area, tuple(thumbnails), keeps_alpha)

    def edit(self, job: _Job, index: int) -> bytes:
        rendering = _picture(job.prompt, index, job.size, job.background).convert("RGBA")
        self._show_references(rendering)
        if self.edit_area is None:
            edited = Image.blend(self.base, rendering, _UNMASKED_BLEND)
        else:
            edited = Image.composite(rendering, self.base, self.edit_area)
        if job.background == "transparent" or (
            self.keeps_alpha and job.background == "auto" and job.output_format != "jpeg"
        ):
            return _encode(edited, job.output_format, job.compression)
        # An opaque answer: what was see-through is shown over white, as viewers do.
        backdrop = Image.new("RGBA", job.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(backdrop, edited).convert("RGB")
        return _encode(flat, job.output_format, job.compression)

    def _show_references(self, rendering: Image.Image) -> None:
        """Pastes the reference thumbnails from the bottom-right corner leftwards."""
        x, bottom = rendering.width, rendering.height
        for thumbnail in self.thumbnails:
            x -= thumbnail.width
            if x < 0:
                break
            rendering.alpha_composite(thumbnail, (x, bottom - thumbnail.height))


def _nearest_size(size: tuple[int, int]) -> tuple[int, int]:
    """What size "auto" means for an edit: the input's own, or gpt-image's closest in shape.

    The input's own only while it is no larger than gpt-image's largest
    answer: a small file may claim a huge size, and rendering it n times would
    take gigabytes.
    """
    if size[0] * size[1] <= 1536 * 1024 and max(size) <= 1536:
        return size
    ratio = size[0] / max(1, size[1])
    choices = (SIZES["1024x1024"], SIZES["1536x1024"], SIZES["1024x1536"])
    return min(choices, key=lambda choice: abs(math.log(ratio * choice[1] / choice[0])))


def _job(request: _Settings, auto_size: tuple[int, int] = SIZES["1024x1024"]) -> _Job:
    """The request's shared settings, checked; `auto_size` is what size "auto" means."""

    def given(name: str, default: str) -> str:
        # Both request types name their shared fields alike, each with presence.
        return getattr(request, name) if request.HasField(name) else default

    size_name = given("size", "auto")
    if size_name != "auto" and size_name not in SIZES:
        raise invalid_argument(
            f"Invalid value: {quoted(size_name)}. Supported values are: "
            + ", ".join(f"'{s}'" for s in ["auto", *SIZES])
            + ".",
            "size",
        )
    size = auto_size if size_name == "auto" else SIZES[size_name]
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
        size=size,
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


def _picture(prompt: str, index: int, size: tuple[int, int], background: str) -> Image.Image:
    """The prompt's rendering: a seeded gradient with the prompt written on it."""
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
    return picture


def _encode(picture: Image.Image, output_format: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if output_format == "png":
        picture.save(buffer, "PNG", compress_level=1)
    else:
        picture.save(buffer, _FORMATS[output_format], quality=max(1, quality))
    return buffer.getvalue()
