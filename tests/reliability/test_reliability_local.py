"""Local execution end to end on a real hub with the embedded defaults (SQLite)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import events, get_task, submit, wait_task
from support.live import wait_for

pytestmark = pytest.mark.slow


def test_an_echo_task_succeeds_with_its_output(live_hub: Any, admin_token: str) -> None:
    task = submit(live_hub, admin_token, agent_id="echo", input="hi", strategy="local")
    done = wait_task(live_hub, admin_token, task["session_id"], "succeeded")
    assert (done["output"], done["route"], done["progress"]) == ("hi", "local", 100.0)
    assert done["started_at"] and done["finished_at"]
    kinds = [k for k, _, _ in events(live_hub, admin_token, task["session_id"])]
    assert kinds == ["submitted", "routed", "started", "succeeded"]


def test_sleep_reports_rising_progress_and_cancel_stops_it(live_hub: Any, admin_token: str) -> None:
    task = submit(live_hub, admin_token, agent_id="sleep", input="2", strategy="local")
    sid = task["session_id"]
    seen: list[float] = []

    def risen() -> bool:
        seen.append(get_task(live_hub, admin_token, sid)["progress"])
        return len({p for p in seen if 0 < p < 100}) >= 2

    wait_for(risen, timeout=10, interval=0.05, what="progress rising")
    assert seen == sorted(seen)
    status, body = live_hub.api("POST", f"/api/v1/tasks/{sid}/cancel/", token=admin_token)
    assert (status, body["status"]) == (200, "cancelled")
    frozen = get_task(live_hub, admin_token, sid)["progress"]
    time.sleep(0.5)  # had the agent kept running, progress would have moved by now
    after = get_task(live_hub, admin_token, sid)
    assert (after["status"], after["progress"]) == ("cancelled", frozen)
    # The slot is free again: a new run starts and finishes.
    other = submit(live_hub, admin_token, agent_id="echo", input="next", strategy="local")
    assert wait_task(live_hub, admin_token, other["session_id"], "succeeded")["output"] == "next"


def test_a_failing_agent_fails_the_task_with_its_error(live_hub: Any, admin_token: str) -> None:
    task = submit(live_hub, admin_token, agent_id="fail", input="boom", strategy="local")
    done = wait_task(live_hub, admin_token, task["session_id"], "failed")
    assert "boom" in done["error"]


def test_a_full_local_queue_refuses_submissions(hub_factory: Any) -> None:
    hub = hub_factory(
        extra_env={"HIVEMIND_LOCAL_CONCURRENCY": "1", "HIVEMIND_LOCAL_QUEUE_LIMIT": "1"}
    )
    token = hub.create_user("alice", "operator")
    first = submit(hub, token, agent_id="sleep", input="5", strategy="local")
    wait_task(hub, token, first["session_id"], "running")
    second = submit(hub, token, agent_id="sleep", input="5", strategy="local")
    wait_for(
        lambda: any(k == "routed" for k, _, _ in events(hub, token, second["session_id"])),
        timeout=5,
        what="the second run queued",
    )
    status, body = hub.api(
        "POST",
        "/api/v1/tasks/",
        token=token,
        body={"agent_id": "echo", "input": "x", "strategy": "local"},
    )
    assert status == 503 and "at capacity" in body["detail"]
    _, listed = hub.api("GET", "/api/v1/tasks/", token=token)
    assert listed["count"] == 2  # the refused one was not stored
