"""The hub's agent registry: built-ins, plugins of the ``hivemind.agents`` entry points, and
the command agents of ``HIVEMIND_COMMAND_AGENTS``, run with ``HIVEMIND_AGENT_ISOLATION``."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from executor_core.agents import AgentRegistry, default_registry


@cache
def hub_registry() -> AgentRegistry:
    cfg = settings.HIVEMIND
    registry = default_registry()
    registry.isolation = cfg["AGENT_ISOLATION"]
    for agent in cfg["COMMAND_AGENTS"]:
        if agent.name in registry:
            raise ImproperlyConfigured(
                f"HIVEMIND_COMMAND_AGENTS: command agent {agent.name!r}: a plugin agent has "
                "that name"
            )
        registry.register(agent)
    return registry
