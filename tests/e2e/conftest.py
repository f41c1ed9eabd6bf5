"""Browser tests: Debian's Chromium driven by Playwright (sync API) against a real daphne hub
and real node agents. Each module shares one hub and its nodes; each test gets fresh logged-in
browser contexts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_fleet import ACTIVE
from e2e_pages import DIALOGS, VIEWPORT, wait_live
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support.live import ROLE_PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous bounds for a busy two-core machine; a passing test never waits for them.
TIMEOUT_MS = 20_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and ACTIVE:
        report.sections.append(("hub and node logs", "\n".join(f.logs() for f in ACTIVE)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing, and CI requires the browser tests")
        pytest.skip(f"{CHROMIUM} is not installed")
    # Module scope: the sync API owns an event loop, which must be gone before any async test.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


LoginFactory = Callable[..., Page]


@pytest.fixture
def login(browser: Browser) -> Iterator[LoginFactory]:
    """``login(hub_url, username)``: a new browser context logged in, on the board.

    Any uncaught script error on any of its pages fails the test. Confirmations (``confirm``
    dialogs) are accepted, and their questions kept in ``DIALOGS`` for the test to read.
    """
    contexts = []
    errors: list[str] = []
    DIALOGS.clear()

    def on_page(page: Page) -> None:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (DIALOGS.append(d.message), d.accept()))

    def make(base_url: str, username: str) -> Page:
        context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", on_page)
        contexts.append(context)
        page = context.new_page()
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(ROLE_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base_url}/")
        wait_live(page)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"script errors in the page: {errors}"
