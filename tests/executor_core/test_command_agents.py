"""Command agents: real programs, run without a shell, ended with their process group."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import psutil
import pytest

from executor_core.agents import AgentContext, CommandAgent, parse_command_agents, split_specs
from executor_core.agents.command import parse_command_agent
from executor_core.types import AgentFailure, ExecutionCancelled

PY = sys.executable


def agent(script: str, **options) -> CommandAgent:
    return CommandAgent("cmd", (PY, "-c", script), **options)


def context(lines: list[str]) -> AgentContext:
    return AgentContext("cmd", "s-1", on_log=lines.extend)


async def test_it_echoes_stdin_and_streams_stdout_lines() -> None:
    lines: list[str] = []
    output = await parse_command_agent("echo=cat").run("one\ntwo\n", context(lines))
    assert output == "one\ntwo\n"
    assert lines == ["one", "two"]


async def test_lines_reach_the_log_while_the_program_still_runs() -> None:
    lines: list[str] = []
    script = "import time\nprint('first', flush=True)\ntime.sleep(30)"
    run = asyncio.create_task(agent(script).run("", ctx := context(lines)))
    for _ in range(200):
        if lines:
            break
        await asyncio.sleep(0.05)
    assert lines == ["first"] and not run.done()
    ctx.cancel()
    with pytest.raises(ExecutionCancelled):
        await run


async def test_a_non_zero_exit_fails_with_the_last_stderr_lines() -> None:
    script = (
        "import sys\n"
        "for i in range(30): print(f'noise {i}', file=sys.stderr)\n"
        "print('disk full', file=sys.stderr)\n"
        "sys.exit(3)"
    )
    with pytest.raises(AgentFailure) as failure:
        await agent(script).run("", context([]))
    message = str(failure.value)
    assert message.startswith(f"command {PY!r} exited with status 3: ")
    assert message.endswith("noise 29\ndisk full") and "noise 10\n" not in message


async def test_a_cancel_kills_the_program_and_what_it_started() -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)"
    )
    lines: list[str] = []
    ctx = context(lines)
    run = asyncio.create_task(agent(script).run("", ctx))
    for _ in range(200):
        if lines:
            break
        await asyncio.sleep(0.05)
    grandchild = psutil.Process(int(lines[0]))
    program = grandchild.parent()
    ctx.cancel()
    with pytest.raises(ExecutionCancelled):
        await asyncio.wait_for(run, 10)
    for proc in (program, grandchild):
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


async def test_a_timeout_kills_it_and_fails_the_run() -> None:
    from executor_core.agents.isolation import invoke

    slow = agent("import time; time.sleep(60)", timeout=0.5)
    with pytest.raises(AgentFailure, match=r"agent 'cmd' timed out after 0.5s"):
        await invoke(slow, "", context([]))
    assert not [p for p in psutil.Process().children(recursive=True) if p.is_running()]


async def test_it_runs_in_its_directory_with_only_the_allowed_environment(tmp_path: Path):
    os.environ["HIVEMIND_TEST_SECRET"] = "s3cret"
    os.environ["HIVEMIND_TEST_SHOWN"] = "visible"
    try:
        script = "import os; print(os.getcwd()); print(sorted(os.environ))"
        shown = agent(script, cwd=str(tmp_path), env_allow=("HIVEMIND_TEST_SHOWN",))
        output = await shown.run("", context([]))
    finally:
        del os.environ["HIVEMIND_TEST_SECRET"], os.environ["HIVEMIND_TEST_SHOWN"]
    cwd, names = output.splitlines()
    assert cwd == str(tmp_path)
    assert "HIVEMIND_TEST_SHOWN" in names and "HIVEMIND_TEST_SECRET" not in names


def test_specs_split_on_semicolons_outside_quotes() -> None:
    assert split_specs("a=cat; b=sh -c 'echo 1; echo 2' ;;") == [
        "a=cat",
        "b=sh -c 'echo 1; echo 2'",
    ]
    agents = parse_command_agents(split_specs("upper=tr a-z A-Z;lines=wc -l"))
    assert [(a.name, a.argv) for a in agents] == [
        ("upper", ("tr", "a-z", "A-Z")),
        ("lines", ("wc", "-l")),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cat", "expected NAME=COMMAND"),
        ("=cat", "expected NAME=COMMAND"),
        ("bad name=cat", "the name must be 1-128 letters"),
        ("x=", "the command is empty"),
        ("x=echo 'unclosed", "cannot split the command line: No closing quotation"),
        ("x=no-such-program-here", "'no-such-program-here' is not an executable file on PATH"),
        ("x=./missing.sh", "'./missing.sh' is not an executable file"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_command_agent(spec)


def test_bad_options_and_duplicates_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse_command_agents(["a=cat", "a=tr a b"])
    with pytest.raises(ValueError, match="is not a directory"):
        parse_command_agents(["a=cat"], cwd=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="'A-B' is not an environment variable name"):
        parse_command_agents(["a=cat"], env_allow=["A-B"])
