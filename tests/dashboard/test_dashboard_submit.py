"""The submit form: every bad field gets its own message, and nothing is stored unless all
fields are valid."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from hivemind_web.hub.models import Task, TaskEvent, Team

pytestmark = pytest.mark.django_db

GOOD = {
    "agent_id": "sleep",
    "input": "2",
    "strategy": "golem",
    "team": "red",
    "node_selector": "zone=eu\ngpu=true\n",
    "affinity": "prefer_spread",
}


def errors_of(html: str) -> dict[str, str]:
    found = re.findall(r'data-error-for="(\w+)">([^<]*)<', html)
    return dict(found)


def stored() -> tuple[int, int, int]:
    return Task.objects.count(), TaskEvent.objects.count(), Team.objects.count()


def test_the_form_lists_the_known_agents_and_the_api_field_names(olga: Client) -> None:
    html = olga.get("/tasks/new/").content.decode()
    for name in ("agent_id", "input", "strategy", "team", "node_selector", "affinity"):
        assert f'name="{name}"' in html
    assert '<option value="sleep"' in html


def test_a_viewer_may_not_open_or_post_the_form(bob: Client) -> None:
    assert bob.get("/tasks/new/").status_code == 403
    assert bob.post("/tasks/new/", GOOD).status_code == 403
    assert stored() == (0, 0, 0)


def test_a_valid_submission_goes_to_the_task_page(olga: Client) -> None:
    response = olga.post("/tasks/new/", GOOD)
    task = Task.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/tasks/{task.session_id}/"
    assert task.node_selector == {"zone": "eu", "gpu": "true"}
    assert (task.strategy, task.team.name, task.affinity) == ("golem", "red", "prefer_spread")
    assert task.submitted_by.username == "olga"
    assert task.events.get().actor == "olga"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"node_selector": "zone"}, {"node_selector": "not of the form key=value"}),
        ({"node_selector": "bad key!=x"}, {"node_selector": "label key"}),
        ({"team": "no spaces allowed"}, {"team": "team name"}),
        ({"agent_id": "teleport"}, {"agent_id": "unknown agent"}),
        ({"strategy": "warp"}, {"strategy": "strategy"}),
        ({"team": "", "affinity": "require_spread"}, {"affinity": "team"}),
        (
            {"agent_id": "teleport", "node_selector": "zone", "strategy": "warp"},
            {"agent_id": "unknown agent", "node_selector": "key=value", "strategy": "strategy"},
        ),
    ],
)
def test_each_bad_field_gets_its_own_message_and_nothing_is_stored(
    olga: Client, changes: dict[str, str], expected: dict[str, str]
) -> None:
    response = olga.post("/tasks/new/", {**GOOD, **changes})
    assert response.status_code == 400
    errors = errors_of(response.content.decode())
    assert set(errors) == set(expected), errors
    for field, fragment in expected.items():
        assert fragment in errors[field]
    assert stored() == (0, 0, 0)


def test_the_placement_fields_are_stored(olga: Client) -> None:
    response = olga.post(
        "/tasks/new/",
        {
            **GOOD,
            "node": "gpu-1",
            "prefer_labels": "zone=eu",
            "capabilities": "browser, gpu_inference",
            "min_free_memory_mb": "512",
            "max_cpu_percent": "80",
            "model": "llama3:8b",
            "priority": "5",
            "max_wait": "60",
            "timeout": "10",
        },
    )
    assert response.status_code == 302
    task = Task.objects.get()
    assert (task.pinned_node, task.prefer_labels, task.capabilities) == (
        "gpu-1",
        {"zone": "eu"},
        ["browser", "gpu_inference"],
    )
    assert task.resources == {"min_free_memory_mb": 512, "max_cpu_percent": 80.0}
    assert (task.model, task.priority, task.max_wait, task.timeout) == ("llama3:8b", 5, 60, 10)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"node": "Not_A_Node"}, {"node": "DNS label"}),
        ({"prefer_labels": "zone"}, {"prefer_labels": "key=value"}),
        ({"capabilities": "gpu inference"}, {"capabilities": "alphanumeric at both ends"}),
        ({"max_cpu_percent": "150"}, {"max_cpu_percent": "from 0 to 100"}),
        ({"min_free_memory_mb": "-1"}, {"min_free_memory_mb": "megabytes"}),
        ({"max_wait": "-3", "timeout": "0"}, {"max_wait": "from 0", "timeout": "above 0"}),
        ({"model": "two words"}, {"model": "spaces"}),
    ],
)
def test_bad_placement_fields_get_their_own_messages(
    olga: Client, changes: dict[str, str], expected: dict[str, str]
) -> None:
    response = olga.post("/tasks/new/", {**GOOD, **changes})
    assert response.status_code == 400
    errors = errors_of(response.content.decode())
    assert set(errors) == set(expected), errors
    for field, fragment in expected.items():
        assert fragment in errors[field]
    assert stored() == (0, 0, 0)


def test_entered_values_are_kept_after_an_error(olga: Client) -> None:
    html = olga.post("/tasks/new/", {**GOOD, "node_selector": "zone"}).content.decode()
    assert ">\n2</textarea>" in html and 'value="red"' in html
