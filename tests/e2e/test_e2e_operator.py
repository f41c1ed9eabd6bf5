"""An operator at work in Chromium: drain and uncordon reach the node and the next task runs
there; retry and bulk cancel ask first and do what they said; the charts draw; the dark
theme follows the toggle."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_fleet import TERMINAL, Fleet, start_fleet, stop_fleet
from e2e_pages import DIALOGS, wait_live
from playwright.sync_api import expect
from support.live import wait_for

from hivemind_web.dashboard.charts import CHART_TTL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("operator"), {"solo": "zone=a"}, capacity=2)
    yield fleet
    stop_fleet(fleet)


def test_drain_then_uncordon_from_the_node_page_and_the_next_task_runs_there(
    fleet: Fleet, login: Any
) -> None:
    page = login(fleet.hub.url, "alice")
    page.goto("/nodes/solo/")
    wait_live(page)
    page.get_by_role("button", name="Drain", exact=True).click()
    expect(page.locator('[data-node="solo"]')).to_have_attribute("data-status", "cordoned")
    assert DIALOGS and DIALOGS[-1].startswith("Drain solo? It takes no new work")
    takes = page.locator('tr[data-row="Takes new work"] td')
    expect(takes).to_have_text(["no: cordoned", "no: cordoned"])
    expect(page.locator("table.compare")).to_have_attribute("data-acknowledged", "true")
    page.get_by_role("button", name="Uncordon").click()
    expect(takes).to_have_text(["yes", "yes"])
    task = fleet.submit(agent_id="echo", input="after uncordon", strategy="golem")
    done = fleet.wait_task(task["session_id"], TERMINAL)
    assert (done["status"], done["node"]) == ("succeeded", "solo"), done["fallback_reason"]


def test_retry_from_the_task_page_links_both_ways(fleet: Fleet, login: Any) -> None:
    failed = fleet.submit(agent_id="fail", input="on purpose", strategy="local")
    fleet.wait_task(failed["session_id"], {"failed"})
    page = login(fleet.hub.url, "olga")
    page.goto(f"/tasks/{failed['session_id']}/")
    # The stream's first snapshot re-reads the page's live part: a click while it is being
    # swapped lands on the old button's press and the new one's release, and clicks nothing.
    wait_live(page)
    page.wait_for_load_state("networkidle")
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(r"/tasks/(?!" + failed["session_id"] + ")"))
    expect(page.locator('[data-field="retry-of"] a')).to_have_text(failed["session_id"][:8])
    page.goto(f"/tasks/{failed['session_id']}/")
    expect(page.locator('[data-field="retries"] a')).to_have_count(1)


def test_bulk_cancel_names_the_count_and_cancels_exactly_those(fleet: Fleet, login: Any) -> None:
    tasks = [fleet.submit(agent_id="sleep", input="120", strategy="local") for _ in range(3)]
    page = login(fleet.hub.url, "olga")
    page.goto("/?q=sleep&status=pending&status=running")
    wait_live(page)
    page.get_by_role("button", name="Cancel matching…").click()
    # The page's answer (Playwright answers the confirmation while it waits on the page).
    expect(page.locator(".toast")).to_contain_text("Cancelled 3 tasks.")
    wait_for(
        lambda: all(fleet.task(t["session_id"])["status"] == "cancelled" for t in tasks),
        timeout=20,
        what=f"the three tasks cancelled (dialogs: {DIALOGS})",
    )
    assert "Cancel 3 tasks matching these filters?" in DIALOGS


def test_the_charts_draw_and_the_theme_follows_the_toggle(fleet: Fleet, login: Any) -> None:
    echo = fleet.submit(agent_id="echo", input="for the charts", strategy="local")
    fleet.wait_task(echo["session_id"], TERMINAL)
    time.sleep(CHART_TTL)  # the charts a board gets are at most this old
    page = login(fleet.hub.url, "bob")
    expect(page.locator("#charts")).to_have_attribute("data-drawn", re.compile(r"\d"))
    expect(page.locator('[data-chart="throughput"] svg')).to_have_count(1)
    expect(page.locator('[data-chart="durations"] svg')).to_have_attribute(
        "aria-label", re.compile("echo p50")
    )
    light = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    page.locator("#theme-toggle").click()  # auto → dark
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    dark = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert dark != light and dark == "rgb(13, 17, 23)"
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")


def test_a_capacity_patch_shows_on_both_sides_and_four_run_at_once(
    fleet: Fleet, login: Any
) -> None:
    status, body = fleet.hub.api(
        "PATCH", "/api/v1/nodes/solo/", token=fleet.token, body={"capacity": 4}
    )
    assert status == 200, body
    page = login(fleet.hub.url, "alice")
    page.goto("/nodes/solo/")
    wait_live(page)
    expect(page.locator('tr[data-row="Capacity"] td')).to_have_text(["4", "4"])
    tasks = [fleet.submit(agent_id="sleep", input="4", strategy="golem") for _ in range(4)]
    board = page.context.new_page()
    board.goto("/")
    wait_live(board)
    expect(board.locator('[data-node="solo"] .load-text')).to_have_text("4 / 4 running")
    for task in tasks:
        done = fleet.wait_task(task["session_id"], TERMINAL)
        assert (done["status"], done["node"]) == ("succeeded", "solo"), done["fallback_reason"]
