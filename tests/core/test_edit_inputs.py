"""An edit's input images: checked as files, or refused with a 400 naming the field."""

from __future__ import annotations

import base64
import io
import os

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.image_formats import WEBP_HEADER_BYTES, webp_size
from aqueduct_grpc.images.edit_inputs import decode_inputs


def png(size: tuple[int, int] = (32, 32), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_uploads_and_data_urls_become_one_list_of_files() -> None:
    first, second = png(), jpeg()
    request = images_pb2.EditImagesRequest(
        image=[images_pb2.InputImage(data=first, filename="a.png")],
        images=[
            images_pb2.InputImage(
                image_url="data:image/jpeg;base64," + base64.b64encode(second).decode()
            )
        ],
        mask=images_pb2.InputImage(data=png(mode="RGBA")),
    )
    edit = decode_inputs(request)
    assert edit.size == (32, 32) and edit.request is request
    assert [i.read() for i in edit.images] == [first, second]
    assert [i.content_type for i in edit.images] == ["image/png", "image/jpeg"]
    assert [i.size for i in edit.images] == [len(first), len(second)]
    assert edit.mask is not None and edit.mask.content_type == "image/png"
    assert edit.markup is None


def refusal(request: images_pb2.EditImagesRequest) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        decode_inputs(request)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def test_a_mask_must_be_a_png_of_the_first_images_size() -> None:
    wrong_size = images_pb2.EditImagesRequest(
        image=[images_pb2.InputImage(data=png((32, 32)))],
        mask=images_pb2.InputImage(data=png((16, 16))),
    )
    assert refusal(wrong_size).param == "mask"
    not_png = images_pb2.EditImagesRequest(
        image=[images_pb2.InputImage(data=jpeg())], mask=images_pb2.InputImage(data=jpeg())
    )
    assert refusal(not_png).param == "mask"


def test_a_gif_is_not_an_input_format() -> None:
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, "GIF")
    request = images_pb2.EditImagesRequest(image=[images_pb2.InputImage(data=buffer.getvalue())])
    assert refusal(request).param == "image[0]"


@given(data=st.binary(max_size=512), url=st.text(max_size=64))
def test_arbitrary_inputs_are_decoded_or_refused_never_a_crash(data: bytes, url: str) -> None:
    for image in (images_pb2.InputImage(data=data), images_pb2.InputImage(image_url=url)):
        request = images_pb2.EditImagesRequest(image=[image])
        try:
            decode_inputs(request)
        except GatewayError as error:
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT
            assert error.param is not None and error.param.startswith("image[0]")


def test_a_tiny_file_claiming_gigapixels_is_refused_before_decoding() -> None:
    # 9,000 x 9,000 one-bit pixels compress to a few kilobytes of PNG; the
    # pixels past the bound would take gigabytes once decoded for an edit.
    buffer = io.BytesIO()
    Image.new("1", (9_000, 9_000)).save(buffer, "PNG")
    request = images_pb2.EditImagesRequest(image=[images_pb2.InputImage(data=buffer.getvalue())])
    error = refusal(request)
    assert error.param == "image[0]" and "pixels" in error.message


def test_each_list_names_its_own_index() -> None:
    request = images_pb2.EditImagesRequest(
        image=[images_pb2.InputImage(data=png())],
        images=[images_pb2.InputImage(image_url="https://example.com/x.png")],
    )
    assert refusal(request).param == "images[0].image_url"


def test_bytes_and_a_url_for_one_image_are_refused() -> None:
    both = images_pb2.InputImage(data=png(), image_url="data:image/png;base64,AAAA")
    assert refusal(images_pb2.EditImagesRequest(image=[both])).param == "image[0]"


@pytest.mark.parametrize(("mode", "param"), [("L", "mask"), ("RGB", "mask")])
def test_a_mask_without_transparency_marks_nothing_and_is_refused(mode: str, param: str) -> None:
    request = images_pb2.EditImagesRequest(
        image=[images_pb2.InputImage(data=png())], mask=images_pb2.InputImage(data=png(mode=mode))
    )
    error = refusal(request)
    assert error.param == param and "alpha" in error.message


def test_a_mask_and_a_markup_together_are_refused() -> None:
    overlay = png(mode="RGBA")
    request = images_pb2.EditImagesRequest(
        image=[images_pb2.InputImage(data=png())],
        mask=images_pb2.InputImage(data=overlay),
        markup=images_pb2.InputImage(data=overlay),
    )
    assert refusal(request).param == "markup"


@pytest.mark.parametrize(
    "prefix", ["data:image/png;base64,", "DATA:image/png;BASE64,", "Data:image/png;Base64,"]
)
@pytest.mark.parametrize("spelling", ["standard", "wrapped", "url-safe"])
def test_data_urls_in_every_common_spelling(prefix: str, spelling: str) -> None:
    data = png((40, 40), "RGBA")
    text = base64.b64encode(data).decode()
    if spelling == "wrapped":
        text = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    elif spelling == "url-safe":
        text = base64.urlsafe_b64encode(data).decode()
    request = images_pb2.EditImagesRequest(images=[images_pb2.InputImage(image_url=prefix + text)])
    edit = decode_inputs(request)
    assert edit.size == (40, 40)
    assert edit.images[0].read() == data


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=600),
    height=st.integers(min_value=1, max_value=600),
    mode=st.sampled_from(["RGB", "RGBA"]),
    lossless=st.booleans(),
)
def test_a_webps_size_comes_from_its_header_as_pillow_reads_it(
    width: int, height: int, mode: str, lossless: bool
) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 20, 30)).save(buffer, "WEBP", lossless=lossless)
    data = buffer.getvalue()
    assert webp_size(data[:WEBP_HEADER_BYTES]) == Image.open(io.BytesIO(data)).size


class CountingFile(io.BytesIO):
    """A file that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


@pytest.mark.parametrize("kind", ["PNG", "WEBP"])
def test_an_uploaded_image_is_checked_from_its_header_not_read_whole(kind: str) -> None:
    buffer = io.BytesIO()
    noise = Image.frombytes("RGB", (900, 900), os.urandom(900 * 900 * 3))
    noise.save(buffer, kind, **({"lossless": True} if kind == "WEBP" else {}))
    data = buffer.getvalue()
    assert len(data) > 1_000_000
    file = CountingFile(data)
    request = images_pb2.EditImagesRequest(image=[images_pb2.InputImage()])
    edit = decode_inputs(request, {("image", 0): (file, len(data))})
    assert edit.size == (900, 900)
    assert file.read_bytes < 70_000
