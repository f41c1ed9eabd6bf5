"""Page helpers for the browser tests."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 900}
ACTION_BUTTONS = ["Cancel", "Force fallback", "Cordon", "Uncordon", "Drain"]
# The questions of the confirmation dialogs the pages asked (all accepted), oldest first.
DIALOGS: list[str] = []


def wait_live(page: Page) -> None:
    """The page's stream is open and has applied a snapshot."""
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


def mark_page(page: Page) -> None:
    """Tag the document: if the tag is still there later, the page was never reloaded."""
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def task_row(page: Page, sid: str) -> Locator:
    return page.locator(f'tr[data-session-id="{sid}"]')


def node_card(page: Page, name: str) -> Locator:
    return page.locator(f'[data-node="{name}"]')


def status_of(container: Locator) -> Locator:
    return container.locator("[data-field=status]").first


def record_progress(page: Page) -> None:
    """Record every value the task table's progress bars take, as the page sets them."""
    page.evaluate(
        """() => {
          window.__progress = {};
          const rows = document.getElementById("task-rows");
          const note = (bar) => {
            const row = bar.closest("tr[data-session-id]");
            if (!row) return;
            const value = Number(bar.getAttribute("aria-valuenow"));
            (window.__progress[row.dataset.sessionId] ||= []).push(value);
          };
          new MutationObserver((changes) => {
            for (const change of changes) {
              if (change.type === "attributes") note(change.target);
              for (const added of change.addedNodes || []) {
                if (!added.querySelectorAll) continue;
                added.querySelectorAll("[role=progressbar]").forEach(note);
              }
            }
          }).observe(rows, {
            subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"],
          });
        }"""
    )


def progress_seen(page: Page, sid: str) -> list[float]:
    return page.evaluate(f"(window.__progress || {{}})[{sid!r}] || []")


def buttons_named(page: Page, names: list[str]) -> list[str]:
    """Which of ``names`` the page shows as buttons."""
    return [name for name in names if page.get_by_role("button", name=name, exact=True).count()]


def session_of(url: str) -> str:
    match = re.search(r"/tasks/([0-9a-f-]{36})/", url)
    assert match, url
    return match.group(1)
