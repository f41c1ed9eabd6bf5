"""The board never lies (DESIGN §14): after hundreds of tasks and a reconnect its count, pages
and filters equal the API's; a search in the URL survives a reload and a shared link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_fleet import TERMINAL, Fleet, start_fleet, stop_fleet
from e2e_pages import task_row, wait_live
from playwright.sync_api import Page, expect
from support.live import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(
        tmp_path_factory.mktemp("truth"), {"n1": "zone=a", "n2": "zone=b"}, capacity=4
    )
    yield fleet
    stop_fleet(fleet)


def submit_batch(fleet: Fleet, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status, body = fleet.hub.api(
        "POST", "/api/v1/tasks/batch/", token=fleet.token, body={"tasks": items}
    )
    assert status == 201, body
    return body


def api_count(fleet: Fleet, query: str = "") -> int:
    status, body = fleet.hub.api("GET", f"/api/v1/tasks/?page_size=1&{query}", token=fleet.token)
    assert status == 200, body
    return body["count"]


def all_finished(fleet: Fleet) -> bool:
    active = api_count(fleet, "status=pending,scheduled,running")
    return active == 0


def shown_count(page: Page) -> int:
    return int(page.locator("#task-count").inner_text().strip("()"))


def expect_count(page: Page, count: int) -> None:
    expect(page.locator("#task-count")).to_have_text(f"({count})")


def test_the_count_equals_the_database_after_300_tasks_and_a_reconnect(
    fleet: Fleet, login: Any
) -> None:
    board = login(fleet.hub.url, "alice")
    failed_view = login(fleet.hub.url, "bob")
    failed_view.goto("/?status=failed")
    wait_live(failed_view)
    mix = [
        {"agent_id": "echo", "input": "local work", "strategy": "local"},
        {"agent_id": "echo", "input": "remote work", "strategy": "golem"},
        {"agent_id": "fail", "input": "on purpose", "strategy": "local"},
    ]
    for start in range(0, 300, 100):
        submit_batch(fleet, [mix[(start + i) % 3] for i in range(100)])
    wait_for(lambda: all_finished(fleet), timeout=120, what="300 tasks to finish")
    # Before, every update of a task not on the page added one: "Tasks (1873)" for 323.
    expect_count(board, api_count(fleet))
    expect_count(failed_view, api_count(fleet, "status=failed"))
    expect(board.locator("#task-rows tr")).to_have_count(50)
    expect(board.locator("#page-info")).to_have_text(f"Page 1 of {-(-api_count(fleet) // 50)}")

    fleet.hub.restart()
    # Cut off, the pages miss what happens now; they must show it once reconnected.
    submit_batch(fleet, [mix[2]] * 7)
    for page in (board, failed_view):
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    wait_for(lambda: all_finished(fleet), timeout=60, what="the late tasks to finish")
    expect_count(board, api_count(fleet))
    expect_count(failed_view, api_count(fleet, "status=failed"))
    # Page 2 is the API's page 2, row for row.
    board.locator("#page-next").click()
    _, second = fleet.hub.api("GET", "/api/v1/tasks/?page=2&page_size=50", token=fleet.token)
    expect(board.locator("#task-rows tr").first).to_have_attribute(
        "data-session-id", second["results"][0]["session_id"]
    )
    expect(board.locator("#task-rows tr")).to_have_count(50)


def test_a_search_in_the_url_survives_a_reload_and_finds_short_ids(
    fleet: Fleet, login: Any
) -> None:
    needle = fleet.submit(agent_id="echo", input="needle in the haystack", strategy="local")
    fleet.wait_task(needle["session_id"], TERMINAL)
    page = login(fleet.hub.url, "bob")
    page.goto("/?q=echo")
    wait_live(page)
    expected = api_count(fleet, "q=echo")
    assert expected > 50
    # Before, a search from the URL showed 0 results (the API: 39).
    expect_count(page, expected)
    expect(page.get_by_label("Search")).to_have_value("echo")
    page.reload()
    wait_live(page)
    expect_count(page, expected)

    page.get_by_label("Search").fill("haystack")
    expect_count(page, 1)
    expect(task_row(page, needle["session_id"])).to_be_visible()
    expect(page).to_have_url(f"{fleet.hub.url}/?q=haystack")

    # The 8 characters the table shows find the task too.
    short = needle["session_id"][:8]
    page.goto(f"/?q={short}")
    wait_live(page)
    expect_count(page, api_count(fleet, f"q={short}"))
    expect(task_row(page, needle["session_id"])).to_be_visible()
    assert shown_count(page) >= 1


def test_a_fallback_is_marked_and_filterable_and_the_local_executor_shows(
    fleet: Fleet, login: Any
) -> None:
    fell = fleet.submit(
        agent_id="echo", input="x", strategy="golem", node_selector={"zone": "mars"}
    )
    fleet.wait_task(fell["session_id"], TERMINAL)
    page = login(fleet.hub.url, "bob")
    row = task_row(page, fell["session_id"])
    expect(row.locator(".badge.fellback")).to_have_text("fell back")
    expect(row.locator(".badge.fellback")).to_have_attribute("title", re.compile("zone=mars"))
    page.get_by_label("Route").select_option("fallback")
    expect(page).to_have_url(re.compile(r"route=fallback"))
    expect_count(page, api_count(fleet, "route=fallback"))
    expect(page.locator("#task-rows tr .badge.fellback")).to_have_count(
        min(50, api_count(fleet, "route=fallback"))
    )
    # The local executor's card: its slots, what runs and what waits.
    card = page.locator("#local-card")
    expect(card.locator('[data-local="running"]')).to_have_text(re.compile(r"^\d+ / 4 running$"))
    expect(card.locator('[data-local="queued"]')).to_have_text("nothing queued")
    # A red failed tile means something failed.
    failed = api_count(fleet, "status=failed")
    expect(page.locator(".tile-failed")).to_have_class(re.compile("tile-alarm" if failed else ""))
