"""Small helpers for the real-process tests: submit, wait, read the index."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.live import LiveHub, NodeProcess, wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}


def submit(hub: LiveHub, token: str, **body: Any) -> dict[str, Any]:
    status, task = hub.api("POST", "/api/v1/tasks/", token=token, body=body)
    assert status == 201, task
    return task


def get_task(hub: LiveHub, token: str, sid: str) -> dict[str, Any]:
    status, task = hub.api("GET", f"/api/v1/tasks/{sid}/", token=token)
    assert status == 200, task
    return task


def wait_task(
    hub: LiveHub, token: str, sid: str, statuses: set[str] | str, timeout: float = 30
) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses

    def check() -> dict[str, Any] | None:
        task = get_task(hub, token, sid)
        return task if task["status"] in wanted else None

    try:
        return wait_for(check, timeout=timeout, what=f"task {sid} in {sorted(wanted)}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nevents: {events(hub, token, sid)}\nhub log:\n{hub.log()}"
        ) from None


def events(hub: LiveHub, token: str, sid: str) -> list[tuple[str, str, dict]]:
    _, body = hub.api("GET", f"/api/v1/tasks/{sid}/events/?page_size=500", token=token)
    return [(e["kind"], e["actor"], e["data"]) for e in body["results"]]


def tasks_on_node(hub: LiveHub, token: str, node: str) -> set[str]:
    _, body = hub.api("GET", f"/api/v1/nodes/{node}/tasks/", token=token)
    return {t["session_id"] for t in body["results"]}


def nodes_of_team(hub: LiveHub, token: str, team: str) -> set[str]:
    _, body = hub.api("GET", f"/api/v1/teams/{team}/nodes/", token=token)
    return set(body["nodes"])


def node_status(hub: LiveHub, token: str, name: str) -> str:
    _, body = hub.api("GET", f"/api/v1/nodes/{name}/", token=token)
    return body["status"]


def create_team(hub: LiveHub, token: str, name: str, on_failure: str, max_retries: int = 1) -> None:
    status, body = hub.api(
        "POST",
        "/api/v1/teams/",
        token=token,
        body={"name": name, "on_failure": on_failure, "max_retries": max_retries},
    )
    assert status == 201, body


@contextmanager
def running_fleet(
    path: Path, nodes: dict[str, dict[str, Any]]
) -> Iterator[tuple[LiveHub, str, dict[str, NodeProcess]]]:
    """A hub and a node process per ``{name: NodeProcess keyword arguments}``, all ready;
    yields ``(hub, admin token, nodes)`` and kills everything afterwards."""
    hub = LiveHub(path)
    hub.start()
    processes: dict[str, NodeProcess] = {}
    try:
        token = hub.create_user("alice", "admin")
        for name, kwargs in nodes.items():
            processes[name] = NodeProcess(hub, name, **kwargs).start()
        for node in processes.values():
            node.wait_ready(token)
        yield hub, token, processes
    finally:
        for node in processes.values():
            node.kill()
        hub.stop()
