"""The console in a real browser (Debian's chromium, driven by Playwright), on a real door and core.

The core runs the demo model only (no upstream); the door serves the console
at /console/ as `serve` does. The database is SQLite only: these tests are
about the page, which the database does not change, and a browser run on
both would double their time.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from aqueduct_console import STATIC_DIR
from aqueduct_grpc.config import GatewayConfig, parse_config
from aqueduct_grpc.server import Core, GrpcServer
from aqueduct_grpc.storage.database import sqlite_url
from gateway_http import DoorRunner, create_app
from tests.accounting import token_with
from tests.console.pages import IMAGE_PRICE

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser here

OpenConsole = Callable[..., Awaitable[Page]]


@pytest.fixture
def database_url(tmp_path: pathlib.Path) -> str:
    return sqlite_url(tmp_path / "data")


@pytest.fixture
def config() -> GatewayConfig:
    demo = {
        "model_name": "aqueduct-demo",
        "litellm_params": {"model": "builtin/demo"},
        "model_info": {
            "mode": "image_generation",
            "aliases": ["demo"],
            "cost_per_image": {"*": IMAGE_PRICE},
        },
    }
    return parse_config({"model_list": [demo]}, source="test", environ={})


@pytest.fixture
async def console_door(core: GrpcServer) -> AsyncIterator[str]:
    """The door on a loopback port, serving the API and the console as `serve` does."""
    runner = DoorRunner(
        create_app(
            grpc_target=f"127.0.0.1:{core.port}",
            proto_packages=["aqueduct"],
            static_folders={"/console/": str(STATIC_DIR)},
            root_redirect="/console/",
        )
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site.port}"
    await runner.cleanup()


@pytest.fixture
async def admin_secret(gateway: Core) -> str:
    return await token_with(gateway, "root", admin=True)


@pytest.fixture(scope="session")
def chromium() -> str:
    if not pathlib.Path(CHROMIUM).is_file():
        pytest.fail(f"no browser at {CHROMIUM}: scripts/install_test_servers.sh installs chromium")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture
async def open_console(browser: Browser, console_door: str) -> AsyncIterator[OpenConsole]:
    """Opens the console in a fresh tab (its own sessionStorage), with a token if given.

    Every page fails its test on an uncaught script error or a content
    security policy violation (an inline script or style would be one).
    """
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            problems.append(message.text)

    async def open_page(
        token: str | None = None,
        *,
        page_name: str = "playground",
        width: int = 1280,
        height: int = 900,
    ) -> Page:
        context = await browser.new_context(viewport={"width": width, "height": height})
        page = await context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        await page.goto(f"{console_door}/console/#{page_name}")
        if token is not None:
            await page.get_by_label("API token").fill(token)
            await page.get_by_role("button", name="Use token").click()
        return page

    yield open_page
    assert problems == []
