"""The hub's agent registry: built-ins, plugins of the ``hivemind.agents`` entry points, the
llm agent when ``HIVEMIND_LLM_*`` configure it, and the command agents of
``HIVEMIND_COMMAND_AGENTS``, run with ``HIVEMIND_AGENT_ISOLATION``."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from executor_core.agents import AgentRegistry, default_registry
from executor_core.agents.llm import LlmAgent


@cache
def hub_registry() -> AgentRegistry:
    cfg = settings.HIVEMIND
    registry = default_registry()
    registry.isolation = cfg["AGENT_ISOLATION"]
    agents = [LlmAgent(cfg["LLM"])] if cfg["LLM"] is not None else []
    for agent in [*agents, *cfg["COMMAND_AGENTS"]]:
        if agent.name in registry:
            raise ImproperlyConfigured(
                f"agent {agent.name!r} (HIVEMIND_LLM_* or HIVEMIND_COMMAND_AGENTS): a plugin "
                "agent has that name"
            )
        registry.register(agent)
    return registry
