"""Several hub processes sharing PostgreSQL and Redis (DESIGN §13): when one hub dies, a
node listing two hubs moves to the survivor, and a node that can only reach the dead hub is
not judged lost by the survivor while its own hub is the one that went quiet, so no task of
a live node runs twice."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import TERMINAL, events, submit, wait_task
from support.live import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# Long enough that the old behaviour (silence judged as soon as the survivor stops hearing
# a node) fails the single-homed node's task well inside the outage.
TIMINGS = {"HIVEMIND_LOST_AFTER": "15", "HIVEMIND_HEARTBEAT_GRACE": "2"}
OUTAGE = 25.0


def test_one_hub_killed_for_25s_reruns_nothing_whose_node_was_alive(
    hub_factory: Any, node_factory: Any, postgres_url: str, redis_url: str
) -> None:
    common = {"database_url": postgres_url, "redis_url": redis_url, "extra_env": TIMINGS}
    a = hub_factory("a", instance="hub-a", **common)
    b = hub_factory("b", instance="hub-b", **common)
    token = b.create_user("alice", "admin")
    single = node_factory(a, "single", capacity=1, labels="home=single")
    double = node_factory(
        a, "double", capacity=1, labels="home=double", extra_args=("--hub", f"{a.url},{b.url}")
    )
    single.wait_ready(token)
    double.wait_ready(token)
    tasks = {
        name: submit(
            b, token, agent_id="sleep", input="40", strategy="golem", node_selector={"home": name}
        )["session_id"]
        for name in ("single", "double")
    }
    for sid in tasks.values():
        assert wait_task(b, token, sid, "running")["route"] == "golem"
    a.kill()
    killed_at = time.monotonic()
    wait_for(
        lambda: f"connected to ws://127.0.0.1:{b.port}/ws/nodes/" in double.log(),
        timeout=15,
        what="the two-hub node to move to the survivor",
    )
    wait_for(
        lambda: b.api("GET", "/api/v1/nodes/double/", token=token)[1]["status"] == "ready",
        timeout=15,
        what="the moved node ready on the survivor",
    )
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - killed_at)))
    # Through the whole outage, nothing of either live node was failed or run again.
    for sid in tasks.values():
        task = b.api("GET", f"/api/v1/tasks/{sid}/", token=token)[1]
        assert (task["status"], task["attempts"]) == ("running", 1), events(b, token, sid)
    a.start(migrate=False)
    for name, sid in tasks.items():
        done = wait_task(b, token, sid, TERMINAL, timeout=60)
        assert (done["status"], done["node"], done["attempts"]) == ("succeeded", name, 1), events(
            b, token, sid
        )
        kinds = [k for k, _, _ in events(b, token, sid)]
        assert kinds.count("started") == 1 and "failed" not in kinds
    assert single.stats()["started"] == 1 and double.stats()["started"] == 1
