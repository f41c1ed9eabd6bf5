"""The board and the submit form in a real browser, against a hub with three real nodes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_fleet import TERMINAL, Fleet, start_fleet, stop_fleet
from e2e_pages import (
    ARTIFACTS,
    REPO,
    VIEWPORT,
    assert_not_reloaded,
    mark_page,
    node_card,
    progress_seen,
    record_progress,
    session_of,
    status_of,
    task_row,
)
from playwright.sync_api import Browser, expect
from support.live import wait_for

pytestmark = pytest.mark.e2e

NODES = {"alpha": "zone=a,gpu=true", "beta": "zone=a,gpu=false", "gamma": "zone=b,gpu=false"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path_factory.mktemp("board"), NODES)
    yield fleet
    stop_fleet(fleet)


def test_a_visitor_is_sent_to_the_login_page(browser: Browser, fleet: Fleet) -> None:
    context = browser.new_context(base_url=fleet.hub.url, viewport=VIEWPORT)
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(f"{fleet.hub.url}/accounts/login/?next=/")
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    context.close()


def test_a_task_submitted_from_the_form_appears_live_rises_and_succeeds(
    fleet: Fleet, login: Any
) -> None:
    board = login(fleet.hub.url, "olga")
    mark_page(board)
    record_progress(board)

    form = board.context.new_page()
    form.goto("/tasks/new/")
    form.get_by_label("Agent").select_option("sleep")
    form.get_by_label("Input").fill("3")
    form.get_by_label("Strategy").select_option("golem")
    form.get_by_role("button", name="Submit").click()
    form.wait_for_url("**/tasks/*/")
    sid = session_of(form.url)

    # The board, open all along and never reloaded, shows the task arrive and finish.
    row = task_row(board, sid)
    expect(row).to_be_visible()
    expect(status_of(row)).to_have_text("succeeded")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    assert_not_reloaded(board)
    seen = progress_seen(board, sid)
    assert any(0 < value < 100 for value in seen), f"no progress between 0 and 100: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert fleet.task(sid)["status"] == "succeeded"
    # The task page followed it too.
    expect(status_of(form.locator("#task-live"))).to_have_text("succeeded")
    expect(form.locator(".output")).to_have_text("slept 3.0s")


def test_a_form_with_bad_fields_shows_each_error_and_creates_nothing(
    fleet: Fleet, login: Any
) -> None:
    before = fleet.task_count()
    page = login(fleet.hub.url, "olga")
    page.goto("/tasks/new/")
    # An agent the hub does not know can only come from a forged form: the server checks it.
    page.eval_on_selector(
        "select[name=agent_id]", "s => s.add(new Option('teleport', 'teleport', true, true))"
    )
    page.get_by_label("Input").fill("1")
    page.get_by_label("Node selector").fill("zone=a\nnot a label")
    page.get_by_label("Affinity").select_option("require_colocate")
    page.get_by_role("button", name="Submit").click()

    expect(page.locator('[data-error-for="agent_id"]')).to_contain_text("unknown agent 'teleport'")
    expect(page.locator('[data-error-for="node_selector"]')).to_contain_text(
        "'not a label' is not of the form key=value"
    )
    expect(page.locator('[data-error-for="affinity"]')).to_contain_text("team")
    assert page.locator("[data-error-for]").count() == 3
    # Each message sits in its own field's block, next to the input it is about.
    for name in ("agent_id", "node_selector", "affinity"):
        field = page.locator(".field", has=page.locator(f"[name={name}]"))
        expect(field.locator(f'[data-error-for="{name}"]')).to_be_visible()
        expect(field.locator(f"[name={name}]")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Input")).to_have_value("1")
    assert fleet.task_count() == before


def test_the_filters_narrow_the_table_live(fleet: Fleet, login: Any) -> None:
    page = login(fleet.hub.url, "alice")
    failed = fleet.submit(agent_id="fail", input="on purpose", strategy="local")
    fleet.wait_task(failed["session_id"], {"failed"})
    page.locator("label.chip", has_text="failed").click()
    expect(page).to_have_url(f"{fleet.hub.url}/?status=failed")
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(task_row(page, failed["session_id"])).to_be_visible()
    # A task that does not match never shows up; one that does, does.
    ok = fleet.submit(agent_id="echo", input="x", strategy="local")
    again = fleet.submit(agent_id="fail", input="again", strategy="local")
    expect(task_row(page, again["session_id"])).to_be_visible()
    assert task_row(page, ok["session_id"]).count() == 0
    page.get_by_label("Search").fill(again["session_id"])
    expect(page.locator("#task-rows tr")).to_have_count(1)
    expect(task_row(page, again["session_id"])).to_be_visible()


def test_board_screenshot_with_three_nodes_and_twenty_tasks(fleet: Fleet, login: Any) -> None:
    mix = [
        {"agent_id": "sleep", "input": "40", "strategy": "golem", "team": "research",
         "affinity": "prefer_spread"},
        {"agent_id": "sleep", "input": "40", "strategy": "golem", "node_selector": {"gpu": "true"}},
        {"agent_id": "echo", "input": "hello", "strategy": "auto"},
        {"agent_id": "sleep", "input": "1", "strategy": "local", "team": "ops"},
        {"agent_id": "fail", "input": "model quota exceeded", "strategy": "local"},
    ]  # fmt: skip
    missing = 20 - fleet.task_count()
    submitted = [fleet.submit(**mix[i % len(mix)]) for i in range(missing)]
    for task in submitted:
        if task["agent_id"] != "sleep" or task["input"] != "40":
            fleet.wait_task(task["session_id"], TERMINAL)
    wait_for(
        lambda: sum(fleet.node(n)["running"] for n in NODES) >= 3,
        timeout=20,
        what="several tasks running on the nodes",
    )
    page = login(fleet.hub.url, "alice")
    expect(page.locator("#task-rows tr")).to_have_count(20)
    for name in NODES:
        expect(status_of(node_card(page, name))).to_have_text("ready")
    expect(page.locator("#node-grid [data-node]")).to_have_count(3)
    # Let the progress bars move a little so the picture shows a working fleet.
    moving = "#task-rows tr[data-status=running] [aria-valuenow]:not([aria-valuenow='0'])"
    wait_for(lambda: page.locator(moving).count() >= 4, timeout=20, what="progress on the board")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "board.png"
    page.screenshot(path=str(shot), full_page=True)
    (REPO / "static" / "img").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, REPO / "static" / "img" / "board.png")
    assert shot.stat().st_size > 10_000
