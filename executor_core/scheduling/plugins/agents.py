"""Agents: a node lists the agents it can run; an empty list means it runs any agent."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeAgents"
REASON = "not supporting agent {agent}"


class Agents(Filter):
    name = NAME
    transient = False
    indexed = True

    def index_key(self, request: ScheduleRequest) -> Hashable:
        return request.agent_id

    request_key = index_key

    def prefilter(self, request: ScheduleRequest) -> Narrow:
        agent = request.agent_id
        why = REASON.format(agent=agent)

        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if not n.agents or agent in n.agents]
            reject(rejected, why, nodes, kept)
            return kept

        return narrow
