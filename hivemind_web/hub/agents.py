"""The hub's agent registry: built-ins plus plugins of the ``hivemind.agents`` entry points."""

from __future__ import annotations

from functools import cache

from executor_core.agents import AgentRegistry, default_registry


@cache
def hub_registry() -> AgentRegistry:
    return default_registry()
