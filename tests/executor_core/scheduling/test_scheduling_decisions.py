"""ClusterState with the newer constraints: pinning, preferences, capabilities, models,
resources; the placement record of every decision; whether a failure is worth waiting on."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest

from executor_core.scheduling import (
    ClusterState,
    NodeInfo,
    ScheduleHints,
    ScheduleRequest,
    SchedulingError,
)
from executor_core.scheduling.framework import DEFAULT_FILTERS, Profile, default_registry
from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.types import NodeAffinityPolicy as P
from executor_core.types import RequestValidationError


def req(session: str = "s", **fields: Any) -> ScheduleRequest:
    return ScheduleRequest(session, "coder", **fields)


def failure(state: ClusterState, request: ScheduleRequest) -> SchedulingError:
    with pytest.raises(SchedulingError) as caught:
        state.place(request)
    return caught.value


def fleet() -> ClusterState:
    return ClusterState(
        [
            NodeInfo("a", capacity=4, labels={"zone": "eu"}),
            NodeInfo("b", capacity=4, running=4, labels={"zone": "us"}),
            NodeInfo("c", capacity=4, running=1, cordoned=True),
        ]
    )


# -- pinning --------------------------------------------------------------------------------


def test_a_pinned_request_goes_to_its_node_even_when_another_is_better():
    state = ClusterState([NodeInfo("a", capacity=4), NodeInfo("b", capacity=4, running=3)])
    assert state.place(req(node="b")).node == "b"
    assert state.node("b").running == 4


@pytest.mark.parametrize(
    ("pinned", "extra", "summary", "waitable"),
    [
        ("b", {}, "0/3 nodes available: node b at capacity", True),
        ("c", {}, "0/3 nodes available: node c cordoned", True),
        ("zz", {}, "0/3 nodes available: node zz is not registered", False),
        (
            "a",
            {"node_selector": {"zone": "us"}},
            "0/3 nodes available: node a did not match selector zone=us",
            False,
        ),
        ("a", {"model": "llama3"}, "0/3 nodes available: node a not serving model llama3", False),
    ],
)
def test_a_pinned_failure_names_that_nodes_reason(pinned, extra, summary, waitable):
    error = failure(fleet(), req(node=pinned, **extra))
    assert error.reason == summary
    assert error.waitable is waitable
    assert error.record.summary == summary
    assert error.record.chosen is None


def test_the_record_of_a_pinned_failure_counts_the_other_nodes_as_not_requested():
    record = failure(fleet(), req(node="b")).record
    assert record.evaluated == 1 and record.feasible == 0
    assert dict(record.rejected) == {"at capacity": 1, "not the requested node b": 2}


# -- preferred labels -----------------------------------------------------------------------


def test_prefer_labels_wins_a_tie():
    state = ClusterState(
        [NodeInfo("a", labels={"zone": "us"}), NodeInfo("b", labels={"zone": "eu"})]
    )
    assert state.evaluate(req()).node == "a"  # by name
    assert state.evaluate(req(prefer_labels={"zone": "eu"})).node == "b"


def test_prefer_labels_never_overrides_a_filter():
    state = ClusterState(
        [NodeInfo("a", labels={"zone": "us"}), NodeInfo("b", labels={"zone": "eu"}, running=1)]
    )
    assert state.place(req(prefer_labels={"zone": "eu"})).node == "a"


def test_prefer_labels_shows_in_the_candidates_scores():
    state = ClusterState([NodeInfo("a", capacity=2), NodeInfo("b", capacity=2, labels={"z": "1"})])
    placement = state.evaluate(req(prefer_labels={"z": "1"}))
    best = placement.record.candidates[0]
    assert (best.node, dict(best.scores)) == ("b", {"TeamAffinity": 50.0, "PreferLabels": 50.0})
    assert best.total == placement.score == 100.0


# -- capabilities, model, resources -----------------------------------------------------------


def constrained() -> ClusterState:
    return ClusterState(
        [
            NodeInfo("plain", free_memory_mb=8192, cpu_percent=5.0),
            NodeInfo(
                "gpu",
                capabilities=frozenset({"gpu_inference", "browser"}),
                models=frozenset({"llama3"}),
                free_memory_mb=512,
                cpu_percent=95.0,
            ),
            NodeInfo(
                "big",
                capabilities=frozenset({"gpu_inference"}),
                models=frozenset({"llama3"}),
                free_memory_mb=16384,
                cpu_percent=30.0,
            ),
        ]
    )


@pytest.mark.parametrize(
    ("fields", "chosen", "summary"),
    [
        ({"capabilities": frozenset({"gpu_inference"})}, "big", None),
        (
            {"capabilities": frozenset({"browser", "gpu_inference"}), "min_free_memory_mb": 1024},
            None,
            "0/3 nodes available: 2 missing capabilities browser,gpu_inference, "
            "1 less than 1024 MB memory free (or not reported)",
        ),
        ({"model": "llama3", "max_cpu_percent": 50.0}, "big", None),
        (
            {"model": "mistral"},
            None,
            "0/3 nodes available: 3 not serving model mistral",
        ),
        (
            {"max_cpu_percent": 20.0, "model": "llama3"},
            None,
            "0/3 nodes available: 2 CPU above 20% (or not reported), 1 not serving model llama3",
        ),
        ({"min_free_memory_mb": 4096}, "big", None),
    ],
)
def test_capabilities_models_and_resources_exclude_with_the_reason(fields, chosen, summary):
    state = constrained()
    if chosen is not None:
        assert state.place(req(**fields)).node == chosen
    else:
        assert failure(state, req(**fields)).reason == summary


def test_more_headroom_wins_between_nodes_equally_loaded():
    state = ClusterState(
        [
            NodeInfo("a", free_memory_mb=2048, cpu_percent=50.0),
            NodeInfo("b", free_memory_mb=8192, cpu_percent=50.0),
        ]
    )
    assert state.evaluate(req(min_free_memory_mb=1024)).node == "b"


def test_a_heartbeat_with_new_resources_changes_the_next_decision():
    state = ClusterState([NodeInfo("a", free_memory_mb=256), NodeInfo("b", free_memory_mb=256)])
    assert failure(state, req(min_free_memory_mb=1024)).waitable is True
    state.upsert_node(NodeInfo("b", free_memory_mb=4096))
    assert state.place(req(min_free_memory_mb=1024)).node == "b"


def test_a_node_gaining_a_capability_is_seen_at_once():
    state = ClusterState([NodeInfo("a")])
    assert failure(state, req(capabilities=frozenset({"gpu"}))).waitable is False
    state.upsert_node(NodeInfo("a", capabilities=frozenset({"gpu"})))
    assert state.place(req(capabilities=frozenset({"gpu"}))).node == "a"
    state.release("s")
    state.upsert_node(NodeInfo("a"))
    assert failure(state, req(capabilities=frozenset({"gpu"}))).waitable is False


def test_a_node_joining_or_uncordoning_is_seen_at_once():
    state = ClusterState([NodeInfo("a", cordoned=True)])
    assert failure(state, req()).waitable is True
    state.upsert_node(NodeInfo("a"))
    assert state.evaluate(req()).node == "a"
    state.upsert_node(NodeInfo("a", ready=False))
    state.upsert_node(NodeInfo("b"))
    assert state.evaluate(req()).node == "b"
    state.remove_node("b")
    assert failure(state, req()).reason == "0/1 nodes available: 1 not ready"


# -- the placement record ---------------------------------------------------------------------


def test_a_placement_records_what_the_decision_saw():
    state = ClusterState(
        [
            NodeInfo("a", capacity=4, running=1),
            NodeInfo("b", capacity=4, running=4),
            NodeInfo("c", capacity=4, running=2),
            NodeInfo("d", capacity=4, ready=False),
        ]
    )
    placement = state.place(req())
    record = placement.record
    assert (record.evaluated, record.feasible, record.chosen) == (3, 2, "a")
    # The not-ready node never enters the walk (the indexed filters keep it out).
    assert dict(record.rejected) == {"at capacity": 1}
    assert [(c.node, c.total) for c in record.candidates] == [("a", 75.0), ("c", 50.0)]
    assert record.summary == placement.reason
    assert record.to_dict()["candidates"][0] == {
        "node": "a",
        "total": 75.0,
        "scores": {"TeamAffinity": 75.0},
    }


def test_a_record_keeps_the_best_five_best_first_with_ties_by_running_then_name():
    nodes = [NodeInfo(f"n{i}", capacity=2 * (1 + i % 2), running=i % 2) for i in range(8)]
    record = ClusterState(nodes).evaluate(req()).record
    # Even nodes: idle, capacity 2 (score 100); odd: 1 of 4 running (score 75).
    assert [c.node for c in record.candidates] == ["n0", "n2", "n4", "n6", "n1"]
    assert record.feasible == 8 and len(record.candidates) == 5


def test_a_record_read_after_later_placements_shows_the_decision_as_it_was():
    state = ClusterState([NodeInfo("a", capacity=2), NodeInfo("b", capacity=2)])
    first = state.place(req()).record
    state.place(req())  # b, the least loaded now
    state.place(req())  # a again
    # Both were idle when the first one was decided: a tie, broken by name, not by the
    # running counts the later placements left.
    assert [(c.node, c.total) for c in first.candidates] == [("a", 100.0), ("b", 100.0)]


def test_each_plugin_share_sums_to_the_total():
    state = ClusterState(
        [NodeInfo("a", capacity=4, running=1, labels={"z": "1"}, free_memory_mb=2048)]
    )
    best = state.evaluate(req(prefer_labels={"z": "1"}, min_free_memory_mb=1024)).record
    scores = best.candidates[0].scores
    assert set(scores) == {"TeamAffinity", "PreferLabels", "NodeResources"}
    assert sum(scores.values()) == pytest.approx(best.candidates[0].total)
    assert scores == pytest.approx(
        {"TeamAffinity": 25.0, "PreferLabels": 100 / 3, "NodeResources": 50 / 3}
    )


def test_a_failure_records_every_node_by_reason():
    error = failure(fleet(), req(node_selector={"zone": "us"}, hints=ScheduleHints()))
    assert error.record.to_dict() == {
        "evaluated": 1,
        "feasible": 0,
        "rejected": {"at capacity": 1, "did not match selector zone=us": 2},
        "candidates": [],
        "chosen": None,
        "summary": "0/3 nodes available: 2 did not match selector zone=us, 1 at capacity",
    }


# -- whether waiting helps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "fields", "waitable"),
    [
        ([NodeInfo("a", running=1)], {}, True),
        ([NodeInfo("a", ready=False)], {}, True),
        # The only node was excluded (a retry after it lost the task): it never qualifies.
        ([NodeInfo("a")], {"hints": ScheduleHints(excluded_nodes=frozenset({"a"}))}, False),
        (
            [NodeInfo("a"), NodeInfo("b", running=1)],
            {"hints": ScheduleHints(excluded_nodes=frozenset({"a"}))},
            True,
        ),
        (
            [NodeInfo("a"), NodeInfo("b")],
            {
                "team_id": "t",
                "hints": ScheduleHints(affinity=P.REQUIRE_SPREAD, team_nodes={"a": 1, "b": 1}),
            },
            True,
        ),
        ([NodeInfo("a", free_memory_mb=1)], {"min_free_memory_mb": 10}, True),
        ([NodeInfo("a", cpu_percent=99.0)], {"max_cpu_percent": 10.0}, True),
        ([NodeInfo("a")], {"capabilities": frozenset({"gpu"})}, False),
        ([NodeInfo("a")], {"model": "llama3"}, False),
        ([NodeInfo("a")], {"node": "b"}, False),
        ([NodeInfo("a", labels={"k": "v"})], {"node_selector": {"k": "w"}}, False),
        # One node could some day take it: worth waiting.
        (
            [NodeInfo("a"), NodeInfo("b", models=frozenset({"m"}), running=1)],
            {"model": "m"},
            True,
        ),
    ],
)
def test_waitable_says_whether_some_node_could_ever_take_the_request(nodes, fields, waitable):
    assert failure(ClusterState(nodes), req(**fields)).waitable is waitable


# -- a failure answered again while nothing changes ---------------------------------------------


def full() -> ClusterState:
    return ClusterState(
        [NodeInfo("a", capacity=2, running=2), NodeInfo("b", capacity=1, running=1)]
    )


def test_a_full_fleet_answers_a_queue_of_requests_alike():
    state = full()
    first = failure(state, req("s1"))
    again = failure(state, req("s2"))
    assert (again.reason, again.waitable) == (first.reason, first.waitable)
    assert again.reason == "0/2 nodes available: 2 at capacity"
    assert again.record == first.record
    again.record.rejected["at capacity"] = 99  # each error's record is its own
    assert failure(state, req("s3")).record.rejected == {"at capacity": 2}


@pytest.mark.parametrize(
    ("change", "after"),
    [
        (lambda s: s.upsert_node(NodeInfo("c", capacity=1)), "c"),
        (lambda s: s.upsert_node(NodeInfo("c", running=1)), "0/3 nodes available: 3 at capacity"),
        (lambda s: s.upsert_node(NodeInfo("b", capacity=2, running=1)), "b"),
        (lambda s: s.upsert_node(NodeInfo("a", capacity=2, running=1)), "a"),
        (
            lambda s: s.upsert_node(NodeInfo("a", capacity=2, running=2, ready=False)),
            "0/2 nodes available: 1 at capacity, 1 not ready",
        ),
        (lambda s: s.remove_node("b"), "0/1 nodes available: 1 at capacity"),
        (lambda s: s.release("placed"), "b"),
    ],
    ids=["node added", "full node added", "capacity", "running", "ready", "removed", "release"],
)
def test_a_cached_failure_gives_way_to_any_change_of_the_fleet(change, after):
    state = ClusterState([NodeInfo("a", capacity=2, running=2), NodeInfo("b", capacity=1)])
    state.place(req("placed"))
    assert failure(state, req("s1")).reason == "0/2 nodes available: 2 at capacity"
    change(state)
    try:
        outcome = state.place(req("s2")).node
    except SchedulingError as error:
        outcome = error.reason
    assert outcome == after


def test_a_heartbeat_with_new_figures_rewords_the_failure():
    state = ClusterState([NodeInfo("a", cpu_percent=10.0, running=1)])
    assert failure(state, req("s1", max_cpu_percent=50.0)).reason == (
        "0/1 nodes available: 1 at capacity"
    )
    state.upsert_node(NodeInfo("a", cpu_percent=90.0))  # a slot freed, the CPU is busy
    assert failure(state, req("s2", max_cpu_percent=50.0)).reason == (
        "0/1 nodes available: 1 CPU above 50% (or not reported)"
    )


def test_a_failed_re_place_is_not_remembered_with_its_own_slot_given_back():
    state = ClusterState([NodeInfo("a", free_memory_mb=1024)])
    state.place(req("s1"))
    # Its own slot given back, the node is ruled out by memory, not capacity...
    error = failure(state, req("s1", min_free_memory_mb=4096))
    assert error.reason == "0/1 nodes available: 1 less than 4096 MB memory free (or not reported)"
    # ...while for anyone else it is full.
    assert failure(state, req("s2", min_free_memory_mb=4096)).reason == (
        "0/1 nodes available: 1 at capacity"
    )


def test_could_ever_fit_follows_nodes_added_changed_and_removed():
    gpu = req("s", capabilities=frozenset({"gpu"}))
    state = ClusterState([NodeInfo("a")])
    assert failure(state, gpu).waitable is False
    state.upsert_node(NodeInfo("b", capabilities=frozenset({"gpu"}), running=1))  # added, full
    assert failure(state, gpu).waitable is True
    state.upsert_node(NodeInfo("b", running=1))  # changed: the capability is gone
    assert failure(state, gpu).waitable is False
    state.upsert_node(NodeInfo("b", capabilities=frozenset({"gpu"}), running=1))
    assert failure(state, gpu).waitable is True
    state.remove_node("b")
    assert failure(state, gpu).waitable is False


def test_load_alone_leaves_could_ever_fit_as_it_was():
    state = ClusterState([NodeInfo("a", labels={"zone": "eu"})])
    state.place(req("s1"))
    eu = {"node_selector": {"zone": "eu"}}
    assert failure(state, req("s2", **eu)).waitable is True
    state.upsert_node(NodeInfo("a", labels={"zone": "eu"}, running=1, cpu_percent=5.0))
    assert failure(state, req("s3", **eu)).waitable is True
    state.upsert_node(NodeInfo("a", labels={"zone": "us"}, running=1))  # relabelled
    assert failure(state, req("s4", **eu)).waitable is False


class _MinCapacity(Filter):
    """A static filter of a profile's own: nodes of at least four slots."""

    name = "MinCapacity"
    transient = False

    def request_key(self, request: ScheduleRequest) -> Hashable:
        return ()

    def prefilter(self, request: ScheduleRequest) -> Narrow:
        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if n.capacity >= 4]
            reject(rejected, "too small", nodes, kept)
            return kept

        return narrow


def test_could_ever_fit_follows_a_capacity_change_for_a_static_filter_reading_it():
    registry = default_registry()
    registry.register(_MinCapacity.name, _MinCapacity)
    profile = Profile(filters=(*DEFAULT_FILTERS, _MinCapacity.name))
    state = ClusterState([NodeInfo("a", capacity=2, running=2)], profile=profile, registry=registry)
    assert failure(state, req("s1")).waitable is False
    state.upsert_node(NodeInfo("a", capacity=4, running=4))
    assert failure(state, req("s2")).waitable is True


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"node": 3}, "node"),
        ({"model": ["llama3"]}, "model"),
        ({"capabilities": "gpu"}, "capabilities"),
        ({"capabilities": frozenset({1})}, "capabilities"),
        ({"prefer_labels": {"zone": 1}}, "prefer_labels"),
        ({"min_free_memory_mb": -1}, "min_free_memory_mb"),
        ({"min_free_memory_mb": 1.5}, "min_free_memory_mb"),
        ({"min_free_memory_mb": True}, "min_free_memory_mb"),
        ({"max_cpu_percent": 101}, "max_cpu_percent"),
        ({"max_cpu_percent": -0.5}, "max_cpu_percent"),
        ({"max_cpu_percent": float("nan")}, "max_cpu_percent"),
    ],
)
def test_a_malformed_constraint_is_a_validation_error_naming_the_field(fields, field):
    with pytest.raises(RequestValidationError) as caught:
        ClusterState([NodeInfo("a")]).place(req(**fields))
    assert caught.value.field == field


@pytest.mark.parametrize(
    "bad",
    [
        NodeInfo("a", capabilities="gpu"),  # type: ignore[arg-type]
        NodeInfo("a", models=frozenset({1})),  # type: ignore[arg-type]
        NodeInfo("a", cpu_percent=-1.0),
        NodeInfo("a", free_memory_mb="lots"),  # type: ignore[arg-type]
        NodeInfo("a", free_disk_mb=float("nan")),  # type: ignore[arg-type]
    ],
)
def test_upsert_refuses_malformed_node_facts(bad):
    with pytest.raises(ValueError, match="node a: "):
        ClusterState().upsert_node(bad)


def test_the_rotation_goes_on_where_it_was_when_a_node_changes():
    state = ClusterState(NodeInfo(f"n{i:03d}", capacity=2) for i in range(300))
    chosen = []
    for i in range(4):
        chosen.append(state.place(req()).node)
        state.release("s")
        if i == 1:
            state.upsert_node(NodeInfo("n299", capacity=2, cordoned=True))  # rebuilds the ring
    assert chosen == ["n000", "n050", "n100", "n150"]
