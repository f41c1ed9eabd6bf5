"""The scheduler's shared value types: defaults, the placement record's JSON form, errors."""

from __future__ import annotations

import copy
import json
import pickle
from dataclasses import replace

import pytest

from executor_core.scheduling import (
    ClusterState,
    NodeInfo,
    NodeScore,
    Placement,
    PlacementRecord,
    ScheduleRequest,
    SchedulingError,
)


def test_new_node_fields_default_to_not_reported():
    info = NodeInfo("a")
    assert info.capabilities == frozenset() and info.models == frozenset()
    assert (info.cpu_percent, info.free_memory_mb, info.free_disk_mb) == (None, None, None)


def test_new_request_fields_default_to_no_constraint():
    request = ScheduleRequest("s", "coder")
    assert request.node == "" and request.model == ""
    assert dict(request.prefer_labels) == {} and request.capabilities == frozenset()
    assert request.min_free_memory_mb is None and request.max_cpu_percent is None


def test_the_cluster_keeps_every_reported_node_fact():
    info = NodeInfo(
        "a",
        capabilities=frozenset({"gpu"}),
        models=frozenset({"llama3"}),
        cpu_percent=12.5,
        free_memory_mb=2048,
        free_disk_mb=10_000,
    )
    assert ClusterState([info]).node("a") == info


def record(**overrides) -> PlacementRecord:
    fields = {
        "evaluated": 3,
        "feasible": 2,
        "rejected": {"at capacity": 1},
        "candidates": (
            NodeScore("b", 66.66666, {"LeastLoaded": 50.0, "PreferLabels": 16.66666}),
            NodeScore("c", 1 / 3, {"LeastLoaded": 1 / 3}),
        ),
        "chosen": "b",
        "summary": "best of 2",
    }
    return PlacementRecord(**{**fields, **overrides})


def test_record_to_dict_has_exactly_the_documented_shape():
    assert record().to_dict() == {
        "evaluated": 3,
        "feasible": 2,
        "rejected": {"at capacity": 1},
        "candidates": [
            {"node": "b", "total": 66.667, "scores": {"LeastLoaded": 50.0, "PreferLabels": 16.667}},
            {"node": "c", "total": 0.333, "scores": {"LeastLoaded": 0.333}},
        ],
        "chosen": "b",
        "summary": "best of 2",
    }


def test_record_to_dict_is_json_safe_for_a_failure():
    failed = record(feasible=0, candidates=(), chosen=None, summary="0/3 nodes available")
    assert json.loads(json.dumps(failed.to_dict())) == failed.to_dict()
    assert failed.to_dict()["chosen"] is None


def test_record_to_dict_keeps_at_most_five_candidates():
    many = tuple(NodeScore(f"n{i}", float(i), {}) for i in range(8))
    assert len(record(candidates=many).to_dict()["candidates"]) == 5


def test_a_record_ranked_when_read_is_the_record_built_with_its_candidates():
    eager = record()
    calls = []

    def rank() -> tuple[NodeScore, ...]:
        calls.append(1)
        return eager.candidates

    fields = {k: v for k, v in vars(eager).items() if k != "candidates"}
    lazy = PlacementRecord.ranked_when_read(**fields, rank=rank)
    assert not calls  # nothing ranked until read
    assert lazy == eager and lazy.to_dict() == eager.to_dict()
    assert lazy.candidates is eager.candidates and len(calls) == 1  # ranked once
    unread = PlacementRecord.ranked_when_read(**fields, rank=rank)
    assert pickle.loads(pickle.dumps(unread)) == eager
    assert copy.copy(unread) == eager and replace(unread, feasible=9).candidates == eager.candidates
    with pytest.raises(AttributeError):
        _ = lazy.missing


def test_node_score_defaults_to_eligible():
    score = NodeScore("a", 1.0, {})
    assert score.eligible and score.reason == ""


def test_placement_record_is_optional():
    assert Placement("a", 1.0, "why").record is None
    assert Placement("a", 1.0, "why", record=record()).record == record()


@pytest.mark.parametrize(
    ("kwargs", "waitable", "has_record"),
    [({}, False, False), ({"waitable": True}, True, False), ({"record": record()}, False, True)],
)
def test_scheduling_error_keeps_old_raises_working(kwargs, waitable, has_record):
    error = SchedulingError("0/1 nodes available: 1 at capacity", **kwargs)
    assert error.reason == str(error) == "0/1 nodes available: 1 at capacity"
    assert error.waitable is waitable
    assert (error.record is not None) is has_record


@pytest.mark.parametrize(
    ("nodes", "selector", "waitable"),
    [
        ([NodeInfo("a", running=1, capacity=1)], {}, True),
        ([NodeInfo("a", ready=False)], {}, True),
        ([NodeInfo("a", cordoned=True)], {}, True),
        ([NodeInfo("a", labels={"gpu": "false"})], {"gpu": "true"}, False),
        ([NodeInfo("a", agents=frozenset({"writer"}))], {}, False),
        ([], {}, False),
    ],
)
def test_a_failure_says_whether_waiting_could_help(nodes, selector, waitable):
    with pytest.raises(SchedulingError) as caught:
        ClusterState(nodes).place(ScheduleRequest("s", "coder", node_selector=selector))
    assert caught.value.waitable is waitable
