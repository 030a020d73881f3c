"""The dashboard in a browser: usage charts, tokens from creation to revocation, teams, policies."""

from __future__ import annotations

import datetime
import json
import re

import aiohttp
from playwright.async_api import Dialog, Locator, Page, expect

from tests.console.conftest import OpenConsole
from tests.console.pages import IMAGE_PRICE, generate, screenshot, tab_to


async def test_an_admin_creates_a_token_that_works_until_it_is_revoked(
    open_console: OpenConsole, admin_secret: str
) -> None:
    admin = await open_console(admin_secret, page_name="dashboard")

    # A team, then a token in it, limited to the demo model.
    await admin.get_by_text("Create a team").click()
    team_form = admin.locator("#team-create-form")
    await team_form.get_by_label("Name").fill("design")
    await team_form.get_by_label("Images per day").fill("500")
    await team_form.get_by_role("button", name="Create team").click()
    await expect(admin.locator("#teams tbody tr")).to_have_count(1)
    await expect(admin.locator("#teams tbody tr")).to_contain_text("500 img/day")

    await admin.get_by_text("Create a token").click()
    token_form = admin.locator("#token-create-form")
    await token_form.get_by_label("Name").fill("carol")
    await token_form.get_by_label("Team").select_option(label="design")
    await token_form.get_by_label("aqueduct-demo").check()
    await token_form.get_by_label("Requests per minute").fill("10")
    await token_form.get_by_role("button", name="Create token").click()

    # Its secret, once: shown with a copy button, gone when dismissed, never in the list.
    secret_box = admin.get_by_label("Secret", exact=True)
    await expect(secret_box).to_have_value(re.compile(r"^aqk-"))
    await expect(admin.get_by_role("button", name="Copy", exact=True)).to_be_visible()
    carol_secret = await secret_box.input_value()
    carol = admin.locator("#tokens tbody tr", has_text="carol")
    for shown in ("active", "design", "aqueduct-demo", "10 req/min"):
        await expect(carol).to_contain_text(shown)
    await admin.get_by_role("button", name="Done").click()
    await expect(admin.locator("#token-secret")).to_be_hidden()
    assert carol_secret not in await admin.content()

    # Its policy, edited in a dialog: only what changed is sent, as a PATCH.
    await carol.get_by_role("button", name="Policy of carol").click()
    dialog = admin.get_by_role("dialog")
    await expect(dialog.get_by_label("Requests per minute")).to_have_value("10")
    await expect(dialog.get_by_label("Team")).to_have_value(re.compile(r".+"))
    await dialog.get_by_label("Images per day").fill("5")
    async with admin.expect_request(lambda request: request.method == "PATCH") as patch:
        await dialog.get_by_role("button", name="Save").click()
    assert json.loads((await patch.value).post_data or "") == {"limits": {"images_per_day": 5}}
    await expect(dialog).to_be_hidden()
    await expect(carol).to_contain_text("10 req/min · 5 img/day")
    await expect(carol).to_contain_text("design")  # the PATCH kept the team

    # Someone else's tab uses it in the playground; its dashboard says it is no admin.
    user = await open_console(carol_secret)
    await generate(user, "carol's first image")
    await expect(user.locator(".run").first).to_have_attribute("data-state", "done")
    await user.get_by_role("link", name="Dashboard").click()
    await expect(user.locator("#dashboard-error")).to_contain_text("This token has no admin scope")
    await expect(user.locator("#dashboard-error")).to_contain_text("HTTP 403")
    await user.get_by_role("link", name="Playground").click()

    # Revoked: the playground now shows the 401.
    async def accept(confirmation: Dialog) -> None:
        assert "Revoke the token “carol”" in confirmation.message
        await confirmation.accept()

    admin.once("dialog", accept)
    await carol.get_by_role("button", name="Revoke carol").click()
    await expect(carol.locator(".badge")).to_have_text("revoked")
    await expect(carol.get_by_role("button", name="Revoke carol")).to_have_count(0)
    await generate(user, "carol's second image")
    run = user.locator(".run").first
    await expect(run).to_have_attribute("data-state", "failed")
    await expect(run.get_by_role("alert")).to_contain_text("HTTP 401")


def bar(page: Page, series: str, day: str) -> Locator:
    return page.locator(f".chart[data-series={series}] rect[data-day='{day}']")


async def test_the_usage_charts_show_the_requests_just_made(
    open_console: OpenConsole, admin_secret: str, secret: str, console_door: str
) -> None:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
        for size in ("256x256", "256x256", "512x512", "3x3"):
            async with session.post(
                f"{console_door}/v1/images/generations",
                json={"model": "demo", "prompt": "counted", "size": size},
            ) as response:
                assert response.status == (400 if size == "3x3" else 200)

    admin = await open_console(admin_secret, page_name="dashboard")
    await expect(bar(admin, "images", today)).to_have_attribute("data-value", "3")
    await expect(bar(admin, "failures", today)).to_have_attribute("data-value", "1")
    cost = await bar(admin, "cost", today).get_attribute("data-value")
    assert abs(float(cost or "0") - 3 * IMAGE_PRICE) < 1e-9
    # The model listings (the pages' own) are requests too.
    assert int(await bar(admin, "requests", today).get_attribute("data-value") or "0") >= 4
    await expect(admin.locator(".chart[data-series=images] .chart-total")).to_have_text("3")

    breakdown = admin.locator("#breakdown")
    await expect(breakdown.locator("tr", has_text="aqueduct-demo")).to_contain_text("$0.03")
    await admin.get_by_label("By", exact=True).select_option("token")
    tested = breakdown.locator("tbody tr", has_text="test")
    await expect(tested.locator("td").nth(3)).to_have_text("3")  # images (after name, id, requests)
    await admin.get_by_label("By", exact=True).select_option("team")
    await expect(breakdown).to_contain_text("(no team)")
    await screenshot(admin, "dashboard")


async def test_phone_width_keyboard_and_labels(
    open_console: OpenConsole, admin_secret: str, secret: str, console_door: str
) -> None:
    # Every control has a label: inputs, selects and text areas a <label> (or
    # aria-label), buttons their text. Hidden ones too (the edit form, the dialog).
    unlabelled = """() => [...document.querySelectorAll("input, select, textarea, button")]
        .filter((control) => control.tagName === "BUTTON"
            ? !control.textContent.trim()
            : !(control.labels?.length || control.getAttribute("aria-label")))
        .map((control) => control.id || control.outerHTML)"""
    phone = await open_console(admin_secret, page_name="dashboard", width=375, height=812)
    assert await phone.evaluate(unlabelled) == []
    await expect(phone.locator(".chart")).to_have_count(4)
    # Nothing is wider than the phone: tables scroll inside their own box.
    no_overflow = "document.documentElement.scrollWidth <= window.innerWidth"
    assert await phone.evaluate(no_overflow)
    await screenshot(phone, "phone-dashboard")
    await phone.get_by_role("link", name="Playground").click()
    await expect(phone.get_by_role("heading", name="Playground")).to_be_focused()
    await generate(phone, "a small screen")
    await expect(phone.locator(".run").first).to_have_attribute("data-state", "done")
    assert await phone.evaluate(no_overflow)
    await screenshot(phone, "phone-playground")

    # The keyboard alone: skip link first, with a visible focus ring, then a generation.
    # (From the door's root, which redirects to the console: a #fragment would move
    # the starting point of Tab to its page.)
    page = await open_console()
    await page.goto(f"{console_door}/")
    assert page.url == f"{console_door}/console/"
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    assert await skip.evaluate("link => getComputedStyle(link).outlineStyle") != "none"
    await tab_to(page, page.get_by_label("API token"))
    await page.keyboard.type(secret)
    await page.keyboard.press("Enter")
    await expect(page.locator("#token-status")).to_contain_text(secret[-4:])
    # The token is kept for this tab only: not in the URL, a cookie or lasting storage.
    assert secret not in page.url
    kept = (
        "[document.cookie, sessionStorage.getItem('aqueduct-console.token'), localStorage.length]"
    )
    assert await page.evaluate(kept) == ["", secret, 0]
    await expect(page.get_by_label("Model")).to_have_value("aqueduct-demo")
    await tab_to(page, page.get_by_label("Prompt"))
    await page.keyboard.type("typed, not clicked")
    await tab_to(page, page.get_by_role("button", name="Generate", exact=True))
    await page.keyboard.press("Enter")
    await expect(page.locator(".run").first).to_have_attribute("data-state", "done")
    await expect(page.locator(".run-prompt").first).to_have_text("typed, not clicked")
