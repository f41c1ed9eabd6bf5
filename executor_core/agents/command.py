"""Command agents: a program run as an agent (``NAME=CMD ARGS``, DESIGN §12).

The command line is split with ``shlex`` and run without a shell, in a process group of its
own. The task's input is its stdin; each stdout line goes to the task's log as it comes, and
the whole stdout is the output. A non-zero exit fails the run with the last lines of stderr;
a cancel or a timeout ends the process group. The program sees only a small environment
(PATH, HOME, the locale) plus the variables named in an allow-list, so the host's secrets
(its node token, an LLM key) do not leak into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from executor_core.agents.context import AgentContext
from executor_core.agents.processes import die_with_parent, end_group, read_lines
from executor_core.types import AgentFailure, ExecutionCancelled

BASE_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER")
STDERR_TAIL = 20  # lines of stderr a failure shows
PIPE_GRACE = 1.0  # seconds the pipes may stay open after the program exited
MAX_OUTPUT_BYTES = 4 * 1024 * 1024  # stdout kept as the output; past it the run fails
AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

ERR_SPEC_FORM = "command agent {spec!r}: expected NAME=COMMAND [ARGS]"
ERR_SPEC_NAME = (
    "command agent {name!r}: the name must be 1-128 letters, digits, '_', '.' or '-', "
    "starting with a letter or digit"
)
ERR_SPEC_SPLIT = "command agent {name!r}: cannot split the command line: {exc}"
ERR_SPEC_EMPTY = "command agent {name!r}: the command is empty"
ERR_SPEC_NOT_FOUND = "command agent {name!r}: {program!r} is not an executable file{where}"
ERR_SPEC_DUPLICATE = "command agent {name!r} is defined twice"
ERR_SPEC_CWD = "command agents: working directory {cwd!r} is not a directory"
ERR_SPEC_ENV = "command agents: {var!r} is not an environment variable name"
ERR_EXIT = "command {program!r} exited with status {code}{tail}"
ERR_SIGNAL = "command {program!r} was killed by signal {signal}{tail}"
ERR_OUTPUT = "command {program!r} wrote more than {limit} bytes to stdout"
ERR_START = "command {program!r} could not start: {exc}"


@dataclass(frozen=True)
class CommandAgent:
    """An agent that runs ``argv``; see the module docstring."""

    name: str
    argv: tuple[str, ...]
    cwd: str | None = None
    env_allow: tuple[str, ...] = ()
    timeout: float | None = None
    # Already a process of its own, ended as a group: another wrapping process adds nothing.
    isolation: ClassVar[str] = "inline"

    def environment(self) -> dict[str, str]:
        names = (*BASE_ENVIRONMENT, *self.env_allow)
        return {name: os.environ[name] for name in names if name in os.environ}

    async def run(self, input: str, ctx: AgentContext) -> str:
        program = self.argv[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise AgentFailure(ERR_START.format(program=program, exc=exc)) from None
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdout = bytearray()
        feeding = asyncio.create_task(_feed(proc.stdin, input.encode("utf-8")))
        reading = asyncio.create_task(read_lines(proc.stdout, ctx.log, collect=stdout))
        tail = asyncio.create_task(read_lines(proc.stderr, lambda line: None, keep=STDERR_TAIL))
        exited = asyncio.create_task(_exit_of(proc, reading, tail))
        cancelled = asyncio.create_task(ctx.wait_cancelled())
        try:
            await asyncio.wait({exited, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                raise ExecutionCancelled(f"session {ctx.session_id} was cancelled")
            code = exited.result()
        finally:
            cancelled.cancel()
            # Ends the program and anything it started, whether it finished or not.
            await end_group(proc)
            for task in (feeding, reading, tail, exited):
                task.cancel()
            await asyncio.gather(feeding, reading, tail, exited, return_exceptions=True)
        shown = "\n".join(tail.result()).strip() if not tail.cancelled() else ""
        shown = f": {shown}" if shown else ""
        if code < 0:
            raise AgentFailure(ERR_SIGNAL.format(program=program, signal=-code, tail=shown))
        if code != 0:
            raise AgentFailure(ERR_EXIT.format(program=program, code=code, tail=shown))
        if len(stdout) > MAX_OUTPUT_BYTES:
            raise AgentFailure(ERR_OUTPUT.format(program=program, limit=MAX_OUTPUT_BYTES))
        return stdout.decode("utf-8", "replace")


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Write the input and close stdin; a program that does not read it is no error."""
    with contextlib.suppress(ConnectionError):
        stdin.write(data)
        await stdin.drain()
    with contextlib.suppress(ConnectionError):
        stdin.close()
        await stdin.wait_closed()


async def _exit_of(proc: asyncio.subprocess.Process, *readers: asyncio.Task) -> int:
    """The exit status, once the program exited and its pipes were read to the end (or a
    moment passed: something it left behind may hold them open until its group is ended)."""
    code = await proc.wait()
    await asyncio.wait(readers, timeout=PIPE_GRACE)
    return code


# -- specs -------------------------------------------------------------------------------------


def split_specs(text: str) -> list[str]:
    """``NAME=CMD;NAME2=CMD2`` into its specs; a ``;`` inside quotes does not split."""
    specs, current, quote, escaped = [], [], "", False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            specs.append("".join(current))
            current = []
            continue
        current.append(char)
    specs.append("".join(current))
    return [spec.strip() for spec in specs if spec.strip()]


def parse_command_agent(
    spec: str,
    *,
    cwd: str | None = None,
    env_allow: Iterable[str] = (),
    timeout: float | None = None,
) -> CommandAgent:
    """One ``NAME=CMD ARGS`` spec as an agent, or ValueError saying what is wrong with it."""
    name, sep, command = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(ERR_SPEC_FORM.format(spec=spec))
    if not AGENT_NAME.match(name):
        raise ValueError(ERR_SPEC_NAME.format(name=name))
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ValueError(ERR_SPEC_SPLIT.format(name=name, exc=exc)) from None
    if not argv:
        raise ValueError(ERR_SPEC_EMPTY.format(name=name))
    if cwd is not None and not os.path.isdir(cwd):
        raise ValueError(ERR_SPEC_CWD.format(cwd=cwd))
    allowed = tuple(env_allow)
    for var in allowed:
        if not ENV_NAME.match(var):
            raise ValueError(ERR_SPEC_ENV.format(var=var))
    program = argv[0]
    if os.sep in program:
        path = os.path.join(cwd or os.getcwd(), program)
        found = os.path.isfile(path) and os.access(path, os.X_OK)
        where = ""
    else:
        found = shutil.which(program) is not None
        where = " on PATH"
    if not found:
        raise ValueError(ERR_SPEC_NOT_FOUND.format(name=name, program=program, where=where))
    return CommandAgent(name, argv, cwd=cwd, env_allow=allowed, timeout=timeout)


def parse_command_agents(
    specs: Iterable[str],
    *,
    cwd: str | None = None,
    env_allow: Iterable[str] = (),
    timeout: float | None = None,
) -> list[CommandAgent]:
    """Several specs (names must differ); ValueError on the first bad one."""
    agents: dict[str, CommandAgent] = {}
    allowed = tuple(env_allow)
    for spec in specs:
        agent = parse_command_agent(spec, cwd=cwd, env_allow=allowed, timeout=timeout)
        if agent.name in agents:
            raise ValueError(ERR_SPEC_DUPLICATE.format(name=agent.name))
        agents[agent.name] = agent
    return list(agents.values())
