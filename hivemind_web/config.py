"""Strict reading of settings from the environment: a bad value raises, never a silent default."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from executor_core.scheduling.framework import Framework, Profile


def env_str(name: str, default: str = "") -> str:
    """A string setting; ``NAME_FILE`` pointing at a file (a mounted secret) wins over ``NAME``."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from exc
    return os.environ.get(name, default)


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ImproperlyConfigured(f"{name} must be {bound}, got {value}")
    return value


def env_float(
    name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
) -> float:
    """A finite number: ``nan`` or ``inf`` would turn a timeout into "never"."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {raw!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum:g}..{maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise ImproperlyConfigured(f"{name} must be {bound}, got {raw!r}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


_RATE = re.compile(r"^[1-9][0-9]*/(s|sec|m|min|h|hour|d|day)$")


def env_rate(name: str, default: str) -> str:
    """A rate limit as DRF writes it: ``10/min`` (per second, minute, hour or day)."""
    raw = os.environ.get(name) or default
    if not _RATE.match(raw):
        raise ImproperlyConfigured(f"{name} must be a rate such as 10/min, got {raw!r}")
    return raw


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name) or default
    if raw not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def env_command_agents() -> list[Any]:
    """``HIVEMIND_COMMAND_AGENTS`` (``NAME=CMD ARGS;NAME2=...``) as command agents, with the
    options ``HIVEMIND_COMMAND_CWD``, ``HIVEMIND_COMMAND_ENV`` (names passed through) and
    ``HIVEMIND_COMMAND_TIMEOUT`` (seconds)."""
    from executor_core.agents import parse_command_agents, split_specs
    from executor_core.agents.builtin import BUILTIN_AGENTS

    specs = split_specs(os.environ.get("HIVEMIND_COMMAND_AGENTS", ""))
    timeout = env_float("HIVEMIND_COMMAND_TIMEOUT", 0.0) or None
    try:
        agents = parse_command_agents(
            specs,
            cwd=os.environ.get("HIVEMIND_COMMAND_CWD") or None,
            env_allow=env_list("HIVEMIND_COMMAND_ENV", []),
            timeout=timeout,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"HIVEMIND_COMMAND_AGENTS: {exc}") from None
    builtin = {agent.name for agent in BUILTIN_AGENTS}
    for agent in agents:
        if agent.name in builtin:
            raise ImproperlyConfigured(
                f"HIVEMIND_COMMAND_AGENTS: command agent {agent.name!r}: a built-in agent "
                "has that name"
            )
    return agents


def env_llm() -> Any:
    """The llm agent's configuration (``HIVEMIND_LLM_*``), None when not configured."""
    from executor_core.agents.llm import llm_config_from_env

    try:
        return llm_config_from_env()
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def env_scheduler_profile(name: str) -> Profile | None:
    """The scheduler's plugins as JSON, ``{"filters": [...], "scores": {"name": weight}}``
    (either key may be left out); None when unset: the built-in default profile."""
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        profile = Profile.from_dict(json.loads(raw))
        Framework(profile)  # an unknown plugin fails at start, not at the first decision
    except (ValueError, LookupError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    return profile


def persistent_secret(path: Path) -> str:
    """Generate a secret on first run and keep it, so sessions survive a restart."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        return value


def private_file(path: Path) -> None:
    """Make sure ``path`` exists and only its owner may read it (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    mode = path.stat().st_mode
    if mode & 0o077 and path.stat().st_uid == os.getuid():  # made before this rule: tighten
        path.chmod(0o600)
