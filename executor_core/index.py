"""NodeTaskIndex: the reverse index of which tasks run on which node, and for which team.

It answers "what runs on node X" and "where does team T already run" (the affinity hints)
without scanning every task. Updates are O(1): sets per node and per-team node counters,
all under one lock so threads (sync services) and the event loop may share it.
"""

from __future__ import annotations

import threading
from collections import Counter


class NodeTaskIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._placement: dict[str, tuple[str, str | None]] = {}  # session → (node, team)
        self._tasks_by_node: dict[str, set[str]] = {}
        self._team_nodes: dict[str, Counter[str]] = {}  # team → node → active tasks

    def add(self, node_id: str, session_id: str, team_id: str | None = None) -> None:
        """Record that ``session_id`` runs on ``node_id``; a known session moves there."""
        if not node_id or not session_id:
            raise ValueError("node_id and session_id must be non-empty")
        team = team_id or None
        with self._lock:
            self._discard(session_id)
            self._placement[session_id] = (node_id, team)
            self._tasks_by_node.setdefault(node_id, set()).add(session_id)
            if team is not None:
                self._team_nodes.setdefault(team, Counter())[node_id] += 1

    def remove(self, session_id: str) -> str | None:
        """Forget ``session_id``; return the node it was on (None for an unknown session)."""
        with self._lock:
            return self._discard(session_id)

    def _discard(self, session_id: str) -> str | None:
        entry = self._placement.pop(session_id, None)
        if entry is None:
            return None
        node, team = entry
        tasks = self._tasks_by_node[node]
        tasks.discard(session_id)
        if not tasks:
            del self._tasks_by_node[node]
        if team is not None:
            counts = self._team_nodes[team]
            counts[node] -= 1
            if counts[node] <= 0:
                del counts[node]
            if not counts:
                del self._team_nodes[team]
        return node

    def sessions(self) -> list[str]:
        """Every session in the index."""
        with self._lock:
            return list(self._placement)

    def get_tasks_on_node(self, node_id: str) -> list[str]:
        with self._lock:
            return sorted(self._tasks_by_node.get(node_id, ()))

    def get_nodes_by_team(self, team_id: str | None) -> list[str]:
        with self._lock:
            return sorted(self._team_nodes.get(team_id, ())) if team_id else []

    def team_node_counts(
        self, team_id: str | None, *, exclude_session: str | None = None
    ) -> dict[str, int]:
        """Node → number of the team's active tasks there (the scheduler's ``team_nodes``).

        ``exclude_session`` leaves one task out, so a task being re-placed does not count
        itself as a team member.
        """
        if not team_id:
            return {}
        with self._lock:
            counts = dict(self._team_nodes.get(team_id, {}))
            entry = self._placement.get(exclude_session) if exclude_session else None
        if entry is not None and entry[1] == team_id:
            node = entry[0]
            counts[node] -= 1
            if counts[node] <= 0:
                del counts[node]
        return counts

    def node_of(self, session_id: str) -> str | None:
        with self._lock:
            entry = self._placement.get(session_id)
        return entry[0] if entry is not None else None

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._placement

    def __len__(self) -> int:
        return len(self._placement)
