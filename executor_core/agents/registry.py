"""The AgentRunner protocol and the registry mapping agent ids to runners (built-ins + plugins)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Protocol, runtime_checkable

from executor_core.agents.builtin import BUILTIN_AGENTS
from executor_core.agents.context import AgentContext
from executor_core.agents.isolation import (
    INLINE,
    ISOLATIONS,
    check_runner,
    invoke,
)
from executor_core.types import UnknownAgentError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hivemind.agents"
ERR_NOT_A_RUNNER = "{what} is not an agent runner (it needs a name and a run(input, ctx))"
ERR_BAD_NAME = "agent name must be a non-empty string, got {name!r}"
ERR_ISOLATION = "the default isolation must be one of {choices}, got {value!r}"
ERR_DUPLICATE = "an agent named {name!r} is already registered"


@runtime_checkable
class AgentRunner(Protocol):
    """Runs one agent: takes the input, reports through ``ctx``, returns the output.

    ``run`` may also be a plain ``def`` (it then runs in a worker thread); a runner may set
    ``isolation = "process"`` and ``timeout`` (seconds), see ``agents.isolation``, and may
    declare ``validate_input(input)``, raising ValueError with what is expected, so a bad
    input is refused at submission rather than failing the run later.
    """

    name: str

    async def run(self, input: str, ctx: AgentContext) -> str: ...


def _is_runner(obj: object) -> bool:
    return callable(getattr(obj, "run", None))


class AgentRegistry:
    """Agent id → runner. Itself a runner that dispatches on ``ctx.agent_id``, running each
    agent with its own isolation or, when it declares none, the registry's ``isolation``."""

    name = "registry"

    def __init__(self, runners: Iterable[AgentRunner] = (), *, isolation: str = INLINE) -> None:
        self._runners: dict[str, AgentRunner] = {}
        self.isolation = isolation
        for runner in runners:
            self.register(runner)

    def register(
        self, runner: AgentRunner, name: str | None = None, *, replace: bool = False
    ) -> None:
        """Register ``runner`` under ``name`` (default: ``runner.name``)."""
        if not _is_runner(runner):
            raise TypeError(ERR_NOT_A_RUNNER.format(what=repr(runner)))
        key = name if name is not None else getattr(runner, "name", None)
        if not isinstance(key, str) or not key.strip():
            raise ValueError(ERR_BAD_NAME.format(name=key))
        if key in self._runners and not replace:
            raise ValueError(ERR_DUPLICATE.format(name=key))
        check_runner(runner)
        self._runners[key] = runner

    def get(self, agent_id: str) -> AgentRunner:
        try:
            return self._runners[agent_id]
        except KeyError:
            raise UnknownAgentError(agent_id, self._runners) from None

    def names(self) -> list[str]:
        return sorted(self._runners)

    def input_error(self, agent_id: str, input: str) -> str:
        """Why ``input`` is no input for the agent (its ``validate_input`` says), or ""."""
        check = getattr(self._runners.get(agent_id), "validate_input", None)
        if check is None:
            return ""
        try:
            check(input)
        except ValueError as exc:
            return str(exc) or "invalid input"
        return ""

    def models(self, agents: Iterable[str] | None = None) -> list[str]:
        """The models the agents (all, or those named) serve, from their ``models``."""
        names = self._runners if agents is None else [a for a in agents if a in self._runners]
        served: set[str] = set()
        for name in names:
            served.update(getattr(self._runners[name], "models", ()) or ())
        return sorted(served)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._runners

    def __len__(self) -> int:
        return len(self._runners)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    @property
    def isolation(self) -> str:
        return self._isolation

    @isolation.setter
    def isolation(self, value: str) -> None:
        if value not in ISOLATIONS:
            raise ValueError(ERR_ISOLATION.format(choices=", ".join(ISOLATIONS), value=value))
        self._isolation = value

    async def run(self, input: str, ctx: AgentContext) -> str:
        return await invoke(self.get(ctx.agent_id), input, ctx, isolation=self._isolation)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register the agents other distributions declare; return the names added.

        An entry point may name a runner instance, a runner class or a factory returning a
        runner; it is registered under the entry point's name. A plugin that fails to load or
        clashes with a registered name is logged and skipped: one bad plugin must not keep
        the hub or a node from starting.
        """
        added: list[str] = []
        for entry_point in metadata.entry_points(group=group):
            try:
                runner = _instantiate(entry_point.load())
                self.register(runner, entry_point.name)
            except Exception:
                logger.exception(
                    "skipping agent plugin %r (%s)", entry_point.name, entry_point.value
                )
                continue
            added.append(entry_point.name)
        return added


def _instantiate(obj: object) -> AgentRunner:
    """Accept a runner, a runner class or a zero-argument factory."""
    if isinstance(obj, type) or (not _is_runner(obj) and callable(obj)):
        obj = obj()
    if not _is_runner(obj):
        raise TypeError(ERR_NOT_A_RUNNER.format(what=repr(obj)))
    return obj  # type: ignore[return-value]


def default_registry(*, entry_points: bool = True) -> AgentRegistry:
    """A fresh registry holding the built-in agents and, unless disabled, the plugins."""
    registry = AgentRegistry(agent() for agent in BUILTIN_AGENTS)
    if entry_points:
        registry.load_entry_points()
    return registry
