"""The llm agent against a real local OpenAI-compatible HTTP server streaming server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.openai_server import OpenAIServer

from executor_core.agents import AgentContext
from executor_core.agents.llm import LlmAgent, LlmConfig, llm_config_from_env, parse_input
from executor_core.types import AgentFailure, ExecutionCancelled

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    server = OpenAIServer().start()
    yield server
    server.stop()


def agent(server: OpenAIServer, **options) -> LlmAgent:
    config = {"retries": 2, "timeout": 10.0, **options}
    return LlmAgent(LlmConfig(server.url, ("small", "large"), api_key=KEY, **config))


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progress: list[float] = []

    def context(self, model: str = "") -> AgentContext:
        return AgentContext(
            "llm",
            "s-1",
            model=model,
            on_log=self.lines.extend,
            on_progress=lambda pct, message: self.progress.append(pct),
        )


async def test_it_streams_to_the_log_and_returns_the_text_with_usage(server: OpenAIServer):
    server.reply_stream(["Hi", " there", ".\nA", " second", " line"], delay=0.15)
    recorder = Recorder()
    run = asyncio.create_task(agent(server).run("say hi", ctx := recorder.context()))
    while not recorder.lines:
        await asyncio.sleep(0.02)
    assert not run.done(), "a line was logged while the stream went on"
    output = await run
    assert output == "Hi there.\nA second line"
    # Complete lines go at once; a partial one after ~100 ms (here: between two pieces).
    assert "".join(recorder.lines) == output.replace("\n", "")
    assert len(recorder.lines) >= 3
    assert recorder.progress == sorted(recorder.progress) and recorder.progress[-1] == 100.0
    usage = ctx.usage
    assert (usage["model"], usage["prompt_tokens"], usage["completion_tokens"]) == ("small", 7, 5)
    assert 0 <= usage["first_token_ms"] <= usage["total_ms"]
    seen = server.requests[0]
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.body["model"] == "small" and seen.body["stream"] is True
    assert seen.body["messages"] == [{"role": "user", "content": "say hi"}]


async def test_a_json_input_sets_model_system_messages_and_sampling(server: OpenAIServer):
    text = json.dumps(
        {
            "model": "large",
            "system": "be brief",
            "messages": [{"role": "user", "content": "2+2?"}],
            "temperature": 0.2,
            "max_tokens": 5,
        }
    )
    await agent(server).run(text, Recorder().context())
    body = server.requests[0].body
    assert body["model"] == "large"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "2+2?"},
    ]
    assert (body["temperature"], body["max_tokens"]) == (0.2, 5)


async def test_the_task_model_is_used_when_the_input_names_none(server: OpenAIServer):
    ctx = Recorder().context(model="large")
    await agent(server).run("hello", ctx)
    assert server.requests[0].body["model"] == "large" and ctx.usage["model"] == "large"


async def test_a_429_then_a_200_succeeds_after_a_retry(server: OpenAIServer):
    server.reply_error(429, "slow down", Retry_After="0.1")
    server.reply_stream(["ok"])
    recorder = Recorder()
    assert await agent(server).run("x", recorder.context()) == "ok"
    assert len(server.requests) == 2
    assert recorder.lines[0] == "[llm: the provider answered HTTP 429: slow down; retrying in 0.1s]"


async def test_5xx_is_retried_then_fails_with_the_providers_message(server: OpenAIServer):
    for _ in range(3):
        server.reply_error(503, "overloaded")
    with pytest.raises(AgentFailure) as failure:
        await agent(server, retries=2).run("x", Recorder().context())
    assert str(failure.value) == (
        "the provider answered HTTP 503: overloaded (gave up after 3 attempts)"
    )
    assert len(server.requests) == 3


async def test_a_401_fails_at_once_with_the_message(server: OpenAIServer):
    server.reply_error(401, "Incorrect API key provided")
    with pytest.raises(AgentFailure, match=r"^the provider answered HTTP 401: Incorrect API key"):
        await agent(server).run("x", Recorder().context())
    assert len(server.requests) == 1


async def test_a_provider_echoing_the_key_does_not_leak_it(server: OpenAIServer):
    server.reply_error(400, f"bad key {KEY} for this project")
    with pytest.raises(AgentFailure) as failure:
        await agent(server).run("x", Recorder().context())
    assert KEY not in str(failure.value) and "bad key [key] for" in str(failure.value)


async def test_a_cancel_mid_stream_closes_it(server: OpenAIServer):
    server.reply_stream([f"word{i} " for i in range(400)], delay=0.05)
    recorder = Recorder()
    ctx = recorder.context()
    run = asyncio.create_task(agent(server).run("long", ctx))
    while server.sent_pieces < 5:
        await asyncio.sleep(0.02)
    ctx.cancel()
    with pytest.raises(ExecutionCancelled):
        await asyncio.wait_for(run, 5)
    assert await asyncio.to_thread(server.disconnected.wait, 5), "the server saw the client go"
    assert server.sent_pieces < 400


async def test_an_unreachable_provider_is_retried_then_fails(server: OpenAIServer):
    url = server.url
    server.stop()
    config = LlmConfig(url, ("small",), retries=1, timeout=2.0)
    with pytest.raises(AgentFailure, match=r"could not be reached.*\(gave up after 2 attempts\)"):
        await LlmAgent(config).run("x", Recorder().context())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"model": "small",', "starts like a JSON object but is not valid JSON"),
        ('{"prompt": "hi"}', "unknown input field(s) prompt"),
        ('{"messages": []}', "names no messages"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "item 0 must be an object"),
        ('{"messages": "hi"}', "'messages' must be a list"),
        ('{"system": 3, "messages": []}', "'system' must be a string"),
        ('{"temperature": 5, "messages": [{"role": "user", "content": "x"}]}', "from 0 to 2"),
        ('{"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}', "above 0"),
        ('{"model": "huge", "messages": [{"role": "user", "content": "x"}]}', "'huge' is not"),
    ],
)
async def test_a_bad_input_fails_before_any_call(server: OpenAIServer, text: str, message: str):
    with pytest.raises(AgentFailure) as failure:
        await agent(server).run(text, Recorder().context())
    assert message in str(failure.value)
    assert server.requests == []


def test_the_input_model_and_the_task_model_must_agree() -> None:
    config = LlmConfig("http://x/v1", ("a", "b"))
    assert parse_input('{"model": "b", "messages": [{"role": "user", "content": "q"}]}',
                       config, "b").model == "b"  # fmt: skip
    with pytest.raises(AgentFailure, match="asks for model 'a', the task for 'b'"):
        parse_input('{"model": "a", "messages": [{"role": "user", "content": "q"}]}', config, "b")


def test_configuration_from_the_environment(tmp_path: Path) -> None:
    assert llm_config_from_env({}) is None
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    config = llm_config_from_env(
        {
            "HIVEMIND_LLM_BASE_URL": "http://127.0.0.1:11434/v1/",
            "HIVEMIND_LLM_API_KEY_FILE": str(key_file),
            "HIVEMIND_LLM_MODELS": "llama3, qwen2 ,llama3",
            "HIVEMIND_LLM_TIMEOUT": "30",
            "HIVEMIND_LLM_RETRIES": "0",
        }
    )
    assert config == LlmConfig("http://127.0.0.1:11434/v1", ("llama3", "qwen2"), KEY, 30.0, 0)
    assert KEY not in repr(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HIVEMIND_LLM_MODELS": "m"}, "HIVEMIND_LLM_MODELS is set but HIVEMIND_LLM_BASE_URL"),
        ({"HIVEMIND_LLM_BASE_URL": "http://h/v1"}, "HIVEMIND_LLM_MODELS must name at least one"),
        ({"HIVEMIND_LLM_BASE_URL": "ftp://h", "HIVEMIND_LLM_MODELS": "m"}, "an http(s) URL"),
        (
            {"HIVEMIND_LLM_BASE_URL": "http://h", "HIVEMIND_LLM_MODELS": "m",
             "HIVEMIND_LLM_RETRIES": "many"},
            "HIVEMIND_LLM_RETRIES must be a whole number from 0 to 10, got 'many'",
        ),
        (
            {"HIVEMIND_LLM_BASE_URL": "http://h", "HIVEMIND_LLM_MODELS": "m",
             "HIVEMIND_LLM_TIMEOUT": "-1"},
            "HIVEMIND_LLM_TIMEOUT must be a number of seconds above 0",
        ),
        (
            {"HIVEMIND_LLM_BASE_URL": "http://h", "HIVEMIND_LLM_MODELS": "m",
             "HIVEMIND_LLM_API_KEY_FILE": "/nonexistent/key"},
            "HIVEMIND_LLM_API_KEY_FILE='/nonexistent/key' cannot be read",
        ),
    ],
)  # fmt: skip
def test_a_bad_configuration_says_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as failure:
        llm_config_from_env(env)
    assert message in str(failure.value)


async def test_the_log_gets_whole_lines_at_once_and_a_partial_one_after_a_moment() -> None:
    from executor_core.agents.llm import LogStream

    recorder = Recorder()
    stream = LogStream(recorder.context(), interval=0.05)
    stream.add("one\ntw")
    assert recorder.lines == ["one"]
    await asyncio.sleep(0.15)  # nothing more came: what waits goes out by itself
    assert recorder.lines == ["one", "tw"]
    stream.add("o\nthree")
    stream.flush()
    assert recorder.lines == ["one", "tw", "o", "three"]


async def test_it_runs_in_a_child_process_too(server: OpenAIServer) -> None:
    from executor_core.agents.isolation import PROCESS, invoke

    server.reply_stream(["from", " a child\n"])
    recorder = Recorder()
    ctx = recorder.context()
    output = await invoke(agent(server), "hi", ctx, isolation=PROCESS)
    assert output == "from a child\n" and recorder.lines == ["from a child"]
    assert ctx.usage["completion_tokens"] == 2
