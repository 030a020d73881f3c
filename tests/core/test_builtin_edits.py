"""The demo model's edits: real pictures, edited where the mask says and nowhere else."""

from __future__ import annotations

import io
import random

import grpc
import pytest
from PIL import Image, ImageChops, ImageStat

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images.edit_inputs import decode_inputs
from aqueduct_grpc.upstreams.builtin import BuiltinImageBackend

DEMO = Deployment(provider="builtin", upstream_model="demo")
SIZE = (96, 64)
# The mask's transparent (edited) box, in the input's pixels.
HOLE = (16, 8, 64, 40)


def noise(size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    """Seeded RGB noise: no rendering can match it by chance."""
    width, height = size
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(width * height * 3))


def encoded(picture: Image.Image, image_format: str = "PNG") -> bytes:
    out = io.BytesIO()
    picture.save(out, image_format)
    return out.getvalue()


def hole_mask(size: tuple[int, int] = SIZE, hole: tuple[int, int, int, int] = HOLE) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), hole)
    return encoded(mask)


def request(
    *images: Image.Image, mask: bytes | None = None, **fields: object
) -> images_pb2.EditImagesRequest:
    sent = images or (noise(),)
    edit = images_pb2.EditImagesRequest(
        image=[images_pb2.InputImage(data=encoded(picture)) for picture in sent],
        prompt=str(fields.pop("prompt", "a red hat")),
        **fields,  # type: ignore[arg-type]
    )
    if mask is not None:
        edit.mask.data = mask
    return edit


async def edit(edit_request: images_pb2.EditImagesRequest) -> list[Image.Image]:
    response = await BuiltinImageBackend().edit(decode_inputs(edit_request), DEMO)
    pictures = [Image.open(io.BytesIO(image.b64_json)) for image in response.data]
    for picture in pictures:
        picture.load()
    return pictures


def changed(before: Image.Image, after: Image.Image) -> Image.Image:
    """An "L" picture: 255 where the two pictures' RGB differ at all, else 0."""
    difference = ImageChops.difference(before.convert("RGB"), after.convert("RGB"))
    return difference.convert("L").point([0] + [255] * 255)


def share(area: Image.Image) -> float:
    """The fraction of an "L" 0-or-255 picture that is 255."""
    return ImageStat.Stat(area).mean[0] / 255


async def test_masked_edit_changes_the_transparent_area_and_keeps_the_rest() -> None:
    source = noise()
    [result] = await edit(request(source, mask=hole_mask()))

    assert (result.format, result.size) == ("PNG", SIZE)
    diff = changed(source, result)
    assert share(diff.crop(HOLE)) > 0.95
    outside = diff.copy()
    outside.paste(0, HOLE)
    assert outside.getbbox() is None  # not one pixel outside the hole changed


async def test_the_mask_is_resized_with_the_image() -> None:
    source = noise((128, 128))
    mask = hole_mask((128, 128), (0, 0, 64, 64))  # the top-left quarter
    [result] = await edit(request(source, mask=mask, size="256x256"))

    assert result.size == (256, 256)
    scaled = source.resize((256, 256), Image.Resampling.BICUBIC)
    diff = changed(scaled, result)
    assert share(diff.crop((0, 0, 128, 128))) > 0.95
    assert diff.crop((128, 0, 256, 256)).getbbox() is None
    assert diff.crop((0, 128, 128, 256)).getbbox() is None


async def test_without_a_mask_every_region_changes_but_the_input_shows_through() -> None:
    # Four flat quarters: the edit must keep them apart, noise would hide that.
    source = Image.new("RGB", (128, 128), (20, 20, 20))
    source.paste((230, 230, 230), (64, 0, 128, 64))
    source.paste((230, 30, 30), (0, 64, 64, 128))
    source.paste((30, 30, 230), (64, 64, 128, 128))
    [result] = await edit(request(source))

    assert result.size == (128, 128)
    diff = changed(source, result)
    for x in range(0, 128, 32):
        for y in range(0, 128, 32):
            assert share(diff.crop((x, y, x + 32, y + 32))) > 0.9, (x, y)
    # Correlated with the input: the bright quarter stays brighter than the dark one.
    grey = result.convert("L")
    dark = ImageStat.Stat(grey.crop((8, 32, 56, 56))).mean[0]
    bright = ImageStat.Stat(grey.crop((72, 32, 120, 56))).mean[0]
    assert bright - dark > 60
    # ...and the red quarter stays redder than the blue one.
    red = ImageStat.Stat(result.convert("RGB").crop((8, 72, 56, 120))).mean
    blue = ImageStat.Stat(result.convert("RGB").crop((72, 72, 120, 120))).mean
    assert (red[0] - red[2]) - (blue[0] - blue[2]) > 100


async def test_n_edits_differ_from_each_other() -> None:
    pictures = await edit(request(noise(), mask=hole_mask(), n=3))
    assert len(pictures) == 3
    pixels = {picture.tobytes() for picture in pictures}
    assert len(pixels) == 3


@pytest.mark.parametrize(
    ("fields", "image_format", "size"),
    [
        (
            {"output_format": "jpeg", "size": "512x512", "output_compression": 40},
            "JPEG",
            (512, 512),
        ),
        ({"output_format": "webp", "size": "1536x1024"}, "WEBP", (1536, 1024)),
        ({"size": "auto"}, "PNG", SIZE),
        ({}, "PNG", SIZE),
    ],
)
async def test_output_has_the_requested_size_and_format(
    fields: dict[str, object], image_format: str, size: tuple[int, int]
) -> None:
    [result] = await edit(request(noise(), mask=hole_mask(), **fields))
    assert (result.format, result.size) == (image_format, size)


async def test_jpeg_output_keeps_the_unmasked_area_within_jpeg_tolerance() -> None:
    source = Image.new("RGB", SIZE, (40, 120, 200))
    [result] = await edit(request(source, mask=hole_mask(), output_format="jpeg"))
    assert result.format == "JPEG"
    difference = ImageChops.difference(source, result.convert("RGB"))
    assert max(high for _, high in difference.crop((72, 48, 96, 64)).getextrema()) <= 8
    assert ImageStat.Stat(difference.crop(HOLE)).mean != [0.0, 0.0, 0.0]


async def test_response_echoes_the_settings() -> None:
    response = await BuiltinImageBackend().edit(
        decode_inputs(
            request(noise(), quality="hd", background="transparent", output_format="webp")
        ),
        DEMO,
    )
    assert (response.background, response.output_format, response.quality) == (
        "transparent",
        "webp",
        "high",
    )
    # 96x64 is rendered (its own size) but not a size OpenAI's schema lets an answer name.
    assert not response.HasField("size")
    picture = Image.open(io.BytesIO(response.data[0].b64_json))
    assert picture.mode == "RGBA"
    plain = await BuiltinImageBackend().edit(decode_inputs(request(noise())), DEMO)
    assert (plain.background, plain.output_format, plain.quality) == ("opaque", "png", "medium")
    large = await BuiltinImageBackend().edit(
        decode_inputs(request(noise(), size="1536x1024")), DEMO
    )
    assert large.size == "1536x1024"


async def test_reference_images_are_shown_only_in_the_edited_area() -> None:
    source = noise()
    references = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue")]
    mask = hole_mask(hole=(48, 32, 96, 64))  # the bottom-right corner
    [result] = await edit(request(source, *references, mask=mask))
    colours = {colour for _, colour in result.crop((48, 32, 96, 64)).getcolors(1 << 16) or ()}
    assert {(255, 0, 0), (0, 0, 255)} <= colours
    assert changed(source, result).crop((0, 0, 96, 32)).getbbox() is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": "10x10"}, "size"),
        ({"output_format": "gif"}, "output_format"),
        ({"quality": "best"}, "quality"),
        ({"output_format": "jpeg", "background": "transparent"}, "background"),
    ],
)
async def test_bad_settings_are_invalid_arguments_naming_the_field(
    fields: dict[str, object], param: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        await BuiltinImageBackend().edit(decode_inputs(request(noise(), **fields)), DEMO)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.param == param


async def test_a_truncated_image_is_a_400_not_a_crash() -> None:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 50).save(buffer, "PNG")
    request = images_pb2.EditImagesRequest(
        prompt="x", image=[images_pb2.InputImage(data=buffer.getvalue()[:2000])]
    )
    with pytest.raises(GatewayError) as caught:
        await BuiltinImageBackend().edit(
            decode_inputs(request), Deployment(provider="builtin", upstream_model="demo")
        )
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.param == "image"


async def test_a_huge_claimed_size_is_answered_at_a_gpt_image_size() -> None:
    # "auto" follows the input's shape, not its claimed size (which a small
    # file can make enormous): 4000 x 2000 becomes 1536 x 1024.
    buffer = io.BytesIO()
    Image.new("1", (4000, 2000)).save(buffer, "PNG")
    request = images_pb2.EditImagesRequest(
        prompt="x", image=[images_pb2.InputImage(data=buffer.getvalue())]
    )
    response = await BuiltinImageBackend().edit(
        decode_inputs(request), Deployment(provider="builtin", upstream_model="demo")
    )
    assert response.size == "1536x1024"
    assert Image.open(io.BytesIO(response.data[0].b64_json)).size == (1536, 1024)


async def test_a_corrupt_image_is_a_400_whatever_pillow_raises() -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[60:80] = b"\xff" * 20  # inside the first chunk after the header: a broken chunk
    request = images_pb2.EditImagesRequest(
        prompt="x", image=[images_pb2.InputImage(data=bytes(data))]
    )
    with pytest.raises(GatewayError) as caught:
        await BuiltinImageBackend().edit(
            decode_inputs(request), Deployment(provider="builtin", upstream_model="demo")
        )
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
