"""/metrics after a real run: it parses, and its task counters equal the database's."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.live import wait_for

pytestmark = pytest.mark.slow
TOKEN = "prometheus-" + "s" * 24


def count(hub: Any, token: str, query: str) -> int:
    status, body = hub.api("GET", f"/api/v1/tasks/?page_size=1&{query}", token=token)
    assert status == 200, body
    return body["count"]


def scrape(hub: Any) -> dict[tuple[str, tuple], float]:
    request = urllib.request.Request(hub.url + "/metrics")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_after_200_tasks_match_the_database(hub_factory: Any, node_factory: Any) -> None:
    hub = hub_factory(extra_env={"HIVEMIND_METRICS_TOKEN": TOKEN})
    token = hub.create_user("alice", "admin")
    node_factory(hub, "m1", capacity=4).wait_ready(token)
    mix = [
        {"agent_id": "echo", "input": "a", "strategy": "golem"},
        {"agent_id": "echo", "input": "b", "strategy": "local"},
        {"agent_id": "fail", "input": "c", "strategy": "local"},
        {"agent_id": "echo", "input": "d", "strategy": "golem", "node_selector": {"gpu": "x"}},
    ]
    for start in (0, 100):
        status, body = hub.api(
            "POST",
            "/api/v1/tasks/batch/",
            token=token,
            body={"tasks": [mix[(start + i) % 4] for i in range(100)]},
        )
        assert status == 201, body
    wait_for(
        lambda: count(hub, token, "status=pending,scheduled,running") == 0,
        timeout=120,
        what="200 tasks to finish",
    )
    got = scrape(hub)
    for status in ("succeeded", "failed", "cancelled"):
        for route in ("local", "golem"):
            expected = count(hub, token, f"status={status}&route={route}")
            key = ("hivemind_tasks_finished_total", (("route", route), ("status", status)))
            assert got.get(key, 0) == expected, (key, got.get(key), expected)
    total = sum(v for (name, _), v in got.items() if name == "hivemind_tasks_finished_total")
    assert total == count(hub, token, "") == 200
    assert got[("hivemind_fallbacks_total", (("kind", "no_feasible_node"),))] == count(
        hub, token, "route=fallback"
    )
    durations = sum(
        v for (name, _), v in got.items() if name == "hivemind_task_duration_seconds_count"
    )
    assert durations == 200
    assert got[("hivemind_nodes", (("status", "ready"),))] == 1
