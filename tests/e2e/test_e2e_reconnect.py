"""The server closes the board's socket mid-run (the hub restarts): the pages reconnect, read a
fresh snapshot and show the true state, including what changed while they were cut off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_fleet import Fleet, start_fleet, stop_fleet
from e2e_pages import assert_not_reloaded, mark_page, status_of, task_row
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("reconnect"), {"solo": "zone=a"}, capacity=3)
    yield fleet
    stop_fleet(fleet)


def test_pages_reconnect_after_the_hub_restarts_and_show_the_true_state(
    fleet: Fleet, login: Any
) -> None:
    # One task finishes on its node while the hub is down; the other is cancelled the moment
    # the hub is back, possibly before the pages have reconnected.
    short = fleet.submit(agent_id="sleep", input="3", strategy="golem")["session_id"]
    long = fleet.submit(agent_id="sleep", input="60", strategy="golem")["session_id"]
    for sid in (short, long):
        assert fleet.wait_task(sid, {"running"})["node"] == "solo"
    board = login(fleet.hub.url, "alice")
    task_page = board.context.new_page()
    task_page.goto(f"/tasks/{long}/")
    for page in (board, task_page):
        mark_page(page)
        expect(page.locator("#live-status")).to_have_attribute("data-snapshots", "1")
    expect(status_of(task_row(board, short))).to_have_text("running")
    expect(status_of(task_row(board, long))).to_have_text("running")

    fleet.hub.stop()
    for page in (board, task_page):
        expect(page.locator("#live-status")).to_have_attribute("data-state", "reconnecting")
    fleet.hub.start(migrate=False)
    status, _ = fleet.hub.api("POST", f"/api/v1/tasks/{long}/cancel/", token=fleet.token)
    assert status == 200

    for page in (board, task_page):
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
        expect(page.locator("#live-status")).not_to_have_attribute("data-snapshots", "1")
        assert_not_reloaded(page)
    truth = fleet.wait_task(short, {"succeeded"})
    expect(status_of(task_row(board, short))).to_have_text(truth["status"])
    expect(status_of(task_row(board, long))).to_have_text("cancelled")
    expect(status_of(task_page.locator("#task-live"))).to_have_text("cancelled")
    expect(board.locator('[data-summary="tasks_running"]')).to_have_text("0")
    expect(board.locator('[data-node="solo"] [data-field=status]')).to_have_text("ready")
