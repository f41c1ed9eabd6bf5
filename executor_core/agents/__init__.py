"""Agents: the runner protocol, the run context, the registry and the built-in agents."""

from __future__ import annotations

from executor_core.agents.builtin import CountAgent, EchoAgent, FailAgent, SleepAgent
from executor_core.agents.command import CommandAgent, parse_command_agents, split_specs
from executor_core.agents.context import AgentContext
from executor_core.agents.isolation import INLINE, ISOLATIONS, PROCESS
from executor_core.agents.registry import (
    ENTRY_POINT_GROUP,
    AgentRegistry,
    AgentRunner,
    default_registry,
)
from executor_core.types import AgentFailure, UnknownAgentError

__all__ = [
    "ENTRY_POINT_GROUP",
    "INLINE",
    "ISOLATIONS",
    "PROCESS",
    "AgentContext",
    "AgentFailure",
    "AgentRegistry",
    "AgentRunner",
    "CommandAgent",
    "CountAgent",
    "EchoAgent",
    "FailAgent",
    "SleepAgent",
    "UnknownAgentError",
    "default_registry",
    "parse_command_agents",
    "split_specs",
]
