"""The node page puts the hub's word beside the node's own report, and shows a refusal."""

from __future__ import annotations

import pytest
from django.test import Client

from hivemind_web.hub.models import Node
from hivemind_web.hub.services import nodes as node_services

pytestmark = pytest.mark.django_db


def reported(**changes: object) -> dict[str, object]:
    state = {"generation": 0, "cordoned": False, "draining": False, "stopping": False}
    return {**state, "capacity": 2, "labels": {"gpu": "true"}, "running": 0, **changes}


def test_a_node_that_has_not_reported_says_so(bob: Client, node: Node) -> None:
    html = bob.get("/nodes/gpu-1/").content.decode()
    assert "has not reported its own state yet" in html


def test_the_page_shows_where_hub_and_node_disagree(bob: Client, node: Node) -> None:
    node_services.node_update(name="gpu-1", actor="alice", capacity=4)
    node_services.node_report_state(name="gpu-1", state=reported(generation=0, capacity=2))
    html = bob.get("/nodes/gpu-1/").content.decode()
    assert 'data-acknowledged="false"' in html and "Waiting for the node to apply" in html
    assert '<tr class="differs" data-row="Capacity"><th scope="row">Capacity</th><td>4</td>' in html

    node_services.node_report_state(name="gpu-1", state=reported(generation=1, capacity=4))
    html = bob.get("/nodes/gpu-1/").content.decode()
    assert 'data-acknowledged="true"' in html and "differs" not in html
    assert "<td>gpu=true</td><td>gpu=true</td>" in html


def test_a_refusal_and_the_back_off_show_on_the_page(bob: Client, node: Node) -> None:
    node_services.node_refused(name="gpu-1", session_id="s1", reason="draining")
    html = bob.get("/nodes/gpu-1/").content.decode()
    assert 'data-field="backoff"' in html
    assert "after 1 refusal in a row: draining" in html
    assert 'data-kind="refused"' in html


def test_the_history_shows_an_edit_as_pairs_not_a_raw_dict(alice: Client, node: Node) -> None:
    node_services.node_update(name="gpu-1", actor="alice", labels={"gpu": "false", "zone": "a"})
    html = alice.get("/nodes/gpu-1/").content.decode()
    assert "labels: gpu=false, zone=a" in html and "{&#x27;gpu" not in html


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("cordon", "gpu-1 cordoned."),
        ("drain", "gpu-1 set to drain; it is now cordoned."),
        ("uncordon", "gpu-1 uncordoned; it is now ready."),
    ],
)
def test_an_action_message_says_the_status_only_when_it_is_news(
    alice: Client, node: Node, action: str, message: str
) -> None:
    node_services.node_connected(
        name="gpu-1", version="1", labels={"gpu": "true"}, capacity=2, agents=[]
    )
    response = alice.post(f"/nodes/gpu-1/{action}/", HTTP_ACCEPT="application/json")
    assert response.json()["message"] == message
