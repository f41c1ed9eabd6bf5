"""Agents: a node lists the agents it can run; an empty list means it runs any agent."""

from __future__ import annotations

from executor_core.scheduling.types import NodeView, ScheduleRequest

NAME = "NodeAgents"
REASON = "not supporting agent {agent}"


def supports(agents: frozenset[str], agent_id: str) -> bool:
    return not agents or agent_id in agents


class Agents:
    name = NAME

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        if supports(node.agents, request.agent_id):
            return None
        return REASON.format(agent=request.agent_id)
