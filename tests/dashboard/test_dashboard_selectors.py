"""The dashboard's reads: snapshot requests, trimming, load history, team affinity checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import QueryDict
from django.utils import timezone

from hivemind_web.dashboard.selectors import (
    PAGE_SIZE,
    TaskQuery,
    affinity_check,
    board_snapshot,
    lean_task,
    node_history,
    parse_request,
    task_page,
    team_members,
)
from hivemind_web.hub.models import Node, NodeLoadSample, Task, Team
from hivemind_web.hub.services import submission

SID = "0b7f3a52-8f7e-4f0e-9a55-7f1c1f7b2f10"


@pytest.mark.parametrize(
    ("policy", "node", "placed", "state"),
    [
        ("none", "a", {"a": 2}, "no_rule"),
        ("prefer_colocate", None, {"a": 1}, "not_placed"),
        ("prefer_colocate", "a", {"a": 3}, "met"),
        ("require_colocate", "a", {"a": 1, "b": 1}, "not_met"),
        ("prefer_spread", "a", {"a": 1, "b": 1}, "met"),
        ("require_spread", "a", {"a": 2, "b": 1}, "not_met"),
        ("require_spread", None, {}, "not_placed"),
    ],
)
def test_affinity_check(policy: str, node: str | None, placed: dict, state: str) -> None:
    assert affinity_check(policy, node, placed).state == state


def test_affinity_check_says_why() -> None:
    assert affinity_check("prefer_spread", "a", {"a": 3}).detail == "shares a with 2 other members"
    assert "a (1), b (2)" in affinity_check("require_colocate", "b", {"a": 1, "b": 2}).detail


def test_a_query_string_request_reads_repeated_and_comma_separated_statuses() -> None:
    query = QueryDict("tasks=1&status=running,failed&status=pending&team=red&page=3&q=  sl,ee ")
    request = parse_request(query)
    assert request.tasks == TaskQuery(
        statuses=("running", "failed", "pending"), team="red", page=3, q="sl,ee"
    )
    assert request.errors == {}


def test_a_json_request_reads_lists_and_drops_bad_values_with_a_reason() -> None:
    request = parse_request(
        {
            "tasks": 1,
            "status": ["running", "bogus"],
            "route": "teleport",
            "page": "x",
            "watch": [SID, "nope"],
            "history": "*",
        }
    )
    assert request.tasks is not None
    tasks = request.tasks
    assert (tasks.statuses, tasks.route, tasks.page) == (("running",), "", 1)
    assert set(request.errors) == {"status", "route", "watch"}
    assert request.watch == (SID,) and request.history == ("*",)


def test_without_tasks_the_request_has_no_page() -> None:
    assert parse_request({"status": "running"}).tasks is None


def test_lean_tasks_drop_heavy_fields_and_trim_long_text() -> None:
    full = {"session_id": SID, "input": "x", "output": "y", "log": [], "error": "e" * 500}
    lean = lean_task(full)
    assert set(lean) == {"session_id", "error"}
    assert len(lean["error"]) == 301


@pytest.mark.django_db
def test_node_history_buckets_samples_and_keeps_the_window() -> None:
    node = Node.objects.create(name="a", capacity=2)
    base = timezone.now().replace(microsecond=0)
    base -= timedelta(seconds=base.second % 5)
    samples = [(0, 10, 40, 1), (1, 30, 60, 2), (6, 50, 50, 0), (-900, 99, 99, 2)]
    NodeLoadSample.objects.bulk_create(
        NodeLoadSample(node=node, time=base + timedelta(seconds=s), cpu=c, mem=m, running=r)
        for s, c, m, r in samples
    )
    points = node_history(["a"])["a"]
    assert [p[1:] for p in points] == [[20.0, 50.0, 2], [50.0, 50.0, 0]]
    assert points[1][0] - points[0][0] == 5000
    assert node_history([]) == {} and node_history(["b"]) == {}


@pytest.mark.django_db
def test_task_pages_are_newest_first_and_clamped() -> None:
    for _ in range(PAGE_SIZE + 3):
        submission.task_submit(actor=None, agent_id="echo", start=False)
    first = task_page(TaskQuery())
    assert (first["count"], first["pages"], len(first["results"])) == (PAGE_SIZE + 3, 2, PAGE_SIZE)
    newest = Task.objects.order_by("-created_at", "-id").first()
    assert first["results"][0]["session_id"] == str(newest.session_id)
    last = task_page(TaskQuery(page=99))
    assert (last["page"], len(last["results"])) == (2, 3)


@pytest.mark.django_db
def test_the_snapshot_lists_bound_tasks_for_the_node_cards() -> None:
    node = Node.objects.create(name="a", capacity=2, running=1)
    task = Task.objects.create(agent_id="sleep", strategy="golem", status="running", node=node)
    Task.objects.create(agent_id="echo", strategy="local", status="running", route="local")
    snapshot = board_snapshot(parse_request({"history": "a"}))
    assert snapshot["bound"] == [
        {
            "session_id": str(task.session_id),
            "agent_id": "sleep",
            "status": "running",
            "progress": 0.0,
            "node": "a",
            "team": None,
        }
    ]
    assert snapshot["summary"]["tasks_running"] == 2
    assert snapshot["fallback_mode"] == {"enabled": False, "changed_by": ""}


@pytest.mark.django_db
def test_team_members_say_whether_each_rule_holds() -> None:
    team = Team.objects.create(name="red")
    a, b = Node.objects.create(name="a"), Node.objects.create(name="b")

    def member(node: Node | None, status: str = "running") -> Task:
        return Task.objects.create(
            agent_id="sleep", strategy="golem", team=team, node=node, status=status,
            affinity="prefer_spread",
        )  # fmt: skip

    member(a), member(a), member(b), member(None, "pending")
    member(b, "succeeded")
    result = team_members(team)
    assert result["placed"] == {"a": 2, "b": 1}
    assert [m.check.state for m in result["members"]] == ["not_met", "not_met", "met", "not_placed"]
    assert [t.status for t in result["finished"]] == ["succeeded"]
