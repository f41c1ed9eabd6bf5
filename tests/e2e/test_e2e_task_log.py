"""The task page streams its agent's log live and keeps only the last lines (a real browser, a
real hub whose tasks keep their last 40 lines, a real node)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_fleet import ACTIVE, USERS, Fleet
from e2e_pages import assert_not_reloaded, mark_page, status_of
from playwright.sync_api import expect
from support.live import LiveHub, NodeProcess

pytestmark = pytest.mark.e2e

KEPT = 40


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    data: Path = tmp_path_factory.mktemp("task-log")
    hub = LiveHub(data, extra_env={"HIVEMIND_MAX_LOG_LINES": str(KEPT)}).start()
    fleet = Fleet(hub=hub, tokens=hub.create_users(USERS))
    ACTIVE.append(fleet)
    fleet.nodes["worker"] = NodeProcess(hub, "worker").start()
    fleet.nodes["worker"].wait_ready(fleet.token)
    yield fleet
    fleet.stop()
    ACTIVE.remove(fleet)


def log_lines(page: Any) -> list[str]:
    return page.locator("#task-log").inner_text().splitlines()


def test_the_log_streams_while_the_task_runs(fleet: Fleet, login: Any) -> None:
    page = login(fleet.hub.url, "olga")
    task = fleet.submit(agent_id="count", input="30 0.2", strategy="golem")
    page.goto(f"/tasks/{task['session_id']}/")
    mark_page(page)
    live = page.locator("#task-live")
    log = page.locator("#task-log")
    expect(log).to_contain_text("3\n")
    assert status_of(live).inner_text() == "running", "lines showed before the end"
    expect(status_of(live)).to_have_text("succeeded")
    expect(log).to_contain_text("30\n")
    assert log_lines(page) == [str(i) for i in range(1, 31)]
    assert_not_reloaded(page)


def test_the_page_tails_the_last_lines_of_a_chatty_agent(fleet: Fleet, login: Any) -> None:
    page = login(fleet.hub.url, "olga")
    task = fleet.submit(agent_id="count", input="400 0.01", strategy="golem")
    page.goto(f"/tasks/{task['session_id']}/")
    live = page.locator("#task-live")
    expect(page.locator("#log-title")).to_contain_text(f"the last {KEPT} lines")
    page.evaluate(
        """() => {
          window.__mostLines = 0;
          const live = document.getElementById("task-live");
          new MutationObserver(() => {
            const box = document.getElementById("task-log");
            const count = box ? box.textContent.split("\\n").length - 1 : 0;
            window.__mostLines = Math.max(window.__mostLines, count);
          }).observe(live, { subtree: true, childList: true, characterData: true });
        }"""
    )
    expect(status_of(live)).to_have_text("succeeded")
    expect(page.locator("#task-log")).to_contain_text("400\n")
    lines = log_lines(page)
    assert lines == [str(i) for i in range(401 - KEPT, 401)]
    assert 0 < page.evaluate("window.__mostLines") <= KEPT
    assert fleet.task(task["session_id"])["log"] == lines
