"""Fifty nodes and a thousand tasks: the board stays equal to the API (count, filters, pages),
its node cards go compact, sort naturally and group by a label, and it applies frames fast
(the test prints how long)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_fleet import USERS, Fleet, stop_fleet
from e2e_sim import SimFleet
from playwright.sync_api import Page, expect
from support.live import LiveHub, wait_for
from test_e2e_board_truth import api_count, expect_count, submit_batch

pytestmark = pytest.mark.e2e

NODES = {f"n{i}": {"zone": "a" if i % 2 else "b"} for i in range(1, 51)}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, SimFleet]]:
    hub = LiveHub(tmp_path_factory.mktemp("scale")).start()
    fleet = Fleet(hub=hub, tokens=hub.create_users(USERS))
    sims = SimFleet(hub, NODES, capacity=4, work=0.2).start()
    try:
        wait_for(
            lambda: (
                hub.api("GET", "/api/v1/nodes/?page_size=100", token=fleet.token)[1]["count"] == 50
                and all(
                    n["status"] == "ready"
                    for n in hub.api("GET", "/api/v1/nodes/?page_size=100", token=fleet.token)[1][
                        "results"
                    ]
                )
            ),
            timeout=60,
            what="50 simulated nodes ready",
        )
        yield fleet, sims
    finally:
        sims.stop()
        stop_fleet(fleet)


def frame_times(page: Page) -> dict[str, float]:
    stats = page.evaluate("window.hivemindBoard")
    apply, render = stats["applyMs"], stats["renderMs"]
    return {
        "frames": stats["frames"],
        "apply_p50": statistics.median(apply),
        "apply_max": max(apply),
        "render_p50": statistics.median(render),
        "render_p95": sorted(render)[int(0.95 * (len(render) - 1))],
        "render_max": max(render),
    }


def test_fifty_nodes_and_a_thousand_tasks_keep_the_board_equal_to_the_api(
    fleet: tuple[Fleet, SimFleet], login: Any
) -> None:
    fleet_, _sims = fleet
    board = login(fleet_.hub.url, "alice")
    succeeded = login(fleet_.hub.url, "bob")
    succeeded.goto("/?status=succeeded&page=3")
    mix = [
        {"agent_id": "echo", "input": "golem work", "strategy": "golem"},
        {"agent_id": "echo", "input": "auto work", "strategy": "auto"},
        {"agent_id": "echo", "input": "local work", "strategy": "local"},
        {"agent_id": "fail", "input": "on purpose", "strategy": "local"},
    ]
    for start in range(0, 1000, 250):
        submit_batch(fleet_, [mix[(start + i) % 4] for i in range(250)])
    wait_for(
        lambda: api_count(fleet_, "status=pending,scheduled,running") == 0,
        timeout=240,
        what="1,000 tasks to finish",
    )
    expect_count(board, api_count(fleet_))
    expect_count(succeeded, api_count(fleet_, "status=succeeded"))
    expect(succeeded.locator("#page-info")).to_contain_text("Page 3 of")
    _, third = fleet_.hub.api(
        "GET", "/api/v1/tasks/?status=succeeded&page=3&page_size=50", token=fleet_.token
    )
    expect(succeeded.locator("#task-rows tr").first).to_have_attribute(
        "data-session-id", third["results"][0]["session_id"]
    )
    golem_on_nodes = api_count(fleet_, "route=golem")
    assert golem_on_nodes > 0
    board.get_by_label("Route").select_option("golem")
    expect_count(board, golem_on_nodes)

    # Fifty cards: compact, in natural order (n1, n2 ... n10, not n1, n10, n2).
    grid = board.locator("#node-grid")
    expect(grid).to_have_class(re.compile("compact"))
    names = grid.locator("[data-node]").evaluate_all("els => els.map(e => e.dataset.node)")
    assert names == [f"n{i}" for i in range(1, 51)]
    board.locator("#node-group").select_option("zone")
    expect(grid.locator(".node-group")).to_have_text(["zone=a", "zone=b"])
    expect(board).to_have_url(re.compile(r"group=zone"))
    first_group = grid.locator(":scope > [data-key]").evaluate_all(
        "els => els.slice(0, 4).map(e => e.dataset.key)"
    )
    assert first_group == ["group:a", "n1", "n3", "n5"]

    times = frame_times(board)
    print(
        f"\nboard with 50 nodes, 1000 tasks: {times['frames']} frames; applying a frame "
        f"p50 {times['apply_p50']:.2f} ms (max {times['apply_max']:.1f} ms); rendering "
        f"p50 {times['render_p50']:.2f} ms, p95 {times['render_p95']:.2f} ms "
        f"(max {times['render_max']:.1f} ms)"
    )
    assert times["frames"] > 0
