"""``hivemind-node``: run a Golem node agent against a hub.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when the node cannot run (credentials
refused, registration failed, state dir unusable), 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from executor_core import __version__
from executor_core.agents import (
    INLINE,
    ISOLATIONS,
    AgentRegistry,
    default_registry,
    parse_command_agents,
)
from executor_core.agents.llm import LlmAgent, llm_config_from_env
from executor_core.labels import (
    LabelError,
    format_labels,
    names_error,
    node_name_error,
    parse_labels,
)
from executor_core.node import protocol
from executor_core.node.agent import NodeAgent, NodeConfig
from executor_core.node.connection import HubURLError, check_hub_urls
from executor_core.node.register import RegistrationError, register_node
from executor_core.node.state import NodeState, StateError, default_state_dir

logger = logging.getLogger("hivemind.node")

ENV_TOKEN = "HIVEMIND_NODE_TOKEN"
ENV_JOIN_TOKEN = "HIVEMIND_JOIN_TOKEN"
ERR_NO_CREDENTIALS = (
    f"no credentials: pass --token or --join-token (or set {ENV_TOKEN} or {ENV_JOIN_TOKEN}); "
    "no token is stored for this node and hub in {path}"
)


def _hubs(value: str) -> tuple[str, ...]:
    try:
        return check_hub_urls(value)
    except HubURLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name(value: str) -> str:
    problem = node_name_error(value)
    if problem:
        raise argparse.ArgumentTypeError(f"node name {value!r} {problem}")
    return value


def _labels(value: str) -> dict[str, str]:
    try:
        return parse_labels(value)
    except LabelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _capabilities(value: str) -> tuple[str, ...]:
    names = sorted({name.strip() for name in value.split(",") if name.strip()})
    problem = names_error(names, what="capabilities")
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return tuple(names)


def _capacity(value: str) -> int:
    try:
        capacity = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"capacity must be an integer, got {value!r}") from None
    if not 1 <= capacity <= protocol.MAX_CAPACITY:
        raise argparse.ArgumentTypeError(
            f"capacity must be between 1 and {protocol.MAX_CAPACITY}, got {capacity}"
        )
    return capacity


def _seconds(*, allow_zero: bool = False) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
        if not (seconds >= 0 if allow_zero else seconds > 0) or seconds > 86400:
            low = "0" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"must be {low} and at most 86400, got {value!r}")
        return seconds

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hivemind-node",
        description="Run a Golem node: connect out to a Hivemind hub and run the SubAgents "
        "it assigns.",
    )
    parser.add_argument(
        "--hub",
        required=True,
        type=_hubs,
        help="hub base URL, http(s)://HOST:PORT; several, comma-separated, for hub processes "
        "sharing one database: the node uses one and fails over to the next",
    )
    parser.add_argument(
        "--name", required=True, type=_name, help="node name (lowercase DNS label, <= 63 chars)"
    )
    parser.add_argument(
        "--labels", type=_labels, default={}, help="node labels, k=v,k2=v2 (Kubernetes syntax)"
    )
    parser.add_argument(
        "--capacity",
        type=_capacity,
        default=1,
        help=f"tasks run at once, 1-{protocol.MAX_CAPACITY} (default 1)",
    )
    parser.add_argument(
        "--capabilities",
        type=_capabilities,
        default=(),
        help="what this node offers, comma-separated (browser,gpu_inference): tasks that "
        "require capabilities only go to nodes advertising all of them",
    )
    credentials = parser.add_mutually_exclusive_group()
    credentials.add_argument(
        "--token", help=f"the node's token (or {ENV_TOKEN}; prefer the variable: flags show in ps)"
    )
    credentials.add_argument(
        "--join-token",
        help=f"register with this join token and store the node's token (or {ENV_JOIN_TOKEN})",
    )
    parser.add_argument(
        "--agents", help="agents this node runs, comma-separated (default: all registered)"
    )
    parser.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        default=INLINE,
        help="how agents that do not say run: inline (async on the node's loop, a plain def "
        "in a worker thread) or process (a child process, killed with its group on cancel, "
        "timeout or drain); default inline",
    )
    commands = parser.add_argument_group("command agents")
    commands.add_argument(
        "--command-agent",
        action="append",
        default=[],
        metavar='NAME="CMD ARGS"',
        help="run a program as agent NAME (repeatable): argv split like a shell would, run "
        "without one, the input on stdin, stdout lines to the task log, stdout the output",
    )
    commands.add_argument(
        "--command-cwd", metavar="DIR", help="working directory of command agents"
    )
    commands.add_argument(
        "--command-env",
        default="",
        metavar="VAR,VAR",
        help="environment variables passed to command agents besides PATH, HOME and the locale",
    )
    commands.add_argument(
        "--command-timeout",
        type=_seconds(),
        help="seconds a command agent may run before it is killed (default: no limit)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where the token, undelivered results and counters are kept "
        "(default: $XDG_STATE_HOME/hivemind-node or ~/.local/state/hivemind-node)",
    )
    parser.add_argument(
        "--heartbeat", type=_seconds(), default=5.0, help="seconds between heartbeats (5)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=_seconds(allow_zero=True),
        default=30.0,
        help="seconds to let running tasks finish on SIGTERM before they are failed (30)",
    )
    parser.add_argument(
        "--max-backoff",
        type=_seconds(),
        default=10.0,
        help="longest wait between reconnection attempts, in seconds (10)",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info"
    )
    parser.add_argument("--version", action="version", version=f"hivemind-node {__version__}")
    return parser


def _registry(args: argparse.Namespace, parser: argparse.ArgumentParser) -> AgentRegistry:
    """The built-ins, the plugins, the llm agent when configured and the command agents,
    run with the chosen isolation."""
    registry = default_registry()
    registry.isolation = args.isolation
    try:
        llm = llm_config_from_env()
        if llm is not None:
            registry.register(LlmAgent(llm))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        env_allow = [v.strip() for v in args.command_env.split(",") if v.strip()]
        commands = parse_command_agents(
            args.command_agent,
            cwd=args.command_cwd,
            env_allow=env_allow,
            timeout=args.command_timeout,
        )
        for agent in commands:
            if agent.name in registry:
                raise ValueError(f"command agent {agent.name!r}: an agent of that name exists")
            registry.register(agent)
    except ValueError as exc:
        parser.error(f"--command-agent: {exc}")
    return registry


def _agents(
    value: str | None, registry: AgentRegistry, parser: argparse.ArgumentParser
) -> tuple[str, ...]:
    if value is None:
        return tuple(registry.names())
    agents = tuple(dict.fromkeys(a.strip() for a in value.split(",") if a.strip()))
    if not agents:
        parser.error("--agents: name at least one agent")
    unknown = [a for a in agents if a not in registry]
    if unknown:
        parser.error(
            f"--agents: unknown agent(s) {', '.join(unknown)} "
            f"(registered: {', '.join(registry.names()) or 'none'})"
        )
    return agents


def _token(args: argparse.Namespace, state: NodeState, parser: argparse.ArgumentParser) -> str:
    """The node's token: given, stored by an earlier registration, or registered for now.

    Flags win over the environment; a stored token wins over registering again, so a
    restart with the same --join-token does not register twice.
    """
    token = args.token or (None if args.join_token else os.environ.get(ENV_TOKEN))
    if token:
        return token
    stored = state.stored_token(args.hub)
    if stored:
        logger.info("using the token stored in %s", state.credentials_path)
        return stored
    join_token = args.join_token or os.environ.get(ENV_JOIN_TOKEN)
    if not join_token:
        parser.error(ERR_NO_CREDENTIALS.format(path=state.credentials_path))
    logger.info("registering with %s", ",".join(args.hub))
    token = register_node(
        args.hub,
        join_token=join_token,
        name=args.name,
        labels=args.labels,
        capacity=args.capacity,
        max_backoff=args.max_backoff,
    )
    state.store_token(args.hub, token)
    logger.info("registered; token stored in %s", state.credentials_path)
    return token


def _configure_logging(level: str, name: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s hivemind-node[{name}] %(message)s",
    )
    # These libraries log every frame or request; only their problems matter here.
    quiet = max(logging.WARNING, logging.getLogger().level)
    for chatty in ("websockets", "httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(chatty).setLevel(quiet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    registry = _registry(args, parser)
    agents = _agents(args.agents, registry, parser)
    _configure_logging(args.log_level, args.name)
    state = NodeState(args.state_dir.expanduser(), args.name)
    try:
        state.ensure_directory()
        with state.locked():
            config = NodeConfig(
                hubs=args.hub,
                name=args.name,
                token=_token(args, state, parser),
                labels=args.labels,
                capacity=args.capacity,
                agents=agents,
                capabilities=args.capabilities,
                models=tuple(registry.models(agents)),
                heartbeat=args.heartbeat,
                drain_timeout=args.drain_timeout,
                max_backoff=args.max_backoff,
            )
            logger.info(
                "node %s: capacity %d, agents %s (isolation %s), models %s, labels %s, "
                "capabilities %s",
                config.name,
                config.capacity,
                ",".join(config.agents),
                registry.isolation,
                ",".join(config.models) or "none",
                format_labels(config.labels) or "none",
                ",".join(config.capabilities) or "none",
            )
            return asyncio.run(NodeAgent(config, registry, state).run())
    except (StateError, RegistrationError) as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the agent installed its own handler
        return 130


if __name__ == "__main__":
    sys.exit(main())
