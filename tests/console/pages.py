"""Driving the console's pages as a person does, and keeping pictures of them."""

from __future__ import annotations

import pathlib

from playwright.async_api import Locator, Page

ARTIFACTS = pathlib.Path(__file__).parent / "artifacts"
IMAGE_PRICE = 0.01  # the demo model's price per image in these tests: costs show on the charts


async def generate(page: Page, prompt: str, *, size: str = "256x256", n: int = 1) -> None:
    await page.get_by_label("Prompt").fill(prompt)
    await page.get_by_label("Size", exact=True).select_option(size)
    await page.get_by_label("Images (n)").fill(str(n))
    await page.get_by_role("button", name="Generate", exact=True).click()


async def natural_size(image: Locator) -> list[int]:
    """The size the browser decoded the image at (not the size it is drawn)."""
    return await image.evaluate(
        "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])"
    )


async def tab_to(page: Page, target: Locator, most: int = 40) -> None:
    """Presses Tab until `target` has the focus, as a keyboard user gets there."""
    for _ in range(most):
        await page.keyboard.press("Tab")
        if await target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{most} presses of Tab never reached {target}")


async def screenshot(page: Page, name: str) -> None:
    """Saves the whole page to tests/console/artifacts/ (for people to look at)."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
