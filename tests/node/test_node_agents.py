"""A real node process running command agents and agents that would stall an event loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from node_support import REPO, FakeHub, node_command
from support.plugin_agents import install_plugins
from test_node_runs import eventually

PY = sys.executable
LINES = (
    f'lines={PY} -c "import time\n'
    "for i in range(3): print('line', i, flush=True); time.sleep(0.4)\""
)
EXIT_3 = (
    f"exit3={PY} -c \"import sys; print('partial'); "
    "sys.stderr.write('no such model\\n'); sys.exit(3)\""
)
SPAWNER = (
    f'spawner={PY} -c "import subprocess, sys, time; '
    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    'print(c.pid, flush=True); time.sleep(120)"'
)


def log_lines(hub: FakeHub, sid: str) -> list[str]:
    return [line for frame in hub.matching("task.log", session_id=sid) for line in frame["lines"]]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


async def test_command_agents_echo_stream_fail_and_are_killed_on_cancel(
    fake_hub: FakeHub, spawn_node
):
    node = spawn_node(
        fake_hub,
        "--command-agent", "cat=cat",
        "--command-agent", LINES,
        "--command-agent", EXIT_3,
        "--command-agent", SPAWNER,
    )  # fmt: skip
    hello = await fake_hub.wait_connected()
    assert {"cat", "lines", "exit3", "spawner"} <= set(hello["agents"])

    await fake_hub.assign("s-cat", "cat", "to stdin\nand back\n")
    finished = await fake_hub.wait_for("task.finished", session_id="s-cat")
    assert (finished["status"], finished["output"]) == ("succeeded", "to stdin\nand back\n")
    assert log_lines(fake_hub, "s-cat") == ["to stdin", "and back"]

    await fake_hub.assign("s-lines", "lines")
    first = await fake_hub.wait_for("task.log", session_id="s-lines")
    assert first["lines"][0] == "line 0"
    assert not fake_hub.matching("task.finished", session_id="s-lines"), "streamed, not at the end"
    finished = await fake_hub.wait_for("task.finished", session_id="s-lines")
    assert finished["output"] == "line 0\nline 1\nline 2\n"
    assert log_lines(fake_hub, "s-lines") == ["line 0", "line 1", "line 2"]

    await fake_hub.assign("s-exit", "exit3")
    finished = await fake_hub.wait_for("task.finished", session_id="s-exit")
    assert finished["status"] == "failed"
    assert finished["error"] == f"command {PY!r} exited with status 3: no such model"

    await fake_hub.assign("s-spawn", "spawner")
    pid_line = await fake_hub.wait_for("task.log", session_id="s-spawn")
    grandchild = psutil.Process(int(pid_line["lines"][0]))
    assert grandchild in descendants(node.proc.pid)
    await fake_hub.send("task.cancel", session_id="s-spawn")
    finished = await fake_hub.wait_for("task.finished", session_id="s-spawn", timeout=10)
    assert finished["status"] == "cancelled"
    await eventually(lambda: not descendants(node.proc.pid), "no child process left")
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE


async def test_a_busy_plain_def_agent_does_not_stop_the_heartbeats(
    fake_hub: FakeHub, spawn_node, tmp_path: Path
):
    # Heartbeats every 0.3 s; the agent spins 5 s, many times the beat (the hub's grace is
    # three beats), on the node's own process: only its worker thread is busy.
    spawn_node(fake_hub, env={"PYTHONPATH": install_plugins(tmp_path / "plugins")})
    hello = await fake_hub.wait_connected()
    assert {"busy", "busy-isolated"} <= set(hello["agents"])
    await fake_hub.assign("s-busy", "busy", "5")
    await fake_hub.wait_for("task.accepted", session_id="s-busy")
    beats_from = len(fake_hub.frames)
    started = time.monotonic()
    finished = await fake_hub.wait_for("task.finished", session_id="s-busy", timeout=30)
    assert finished["status"] == "succeeded" and finished["output"].startswith("spun ")
    assert time.monotonic() - started > 3
    beats = fake_hub.matching("heartbeat", since=beats_from)
    assert len(beats) >= 8, f"{len(beats)} heartbeats during a 5 s busy run"


async def test_a_cancel_kills_a_busy_isolated_agent(fake_hub: FakeHub, spawn_node, tmp_path):
    node = spawn_node(fake_hub, env={"PYTHONPATH": install_plugins(tmp_path / "plugins")})
    await fake_hub.wait_connected()
    await fake_hub.assign("s-spin", "busy-isolated", "120")
    pid_line = await fake_hub.wait_for("task.log", session_id="s-spin")
    child = psutil.Process(int(pid_line["lines"][0].split()[1]))
    assert child.pid != node.proc.pid and child in descendants(node.proc.pid)
    await fake_hub.send("task.cancel", session_id="s-spin")
    finished = await fake_hub.wait_for("task.finished", session_id="s-spin", timeout=10)
    assert finished["status"] == "cancelled"
    await eventually(lambda: not descendants(node.proc.pid), "the agent's process gone")


async def test_the_isolation_flag_runs_every_agent_in_a_process_and_drain_kills_it(
    fake_hub: FakeHub, spawn_node, tmp_path: Path
):
    node = spawn_node(
        fake_hub,
        "--isolation", "process", "--drain-timeout", "0.5",
        env={"PYTHONPATH": install_plugins(tmp_path / "plugins")},
    )  # fmt: skip
    await fake_hub.wait_connected()
    await fake_hub.assign("s-echo", "echo", "from a child")
    assert (await fake_hub.wait_for("task.finished", session_id="s-echo"))["output"] == (
        "from a child"
    )
    await fake_hub.assign("s-spin", "busy", "120")
    pid_line = await fake_hub.wait_for("task.log", session_id="s-spin")
    child = psutil.Process(int(pid_line["lines"][0].split()[1]))
    assert child.pid != node.proc.pid
    node.terminate()
    finished = await fake_hub.wait_for("task.finished", session_id="s-spin", timeout=15)
    assert (finished["status"], finished["error"]) == (
        "failed",
        "node stopped before the task finished",
    )
    assert await node.wait() == 0
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
    return subprocess.run(
        node_command("--hub", "http://127.0.0.1:9", "--name", "n1", "--token", "t", *args),
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_llm_configuration_stops_the_node_with_a_message():
    result = run_cli(env={"HIVEMIND_LLM_BASE_URL": "http://127.0.0.1:1/v1"})
    assert result.returncode == 2
    assert "HIVEMIND_LLM_MODELS must name at least one model" in result.stderr
    result = run_cli(env={"HIVEMIND_LLM_API_KEY": "sk-secret-value", "HIVEMIND_LLM_MODELS": "m"})
    assert result.returncode == 2 and "HIVEMIND_LLM_BASE_URL is not" in result.stderr
    assert "sk-secret-value" not in result.stderr


def test_a_bad_command_agent_spec_stops_the_node_with_a_message():
    for spec, message in [
        ("nameless", "expected NAME=COMMAND"),
        ("x=no-such-program-anywhere", "'no-such-program-anywhere' is not an executable file"),
        ("echo=cat", "command agent 'echo': an agent of that name exists"),
    ]:
        result = run_cli("--command-agent", spec)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
    result = run_cli("--isolation", "vm")
    assert result.returncode == 2 and "invalid choice: 'vm'" in result.stderr


async def test_an_llm_node_advertises_its_models_and_runs_the_task_model(
    fake_hub: FakeHub, spawn_node
):
    from support.openai_server import OpenAIServer

    provider = OpenAIServer().start()
    try:
        env = {"HIVEMIND_LLM_BASE_URL": provider.url, "HIVEMIND_LLM_MODELS": "tiny,huge"}
        spawn_node(fake_hub, env=env)
        hello = await fake_hub.wait_connected()
        assert "llm" in hello["agents"] and hello["models"] == ["huge", "tiny"]
        provider.reply_stream(["big answer"])
        await fake_hub.send(
            "task.assign", session_id="s-llm", agent_id="llm", input="q", attempt=1, model="huge"
        )
        finished = await fake_hub.wait_for("task.finished", session_id="s-llm")
        assert (finished["status"], finished["output"]) == ("succeeded", "big answer")
        assert finished["usage"]["model"] == "huge" and finished["usage"]["prompt_tokens"] == 7
        assert provider.requests[-1].body["model"] == "huge"
    finally:
        provider.stop()


async def test_a_node_killed_with_sigkill_leaves_no_agent_process_behind(
    fake_hub: FakeHub, spawn_node, tmp_path: Path
):
    node = spawn_node(
        fake_hub,
        "--command-agent", SPAWNER,
        env={"PYTHONPATH": install_plugins(tmp_path / "plugins")},
    )  # fmt: skip
    await fake_hub.wait_connected()
    await fake_hub.assign("s-spin", "busy-isolated", "120")
    await fake_hub.assign("s-spawn", "spawner")
    spin = await fake_hub.wait_for("task.log", session_id="s-spin")
    spawn = await fake_hub.wait_for("task.log", session_id="s-spawn")
    isolated = psutil.Process(int(spin["lines"][0].split()[1]))
    program = psutil.Process(int(spawn["lines"][0])).parent()
    assert {isolated, program} <= set(descendants(node.proc.pid))
    node.kill()  # SIGKILL: the node cleans nothing up itself

    def gone(proc: psutil.Process) -> bool:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE

    await eventually(lambda: gone(isolated) and gone(program), "the agents to die with the node")
