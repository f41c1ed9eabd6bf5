"""The board never lies (DESIGN §14): its count, page and filters are the server's, the search
finds what the table shows, and a socket opened from a shared link filters like the API."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.test import Client
from test_dashboard_consumer import WAIT, connect, viewer

from hivemind_web.dashboard import frames
from hivemind_web.dashboard.selectors import TaskQuery, parse_request, task_page
from hivemind_web.hub import selectors as hub_selectors
from hivemind_web.hub.broadcast import BOARD_GROUP
from hivemind_web.hub.models import Task
from hivemind_web.hub.services import submission
from hivemind_web.hub.snapshots import task_event_data


def stored(agent_id: str = "echo", input: str = "1", **fields: Any) -> Task:
    task = submission.task_submit(actor=None, agent_id=agent_id, input=input, start=False)
    if fields:
        Task.objects.filter(pk=task.pk).update(**fields)
        task.refresh_from_db()
    return task


def found(term: str, **filters: Any) -> set[str]:
    return {str(t.session_id) for t in hub_selectors.task_list(search=term, **filters)}


@pytest.mark.django_db
def test_search_finds_a_task_by_its_short_id_as_the_table_shows_it() -> None:
    task, other = stored(), stored()
    short = str(task.session_id)[:8]
    assert found(short) == {str(task.session_id)}
    assert found(short.upper()) == {str(task.session_id)}
    assert found(str(task.session_id)) == {str(task.session_id)}
    assert str(other.session_id) not in found(short)


@pytest.mark.django_db
def test_search_finds_agents_and_input_text() -> None:
    echo = stored("echo", "translate the contract")
    sleep = stored("sleep", "5")
    assert found("ECHO") == {str(echo.session_id)}
    assert found("the contract") == {str(echo.session_id)}
    assert found("sle") == {str(sleep.session_id)}
    assert found("nothing like it") == set()


@pytest.mark.django_db
def test_route_fallback_finds_tasks_that_fell_back_to_local() -> None:
    fell = stored(route="local", fallback_reason="0/2 nodes available: 2 at capacity")
    stored(route="local")
    golem = stored(route="golem")
    ids = {str(t.session_id) for t in hub_selectors.task_list(route="fallback")}
    assert ids == {str(fell.session_id)}
    assert {str(t.session_id) for t in hub_selectors.task_list(route="golem")} == {
        str(golem.session_id)
    }


@pytest.mark.django_db
def test_the_api_refuses_an_unknown_route_and_filters_on_fallback(alice: Client) -> None:
    stored(route="local", fallback_reason="no node")
    bad = alice.get("/api/v1/tasks/?route=teleport")
    assert bad.status_code == 400 and "unknown route 'teleport'" in bad.json()["route"][0]
    assert alice.get("/api/v1/tasks/?route=fallback").json()["count"] == 1


def test_a_shared_link_searches_like_the_api() -> None:
    # The socket's URL query reaches the consumer as lists: before, q became "['echo']".
    request = parse_request(parse_qs("tasks=1&q=echo&route=fallback"))
    assert request.tasks == TaskQuery(q="echo", route="fallback")


def test_a_page_delta_carries_only_what_the_client_lacks() -> None:
    tracker = frames.PageTracker()
    page = {
        "count": 2,
        "page": 1,
        "pages": 1,
        "results": [{"session_id": "a"}, {"session_id": "b"}],
    }
    tracker.reset(page)
    assert tracker.delta(page, sent=set()) is None
    grown = {**page, "count": 3, "results": [{"session_id": "c"}, *page["results"]]}
    assert tracker.delta(grown, sent=set()) == {
        "count": 3, "page": 1, "pages": 1, "order": ["c", "a", "b"],
        "rows": [{"session_id": "c"}],
    }  # fmt: skip
    # A row the frame's task list already carries does not come twice.
    moved = {**grown, "results": [{"session_id": "d"}, {"session_id": "c"}]}
    assert tracker.delta(moved, sent={"d"})["rows"] == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_every_frame_that_changes_tasks_brings_the_servers_count() -> None:
    layer = get_channel_layer()
    await layer.flush()
    communicator = await connect(await viewer(), "tasks=1&q=echo")
    first = await communicator.receive_json_from(WAIT)
    assert first["tasks"]["count"] == 0
    # Tasks the board does not show change too: before, each one added one to the count.
    for agent in ("echo", "sleep", "sleep", "echo"):
        task = await database_sync_to_async(stored)(agent)
        message = {"kind": "task", "data": task_event_data(task)}
        await layer.group_send(BOARD_GROUP, {"type": "board.events", "events": [message]})
    count = 0
    while count != 2:
        frame = await communicator.receive_json_from(WAIT)
        if "page" in frame:
            count = frame["page"]["count"]
            assert frame["page"]["count"] == len(frame["page"]["order"]) <= 2
    expected = await database_sync_to_async(task_page)(TaskQuery(q="echo"))
    assert frame["page"]["order"] == [t["session_id"] for t in expected["results"]]
    await communicator.disconnect()
    await layer.flush()
