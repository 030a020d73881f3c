"""The playground in a browser: generations, streams, edits with a painted mask, errors."""

from __future__ import annotations

import asyncio
import io
import os
import pathlib
import re
import sys
from typing import Any

import aiohttp
import pytest
from PIL import Image
from playwright.async_api import expect

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.accounting.policy import Limits
from aqueduct_grpc.images.edit_inputs import Edit
from aqueduct_grpc.server import Core
from aqueduct_grpc.upstreams.builtin import BuiltinImageBackend
from tests.accounting import token_with
from tests.console.conftest import OpenConsole
from tests.console.pages import generate, natural_size, screenshot

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
RED = (255, 0, 0)


async def run_snippet(command: list[str], secret: str, folder: pathlib.Path) -> str:
    """Runs a copied snippet as a person would, with the token in $AQ_TOKEN."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=folder,
        env={**os.environ, "AQ_TOKEN": secret},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_generated_image_is_shown_at_its_size_with_the_request_to_copy(
    open_console: OpenConsole, secret: str, console_door: str, tmp_path: pathlib.Path
) -> None:
    page = await open_console(secret)
    await expect(page.get_by_label("Model")).to_have_value("aqueduct-demo")
    await generate(page, "a lighthouse at dusk", size="512x512", n=2)

    run = page.locator(".run").first
    await expect(run).to_have_attribute("data-state", "done")
    images = run.locator(".result-image img")
    await expect(images).to_have_count(2)
    for index in range(2):
        assert await natural_size(images.nth(index)) == [512, 512]
    await expect(run.locator("[data-fact=status] dd")).to_have_text("HTTP 200")
    await expect(run.locator("[data-fact=latency] dd")).to_have_text(re.compile(r"^\d[\d,]* ms$"))
    await expect(run.locator("[data-fact=request-id] dd")).to_have_text(REQUEST_ID)
    await expect(run.locator("[data-fact=usage] dd")).to_have_text("not reported")
    await expect(run.get_by_role("link", name="Download image 1")).to_have_attribute(
        "download", "aqueduct-generate-1.png"
    )

    # The copied request is the one sent: both snippets run and make the same images.
    await run.get_by_text("Copy as curl or Python SDK").click()
    curl, python = await run.locator(".snippet pre").all_inner_texts()
    assert f"{console_door}/v1/images/generations" in curl
    assert '"size":"512x512","n":2' in curl and "$AQ_TOKEN" in curl and secret not in curl
    answer = await run_snippet(["bash", "-c", curl], secret, tmp_path)
    assert '"b64_json"' in answer
    (tmp_path / "snippet.py").write_text(python)
    await run_snippet([sys.executable, "snippet.py"], secret, tmp_path)
    for index in range(2):
        with Image.open(tmp_path / f"image-{index}.png") as made:
            assert made.size == (512, 512)
    await screenshot(page, "playground-light")

    # The theme toggle: dark, and the page's colours follow.
    light_background = await page.evaluate(
        "getComputedStyle(document.documentElement).backgroundColor"
    )
    await page.get_by_role("button", name="Dark theme").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    await expect(page.get_by_role("button", name="Dark theme")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert await page.evaluate("getComputedStyle(document.documentElement).backgroundColor") != (
        light_background
    )
    await screenshot(page, "playground-dark")


async def test_a_stream_shows_partial_images_before_the_final_one(
    open_console: OpenConsole, secret: str
) -> None:
    page = await open_console(secret)
    await page.get_by_label("Stream partial images").check()
    await page.get_by_label("Partial images", exact=True).fill("2")
    await generate(page, "a lighthouse, streamed", size="512x512")

    run = page.locator(".run").first
    await expect(run).to_have_attribute("data-state", "done")
    # Each picture the figure showed, in order, and each event as it came.
    await expect(run.locator(".result-image")).to_have_attribute(
        "data-history", "partial:0 partial:1 final"
    )
    events = await run.locator(".events li").evaluate_all(
        "items => items.map(i => i.dataset.event)"
    )
    assert events == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert await natural_size(run.locator(".result-image img")) == [512, 512]
    await expect(run.locator("[data-fact=latency] dd")).to_contain_text("first event after")
    # A completed event always carries usage: the demo's are zeros.
    await expect(run.locator("[data-fact=usage] dd")).to_have_text("none reported (0 tokens)")


async def test_a_refused_token_shows_the_gateways_message_and_request_id(
    open_console: OpenConsole, console_door: str
) -> None:
    page = await open_console("aqk-not-a-real-token")
    # What the API itself says to this token, to compare with what the page shows.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{console_door}/v1/models", headers={"Authorization": "Bearer aqk-not-a-real-token"}
        ) as response,
    ):
        assert response.status == 401
        message = (await response.json())["error"]["message"]

    await expect(page.locator("#model-status")).to_contain_text("HTTP 401")
    await expect(page.locator("#model-status")).to_contain_text(message)
    await generate(page, "anything")
    run = page.locator(".run").first
    await expect(run).to_have_attribute("data-state", "failed")
    alert = run.get_by_role("alert")
    await expect(alert).to_contain_text("HTTP 401 (invalid_request_error")
    await expect(alert).to_contain_text(message)
    request_id = await run.locator("[data-fact=request-id] dd").inner_text()
    assert REQUEST_ID.match(request_id)
    await expect(alert).to_contain_text(f"Request id: {request_id}")


async def test_a_request_over_a_limit_shows_the_429(
    open_console: OpenConsole, gateway: Core
) -> None:
    limited = await token_with(gateway, "limited", limits=Limits(images_per_day=1))
    page = await open_console(limited)
    await generate(page, "the first fits")
    await expect(page.locator(".run").first).to_have_attribute("data-state", "done")
    await generate(page, "the second does not")
    run = page.locator(".run").first
    await expect(run).to_have_attribute("data-state", "failed")
    alert = run.get_by_role("alert")
    await expect(alert).to_contain_text(
        "HTTP 429 (rate_limit_error, token_images_per_day_exceeded)"
    )
    await expect(alert).to_contain_text("Retry after")
    await expect(page.locator(".run")).to_have_count(2)


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


async def test_an_edit_sends_the_mask_painted_over_the_first_image(
    open_console: OpenConsole, secret: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request and its mask's bytes, as the backend got them (the files go with the call).
    received: list[tuple[images_pb2.EditImagesRequest, bytes | None]] = []
    demo_edit = BuiltinImageBackend.edit

    async def recording_edit(
        backend: BuiltinImageBackend, edit: Edit, deployment: Any
    ) -> images_pb2.EditImagesResponse:
        received.append((edit.request, None if edit.mask is None else edit.mask.read()))
        return await demo_edit(backend, edit, deployment)

    monkeypatch.setattr(BuiltinImageBackend, "edit", recording_edit)
    (tmp_path / "photo.png").write_bytes(png((320, 240), RED))
    (tmp_path / "reference.png").write_bytes(png((64, 64), (0, 0, 255)))
    page = await open_console(secret)
    await page.get_by_label("Edit images").check()
    await page.get_by_label("Images to edit").set_input_files(
        [tmp_path / "photo.png", tmp_path / "reference.png"]
    )
    await expect(page.get_by_role("list", name="Chosen images").locator("li")).to_have_count(2)
    canvas = page.locator("#mask-canvas")
    await expect(page.locator("#mask-fieldset")).to_be_enabled()
    await expect(canvas).to_have_attribute("width", "320")

    # Paint a stroke across the middle of the first image.
    await canvas.scroll_into_view_if_needed()
    box = await canvas.bounding_box()
    assert box is not None
    middle = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] * 0.3, middle)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.7, middle, steps=8)
    await page.mouse.up()

    await page.get_by_label("Prompt").fill("a sailing boat")
    await page.get_by_role("button", name="Edit", exact=True).click()
    run = page.locator(".run").first
    await expect(run).to_have_attribute("data-state", "done")

    # What the core received from the page's form, through the door.
    ((request, mask_bytes),) = received
    assert [image.filename for image in request.image] == ["photo.png", "reference.png"]
    assert (request.model, request.prompt) == ("aqueduct-demo", "a sailing boat")
    assert mask_bytes is not None
    with Image.open(io.BytesIO(mask_bytes)) as mask:
        assert (mask.format, mask.size) == ("PNG", (320, 240))
        alpha = mask.convert("RGBA").getchannel("A")
        assert alpha.getpixel((160, 120)) == 0  # painted: to edit
        assert alpha.getpixel((5, 5)) == alpha.getpixel((160, 5)) == 255  # kept

    result = run.locator(".result-image img")
    assert await natural_size(result) == [320, 240]
    # The demo edits only under the mask: the middle changed, the corner is the photo.
    pixels = await result.evaluate(
        """img => {
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            const at = (x, y) => Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3));
            return [at(5, 5), at(160, 120)];
        }"""
    )
    assert pixels[0] == list(RED) and pixels[1] != list(RED)
    await run.get_by_text("Copy as curl or Python SDK").click()
    await expect(run.get_by_role("link", name="Download mask.png")).to_be_visible()
    await expect(run.locator(".snippet pre").first).to_contain_text("-F 'mask=@mask.png'")
    await screenshot(page, "playground-edit")
