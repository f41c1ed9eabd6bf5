"""Operator actions in a real browser: force fallback, cordon, what a viewer may do, and a
node agent dying under an open board."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_fleet import TERMINAL, Fleet, start_fleet, stop_fleet
from e2e_pages import (
    ACTION_BUTTONS,
    assert_not_reloaded,
    buttons_named,
    mark_page,
    node_card,
    status_of,
    task_row,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

NODES = {"alpha": "zone=a", "beta": "zone=a", "gamma": "zone=b"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("operations"), NODES)
    yield fleet
    stop_fleet(fleet)


def test_force_fallback_from_the_task_page_runs_the_task_locally(fleet: Fleet, login: Any) -> None:
    task = fleet.submit(agent_id="sleep", input="4", strategy="golem")
    sid = task["session_id"]
    remote = fleet.wait_task(sid, {"running"})
    assert remote["route"] == "golem" and remote["node"] in NODES
    page = login(fleet.hub.url, "olga")
    page.goto(f"/tasks/{sid}/")
    live = page.locator("#task-live")
    expect(live.locator("[data-field=route]")).to_have_text("golem")
    mark_page(page)

    page.get_by_role("button", name="Force fallback").click()

    expect(live.locator("[data-field=route]")).to_have_text("local")
    forced = live.locator("li[data-kind=force_fallback]")
    expect(forced).to_contain_text("by olga")
    expect(forced).to_contain_text(f"from node: {remote['node']}")
    expect(live.locator(".placement")).to_contain_text("forced to local by olga")
    expect(status_of(live)).to_have_text("succeeded")
    expect(live.locator("[data-field=node]")).to_have_text("—")
    assert_not_reloaded(page)
    done = fleet.task(sid)
    assert (done["status"], done["route"], done["node"]) == ("succeeded", "local", None)


def test_a_node_cordoned_from_its_page_gets_no_new_tasks_and_the_board_shows_it(
    fleet: Fleet, login: Any
) -> None:
    board = login(fleet.hub.url, "alice")
    mark_page(board)
    page = board.context.new_page()
    page.goto("/nodes/beta/")
    card = page.locator('[data-node="beta"]')
    expect(status_of(card)).to_have_text("ready")
    expect(page.locator("#load-plot svg")).to_be_visible()

    page.get_by_role("button", name="Cordon", exact=True).click()

    expect(status_of(card)).to_have_text("cordoned")
    expect(page.get_by_role("button", name="Uncordon")).to_be_visible()
    expect(status_of(node_card(board, "beta"))).to_have_text("cordoned")
    assert_not_reloaded(board)
    try:
        # Four slots remain on alpha and gamma: every task fits there, none lands on beta.
        tasks = [fleet.submit(agent_id="sleep", input="1", strategy="golem") for _ in range(4)]
        placed = [fleet.wait_task(t["session_id"], TERMINAL) for t in tasks]
        assert {t["node"] for t in placed} <= {"alpha", "gamma"}
        assert {t["route"] for t in placed} == {"golem"}
        for task in tasks:
            expect(task_row(board, task["session_id"])).not_to_contain_text("beta")
    finally:
        page.get_by_role("button", name="Uncordon").click()
        expect(status_of(node_card(board, "beta"))).to_have_text("ready")


def test_a_viewer_sees_the_board_but_no_action_buttons_and_a_forged_post_is_refused(
    fleet: Fleet, login: Any
) -> None:
    task = fleet.submit(agent_id="sleep", input="30", strategy="golem")
    sid = task["session_id"]
    running = fleet.wait_task(sid, {"running"})
    page = login(fleet.hub.url, "bob")
    expect(status_of(task_row(page, sid))).to_have_text("running")
    expect(page.locator("#node-grid [data-node]")).to_have_count(3)
    assert buttons_named(page, ACTION_BUTTONS) == []
    assert page.get_by_role("link", name="New task").count() == 0
    assert page.locator("#fallback-switch button").count() == 0
    page.goto(f"/tasks/{sid}/")
    expect(status_of(page.locator("#task-live"))).to_have_text("running")
    assert buttons_named(page, ACTION_BUTTONS) == []
    page.goto(f"/nodes/{running['node']}/")
    expect(page.locator(f'[data-node="{running["node"]}"]')).to_be_visible()
    assert buttons_named(page, ACTION_BUTTONS) == []
    assert page.goto("/tasks/new/").status == 403

    # Forged requests with a valid session and CSRF token: the server still says no.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": token, "Referer": fleet.hub.url + "/"}
    for path in (
        f"/tasks/{sid}/cancel/",
        f"/tasks/{sid}/fallback/",
        f"/nodes/{running['node']}/cordon/",
        f"/nodes/{running['node']}/drain/",
        "/fallback-mode/",
    ):
        response = page.request.post(path, headers=headers, form={"enabled": "1"})
        assert response.status == 403, (path, response.status)
    after = fleet.task(sid)
    assert (after["status"], after["route"]) == ("running", "golem")
    assert fleet.node(running["node"])["status"] == "ready"
    status, mode = fleet.hub.api("GET", "/api/v1/fallback-mode/", token=fleet.token)
    assert status == 200 and mode["enabled"] is False
    fleet.hub.api("POST", f"/api/v1/tasks/{sid}/cancel/", token=fleet.token)


def test_the_team_page_shows_where_members_run_and_whether_their_rule_holds(
    fleet: Fleet, login: Any
) -> None:
    page = login(fleet.hub.url, "bob")
    first = fleet.submit(agent_id="sleep", input="20", strategy="golem", team="blue",
                         affinity="require_spread")  # fmt: skip
    fleet.wait_task(first["session_id"], {"running"})
    page.goto("/teams/blue/")
    rows = page.locator("#team-live tr[data-session-id]")
    expect(rows).to_have_count(1)
    second = fleet.submit(agent_id="sleep", input="20", strategy="golem", team="blue",
                          affinity="require_spread")  # fmt: skip
    # The new member shows up without a reload, on another node, and both rules hold.
    expect(rows).to_have_count(2)
    expect(page.locator("#team-live [data-rule=met]")).to_have_count(2)
    nodes = {fleet.wait_task(t["session_id"], {"running"})["node"] for t in (first, second)}
    assert len(nodes) == 2
    for task in (first, second):
        fleet.hub.api("POST", f"/api/v1/tasks/{task['session_id']}/cancel/", token=fleet.token)
    expect(page.locator("#team-live tr[data-session-id] [data-field=status]")).to_have_text(
        ["cancelled", "cancelled"]
    )


def test_a_killed_node_agent_turns_not_ready_on_an_open_board(fleet: Fleet, login: Any) -> None:
    doomed = fleet.add_node("delta", labels="zone=c")
    board = login(fleet.hub.url, "olga")
    mark_page(board)
    card = node_card(board, "delta")
    expect(status_of(card)).to_have_text("ready")

    doomed.kill()

    expect(status_of(card)).to_have_text("not_ready")
    expect(card).to_have_attribute("data-status", "not_ready")
    assert_not_reloaded(board)
    assert fleet.node("delta")["status"] == "not_ready"
