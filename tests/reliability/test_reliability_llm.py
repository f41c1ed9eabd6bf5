"""The llm agent end to end: a real hub, a real node, and a real OpenAI-compatible HTTP server
(started by the test, streaming server-sent events) standing in for the provider."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import get_task, submit, wait_task
from support.live import ROLE_PASSWORD, wait_for
from support.openai_server import OpenAIServer

pytestmark = pytest.mark.slow

KEY = "sk-live-test-9f8e7d6c5b4a"


@pytest.fixture
def provider() -> Iterator[OpenAIServer]:
    server = OpenAIServer().start()
    yield server
    server.stop()


def llm_env(provider: OpenAIServer, key_file: Path) -> dict[str, str]:
    key_file.write_text(KEY)
    return {
        "HIVEMIND_LLM_BASE_URL": provider.url,
        "HIVEMIND_LLM_API_KEY_FILE": str(key_file),
        "HIVEMIND_LLM_MODELS": "tiny,huge",
        "HIVEMIND_LLM_RETRIES": "2",
    }


def attempts(hub: Any, token: str, sid: str) -> list[dict[str, Any]]:
    status, body = hub.api("GET", f"/api/v1/tasks/{sid}/attempts/", token=token)
    assert status == 200, body
    return body["results"]


def page(hub: Any, path: str) -> str:
    """A page as the logged-in operator sees it."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(hub.url + "/accounts/login/") as response:
        html = response.read().decode()
    csrf = html.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    data = f"username=alice&password={ROLE_PASSWORD}&csrfmiddlewaretoken={csrf}".encode()
    login = urllib.request.Request(hub.url + "/accounts/login/", data=data)
    login.add_header("Referer", hub.url + "/accounts/login/")
    opener.open(login).read()
    with opener.open(hub.url + path) as response:
        return response.read().decode()


def test_an_llm_task_on_a_node_streams_records_usage_retries_and_cancels(
    hub_factory: Any, node_factory: Any, provider: OpenAIServer, tmp_path: Path
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "operator")
    admin = hub.create_user("root", "admin")
    node = node_factory(hub, "gpu", env=llm_env(provider, tmp_path / "key"))
    node.wait_ready(admin)
    _, body = hub.api("GET", "/api/v1/nodes/gpu/", token=token)
    assert "llm" in body["agents"]

    # Streams: the first line is in the task's log while the model still writes.
    provider.reply_stream(
        ["The answer", " is:\n", "forty", "-two", ".\n", "Done."], delay=0.4, usage=None
    )
    task = submit(hub, token, agent_id="llm", input="What is six times seven?", strategy="golem")
    sid = task["session_id"]
    seen = wait_for(
        lambda: (t := get_task(hub, token, sid))["log"] and t, timeout=20, what="a streamed line"
    )
    assert seen["status"] == "running", "text showed in the log before the task finished"
    assert seen["log"][0] == "The answer"  # a partial line goes out after ~100 ms
    done = wait_task(hub, token, sid, "succeeded")
    assert done["output"] == "The answer is:\nforty-two.\nDone."
    assert "".join(done["log"]) == "The answer is:forty-two.Done."
    usage = done["usage"]
    assert (usage["model"], usage["prompt_tokens"], usage["completion_tokens"]) == ("tiny", 7, 6)
    assert usage["first_token_ms"] >= 0 and usage["total_ms"] >= usage["first_token_ms"]
    assert attempts(hub, token, sid)[0]["usage"] == usage
    request = provider.requests[-1]
    assert request.body["messages"] == [{"role": "user", "content": "What is six times seven?"}]
    assert request.headers["authorization"] == f"Bearer {KEY}"

    # A 429, then a 200: one retry, and it succeeds.
    provider.reply_error(429, "rate limited", Retry_After="0.2")
    provider.reply_stream(["fine"])
    before = len(provider.requests)
    task = submit(hub, token, agent_id="llm", input='{"model": "huge", "messages": '
                  '[{"role": "user", "content": "again"}]}', strategy="golem")  # fmt: skip
    done = wait_task(hub, token, task["session_id"], "succeeded")
    assert done["output"] == "fine" and done["usage"]["model"] == "huge"
    assert len(provider.requests) - before == 2
    assert "retrying in 0.2s" in done["log"][0]

    # A 401 fails at once, with the provider's message.
    provider.reply_error(401, "Incorrect API key provided")
    before = len(provider.requests)
    task = submit(hub, token, agent_id="llm", input="hi", strategy="golem")
    failed = wait_task(hub, token, task["session_id"], "failed")
    assert failed["error"] == "the provider answered HTTP 401: Incorrect API key provided"
    assert len(provider.requests) - before == 1

    # A bad JSON input fails before any call.
    before = len(provider.requests)
    task = submit(hub, token, agent_id="llm", input='{"messages": [', strategy="golem")
    failed = wait_task(hub, token, task["session_id"], "failed")
    assert "not valid JSON" in failed["error"] and len(provider.requests) == before

    # A cancel mid-stream closes the stream.
    provider.reply_stream([f"token{i} " for i in range(600)], delay=0.05)
    task = submit(hub, token, agent_id="llm", input="go on forever", strategy="golem")
    sid = task["session_id"]
    wait_for(lambda: get_task(hub, token, sid)["log"], timeout=20, what="streaming to start")
    status, _ = hub.api("POST", f"/api/v1/tasks/{sid}/cancel/", token=token)
    assert status == 200
    assert provider.disconnected.wait(10), "the provider saw the client go"
    sent = provider.sent_pieces
    time.sleep(0.5)
    assert provider.sent_pieces == sent < 600 + 20
    assert get_task(hub, token, sid)["status"] == "cancelled"

    # The key is nowhere: not in the database, the hub's or the node's log, nor a page.
    dump = hub.manage("dumpdata", "--indent", "0")
    assert '"llm"' in dump and KEY not in dump
    assert KEY not in hub.log() and KEY not in node.log()
    assert KEY not in page(hub, f"/tasks/{sid}/")


def test_the_hub_runs_llm_tasks_locally_and_records_their_usage(
    hub_factory: Any, provider: OpenAIServer, tmp_path: Path
) -> None:
    hub = hub_factory(extra_env=llm_env(provider, tmp_path / "key"))
    token = hub.create_user("alice", "operator")
    provider.reply_stream(["local", " answer"], delay=0.1)
    task = submit(hub, token, agent_id="llm", input="hello", strategy="local")
    done = wait_task(hub, token, task["session_id"], "succeeded")
    assert done["output"] == "local answer" and done["route"] == "local"
    assert done["usage"]["model"] == "tiny" and done["usage"]["completion_tokens"] == 2
    assert attempts(hub, token, task["session_id"])[0]["usage"] == done["usage"]
    assert KEY not in hub.manage("dumpdata") and KEY not in hub.log()


def test_a_task_with_a_model_lands_only_on_a_node_serving_it(
    hub_factory: Any, node_factory: Any, provider: OpenAIServer, tmp_path: Path
) -> None:
    # The hub serves "tiny" itself; node "small" serves tiny, node "big" serves huge.
    env = llm_env(provider, tmp_path / "key")
    hub = hub_factory(extra_env={**env, "HIVEMIND_LLM_MODELS": "tiny"})
    token = hub.create_user("alice", "operator")
    admin = hub.create_user("root", "admin")
    nodes = {
        "small": node_factory(hub, "small", env={**env, "HIVEMIND_LLM_MODELS": "tiny"}),
        "big": node_factory(hub, "big", env={**env, "HIVEMIND_LLM_MODELS": "huge"}),
    }
    for node in nodes.values():
        node.wait_ready(admin)
    _, body = hub.api("GET", "/api/v1/nodes/big/", token=token)
    assert body["models"] == ["huge"]

    placed = []
    for model in ("huge", "tiny", "huge", "huge", "tiny"):
        task = submit(hub, token, agent_id="llm", input="hi", strategy="golem", model=model)
        done = wait_task(hub, token, task["session_id"], "succeeded")
        placed.append((model, done["node"], done["usage"]["model"]))
    assert placed == [
        ("huge", "big", "huge"),
        ("tiny", "small", "tiny"),
        ("huge", "big", "huge"),
        ("huge", "big", "huge"),
        ("tiny", "small", "tiny"),
    ]
    assert [r.body["model"] for r in provider.requests] == [m for m, _, _ in placed]

    # No node serves "mega": the task falls back at once, the reason naming the model; the
    # hub does not serve it either, and says so.
    task = submit(hub, token, agent_id="llm", input="hi", strategy="golem", model="mega")
    failed = wait_task(hub, token, task["session_id"], "failed")
    assert failed["route"] == "local" and "not serving model mega" in failed["fallback_reason"]
    assert failed["error"] == "llm agent: model 'mega' is not served here (models: tiny)"
    assert len(provider.requests) == len(placed)
