"""Hostile input to the pages and the board stream: a styled page or an error message that
says what was wrong, nothing stored, and the stream stays open."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from test_dashboard_consumer import WAIT, connect, viewer
from test_dashboard_submit import GOOD, errors_of, stored

from executor_core.labels import MAX_LABELS


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/nodes/%00/",
        "/teams/red%00/",
        "/board/snapshot.json?history=%00",
        "/board/snapshot.json?tasks=1&team=a%00",
        "/?q=%00",
    ],
)
def test_a_nul_in_a_page_path_or_query_is_a_400_with_a_message(bob: Client, path: str) -> None:
    response = bob.get(path)
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


@pytest.mark.django_db
def test_a_nul_refusal_is_a_styled_page_for_people(bob: Client) -> None:
    response = bob.get("/nodes/%00/", HTTP_ACCEPT="text/html")
    html = response.content.decode()
    assert response.status_code == 400
    assert "<h1>Bad request</h1>" in html and "hivemind.css" in html


@pytest.mark.django_db
def test_a_form_over_the_request_limit_is_a_styled_413(olga: Client, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    before = stored()
    response = olga.post("/tasks/new/", {**GOOD, "input": "x" * 200_000})
    html = response.content.decode()
    assert response.status_code == 413
    assert "<h1>Request too large</h1>" in html
    assert "larger than 100000 bytes (HIVEMIND_MAX_REQUEST_BYTES)" in html
    assert stored() == before


@pytest.mark.django_db
def test_the_form_refuses_a_selector_of_more_than_64_labels(olga: Client) -> None:
    selector = "\n".join(f"k{i}=v" for i in range(MAX_LABELS + 1))
    before = stored()
    html = olga.post("/tasks/new/", {**GOOD, "node_selector": selector}).content.decode()
    assert f"at most {MAX_LABELS} labels" in errors_of(html)["node_selector"]
    assert stored() == before


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_the_board_stream_drops_nul_values_and_survives_deep_json() -> None:
    board = await connect(await viewer(), "tasks=1&history=%00,alpha&team=%00&q=a%00")
    snapshot = await board.receive_json_from(timeout=WAIT)
    assert snapshot["type"] == "snapshot" and "tasks" in snapshot
    await board.send_to(text_data="[" * 100_000 + "]" * 100_000)
    assert (await board.receive_json_from(timeout=WAIT))["type"] == "error"
    await board.send_to(text_data=json.dumps({"type": "snapshot", "history": ["\x00"]}))
    assert (await board.receive_json_from(timeout=WAIT))["type"] == "snapshot"
    await board.send_to(text_data=json.dumps({"type": "ping"}))
    assert (await board.receive_json_from(timeout=WAIT)) == {"type": "pong"}
    await board.disconnect()
