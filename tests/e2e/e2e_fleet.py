"""A hub, its nodes and its users for one browser-test module, and small API helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.live import LiveHub, NodeProcess, wait_for

USERS = {"alice": "admin", "olga": "operator", "bob": "viewer"}
TERMINAL = {"succeeded", "failed", "cancelled"}
# Every process a module started, so a failing test can print their logs.
ACTIVE: list[Fleet] = []


@dataclass
class Fleet:
    hub: LiveHub
    tokens: dict[str, str]
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """The admin's API token."""
        return self.tokens["alice"]

    def add_node(self, name: str, labels: str = "", capacity: int = 2) -> NodeProcess:
        node = NodeProcess(self.hub, name, labels=labels, capacity=capacity).start()
        self.nodes[name] = node
        node.wait_ready(self.token)
        return node

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
        self.hub.stop()

    def logs(self) -> str:
        parts = [f"--- hub log ---\n{self.hub.log()}"]
        parts += [f"--- node {name} log ---\n{n.log()}" for name, n in self.nodes.items()]
        return "\n".join(parts)

    # API helpers

    def submit(self, **body: Any) -> dict[str, Any]:
        status, task = self.hub.api("POST", "/api/v1/tasks/", token=self.token, body=body)
        assert status == 201, task
        return task

    def task(self, sid: str) -> dict[str, Any]:
        status, task = self.hub.api("GET", f"/api/v1/tasks/{sid}/", token=self.token)
        assert status == 200, task
        return task

    def node(self, name: str) -> dict[str, Any]:
        status, node = self.hub.api("GET", f"/api/v1/nodes/{name}/", token=self.token)
        assert status == 200, node
        return node

    def task_count(self) -> int:
        return self.hub.api("GET", "/api/v1/tasks/?page_size=1", token=self.token)[1]["count"]

    def wait_task(self, sid: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            task = self.task(sid)
            return task if task["status"] in statuses else None

        return wait_for(reached, timeout=timeout, what=f"task {sid} in {sorted(statuses)}")


def start_fleet(data_dir: Path, nodes: dict[str, str], capacity: int = 2) -> Fleet:
    hub = LiveHub(data_dir).start()
    fleet = Fleet(hub=hub, tokens={})
    ACTIVE.append(fleet)
    try:
        fleet.tokens = hub.create_users(USERS)
        started = [
            NodeProcess(hub, name, labels=labels, capacity=capacity).start()
            for name, labels in nodes.items()
        ]
        for node in started:
            fleet.nodes[node.name] = node
        for node in started:
            node.wait_ready(fleet.token)
    except BaseException:
        print(fleet.logs())
        fleet.stop()
        ACTIVE.remove(fleet)
        raise
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    fleet.stop()
    if fleet in ACTIVE:
        ACTIVE.remove(fleet)
