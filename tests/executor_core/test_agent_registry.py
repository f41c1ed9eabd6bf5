"""AgentRegistry: registration, lookup, dispatch, and plugins from entry points."""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest

from executor_core.agents import (
    AgentContext,
    AgentRegistry,
    EchoAgent,
    UnknownAgentError,
    default_registry,
)
from executor_core.types import ExecutorError


class Upper:
    name = "upper"

    async def run(self, input: str, ctx: AgentContext) -> str:
        return input.upper()


def test_names_are_sorted_and_membership_works():
    registry = AgentRegistry([Upper(), EchoAgent()])

    assert registry.names() == ["echo", "upper"]
    assert "echo" in registry
    assert "nope" not in registry
    assert len(registry) == 2


def test_an_unknown_agent_raises_a_lookup_error_listing_the_known_agents():
    registry = AgentRegistry([Upper(), EchoAgent()])

    with pytest.raises(UnknownAgentError) as caught:
        registry.get("translate")

    assert str(caught.value) == "unknown agent 'translate' (known agents: echo, upper)"
    assert isinstance(caught.value, LookupError)
    assert isinstance(caught.value, ExecutorError)
    assert caught.value.agent_id == "translate"


def test_an_unknown_agent_in_an_empty_registry_says_none_are_registered():
    with pytest.raises(UnknownAgentError, match=r"known agents: none registered"):
        AgentRegistry().get("echo")


def test_a_runner_can_be_registered_under_another_name():
    registry = AgentRegistry()

    registry.register(Upper(), "shout")

    assert registry.names() == ["shout"]


@pytest.mark.parametrize(
    ("runner", "name", "error", "fragment"),
    [
        (Upper(), None, ValueError, "'upper' is already registered"),
        (object(), "thing", TypeError, "is not an agent runner"),
        (Upper(), "  ", ValueError, "non-empty string"),
    ],
)
def test_register_refuses_duplicates_non_runners_and_blank_names(runner, name, error, fragment):
    registry = AgentRegistry([Upper()])

    with pytest.raises(error, match=fragment):
        registry.register(runner, name)


def test_replace_lets_a_runner_take_over_a_name():
    registry = AgentRegistry([Upper()])
    echo = EchoAgent()

    registry.register(echo, "upper", replace=True)

    assert registry.get("upper") is echo


async def test_the_registry_runs_the_agent_named_by_the_context():
    registry = AgentRegistry([Upper(), EchoAgent()])

    assert await registry.run("hi", AgentContext("upper", "s-1")) == "HI"
    assert await registry.run("hi", AgentContext("echo", "s-2")) == "hi"
    with pytest.raises(UnknownAgentError):
        await registry.run("hi", AgentContext("nope", "s-3"))


def test_the_default_registry_holds_the_built_ins():
    assert default_registry(entry_points=False).names() == ["count", "echo", "fail", "sleep"]


# Entry points: a fake installed distribution on sys.path.

PLUGIN_MODULE = """
class Shout:
    name = "shout-agent"

    async def run(self, input, ctx):
        return input.upper() + "!"


class Whisper:
    name = "whisper"

    async def run(self, input, ctx):
        return input.lower()


def make_reverse():
    return Reverse()


class Reverse:
    name = "reverse"

    async def run(self, input, ctx):
        return input[::-1]


whisper = Whisper()
not_a_runner = 42
"""

ENTRY_POINTS = """
[hivemind.agents]
shout = hm_test_plugin:Shout
whisper = hm_test_plugin:whisper
reverse = hm_test_plugin:make_reverse
missing = hm_test_plugin_missing:Agent
bogus = hm_test_plugin:not_a_runner
echo = hm_test_plugin:Shout

[other.group]
ignored = hm_test_plugin:Shout
"""


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    (tmp_path / "hm_test_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    dist_info = tmp_path / "hm_test_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hm-test-plugin\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("hm_test_plugin", None)


async def test_entry_points_add_classes_instances_and_factories(plugin_on_path):
    registry = AgentRegistry([EchoAgent()])

    added = registry.load_entry_points()

    assert sorted(added) == ["reverse", "shout", "whisper"]
    assert registry.names() == ["echo", "reverse", "shout", "whisper"]
    assert await registry.run("Hey", AgentContext("shout", "s-1")) == "HEY!"
    assert await registry.run("Hey", AgentContext("whisper", "s-2")) == "hey"
    assert await registry.run("abc", AgentContext("reverse", "s-3")) == "cba"


def test_a_broken_or_clashing_plugin_is_logged_and_skipped(plugin_on_path, caplog):
    registry = AgentRegistry([EchoAgent()])

    with caplog.at_level(logging.ERROR):
        registry.load_entry_points()

    skipped = {r.args[0] for r in caplog.records if r.msg.startswith("skipping agent plugin")}
    assert skipped == {"missing", "bogus", "echo"}
    assert isinstance(registry.get("echo"), EchoAgent)


def test_only_the_requested_group_is_loaded(plugin_on_path):
    registry = AgentRegistry()

    assert registry.load_entry_points("other.group") == ["ignored"]


def test_the_default_registry_includes_plugins(plugin_on_path):
    names = set(default_registry().names())

    assert {"echo", "fail", "sleep", "reverse", "shout", "whisper"} <= names


def test_the_registry_lists_the_models_its_agents_serve():
    from executor_core.agents.llm import LlmAgent, LlmConfig

    registry = default_registry(entry_points=False)
    assert registry.models() == []
    registry.register(LlmAgent(LlmConfig("http://127.0.0.1:1/v1", ("qwen2.5", "llama3.2"))))
    assert registry.models() == ["llama3.2", "qwen2.5"]
    assert registry.models(["echo"]) == [] and registry.models(["llm", "nope"]) == [
        "llama3.2",
        "qwen2.5",
    ]
