"""The placement panel says one thing per attempt, from that attempt's own record, and the
attempts table shows where each attempt went, how long it took and how it ended."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from hivemind_web.dashboard.placement import attempt_rows, placement_panel, task_attempts
from hivemind_web.dashboard.templatetags.dashboard import seconds
from hivemind_web.hub.models import Task, TaskAttempt
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission

pytestmark = pytest.mark.django_db

FULL_RECORD = {
    "evaluated": 3,
    "feasible": 2,
    "rejected": {"did not match selector gpu=true": 1},
    "candidates": [
        {"node": "n10", "total": 87.5, "scores": {"LeastLoaded": 75.0, "TeamSpread": 100.0}},
        {"node": "n2", "total": 50.0, "scores": {"LeastLoaded": 50.0, "TeamSpread": 50.0}},
    ],
    "chosen": "n10",
    "summary": "least loaded of 2 feasible nodes",
}


def task_with(strategy: str = "golem", selector: dict | None = None, **attempt: Any) -> Task:
    task = submission.task_submit(
        actor=None, agent_id="echo", strategy=strategy, node_selector=selector or {}, start=False
    )
    row, _ = TaskAttempt.objects.get_or_create(task=task, number=1)
    for name, value in attempt.items():
        setattr(row, name, value)
    row.save()
    return task


def panel_of(task: Task):
    return placement_panel(task, task_attempts(task)[-1])


@pytest.mark.parametrize(
    ("attempt", "strategy", "outcome", "headline"),
    [
        (
            {"route": "golem", "node": "n10", "placement": FULL_RECORD},
            "golem",
            "placed",
            "Placed on n10: least loaded of 2 feasible nodes",
        ),
        (  # an attempt stored before full records: {node, score, reason}
            {
                "route": "golem",
                "node": "n1",
                "placement": {"node": "n1", "score": 80.0, "reason": "least loaded"},
            },
            "golem",
            "placed",
            "Placed on n1: least loaded",
        ),
        ({"route": "golem", "node": "n1", "placement": {}}, "golem", "placed", "Placed on n1."),
        (
            {"route": "local", "fallback_reason": "node n1 did not accept the task within 3s"},
            "golem",
            "fell_back",
            "Fell back to local execution: node n1 did not accept the task within 3s",
        ),
        (
            {"route": "local", "reason": "requested local"},
            "local",
            "local",
            "Runs locally: requested local",
        ),
        ({}, "golem", "routing", "Waiting for the router."),
    ],
    ids=["full record", "short record", "no record", "fell back", "local", "routing"],
)
def test_the_panel_says_one_thing_for_each_kind_of_attempt(
    attempt: dict, strategy: str, outcome: str, headline: str
) -> None:
    panel = panel_of(task_with(strategy, **attempt))
    assert (panel.outcome, panel.headline) == (outcome, headline)


def test_a_full_record_shows_feasibility_and_the_candidates() -> None:
    panel = panel_of(task_with(route="golem", node="n10", placement=FULL_RECORD))
    assert (panel.evaluated, panel.feasible) == (3, 2)
    assert panel.rejected == [("did not match selector gpu=true", 1)]
    assert [(c.node, c.total, c.chosen) for c in panel.candidates] == [
        ("n10", 87.5, True),
        ("n2", 50.0, False),
    ]
    assert panel.candidates[0].scores == [("LeastLoaded", 75.0), ("TeamSpread", 100.0)]


def test_a_placement_after_a_fallback_says_placed_not_both() -> None:
    task = task_with(route="local", fallback_reason="node-1 did not accept")
    Task.objects.filter(pk=task.pk).update(attempts=2, fallback_reason="node-1 did not accept")
    TaskAttempt.objects.create(task=task, number=2, route="golem", node="n10")
    task.refresh_from_db()
    panel = panel_of(task)
    assert (panel.outcome, panel.headline) == ("placed", "Placed on n10.")


def test_a_local_task_never_shows_the_selector_as_if_it_mattered() -> None:
    local = panel_of(task_with("local", {"gpu": "true"}, route="local", reason="requested local"))
    assert local.selector == {}
    golem = panel_of(task_with("golem", {"gpu": "true"}, route="local", fallback_reason="none"))
    assert golem.selector == {"gpu": "true"}


def test_the_router_reason_is_said_once_and_only_when_it_adds_something() -> None:
    same = panel_of(task_with(route="golem", node="n1", reason="requested golem"))
    assert same.router == ""
    auto = panel_of(
        task_with("auto", route="golem", node="n1", reason="node load 0.25 < local load 0.50")
    )
    assert auto.router == "node load 0.25 < local load 0.50"


def test_attempt_rows_give_node_duration_and_outcome() -> None:
    now = timezone.now()
    task = task_with(
        route="golem", node="n1", status="failed", error="node lost",
        started_at=now - timedelta(seconds=12), finished_at=now - timedelta(seconds=2),
    )  # fmt: skip
    TaskAttempt.objects.create(
        task=task, number=2, route="local", fallback_reason="0/1 nodes available",
        status="succeeded", started_at=now - timedelta(seconds=1), finished_at=now,
    )  # fmt: skip
    rows = attempt_rows(task_attempts(task))
    assert [(r.number, r.route, r.node, r.status, r.note) for r in rows] == [
        (1, "golem", "n1", "failed", "node lost"),
        (2, "fallback", "", "succeeded", "0/1 nodes available"),
    ]
    assert rows[0].duration == pytest.approx(10.0) and rows[1].duration == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0.4201, "0.42 s"), (12.46, "12.5 s"), (185, "3 min 05 s"), (7800, "2 h 10 min")],
)
def test_durations_read_as_people_say_them(value: float | None, text: str) -> None:
    assert seconds(value) == text


def test_the_task_page_shows_the_panel_and_the_attempts(bob: Client) -> None:
    node_services.node_create(name="n10", capacity=2)
    task = task_with(route="golem", node="n10", placement=FULL_RECORD, status="running",
                     started_at=timezone.now())  # fmt: skip
    html = bob.get(f"/tasks/{task.session_id}/").content.decode()
    assert 'data-outcome="placed"' in html and ">n10</a>: least loaded of 2 feasible" in html
    assert "2 of 3 nodes feasible; ruled out: 1 did not match selector gpu=true." in html
    assert 'data-attempt="1"' in html and "Runs locally" not in html
