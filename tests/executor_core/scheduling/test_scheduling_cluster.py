"""ClusterState: filters, policies, reasons, ties, the label index, place / release."""

from __future__ import annotations

import threading

import pytest

from executor_core.scheduling import (
    ClusterState,
    NodeInfo,
    ScheduleHints,
    ScheduleRequest,
    SchedulingError,
)
from executor_core.scheduling.cluster import (
    MIN_FEASIBLE_NODES_TO_FIND,
    feasible_nodes_to_find,
)
from executor_core.types import NodeAffinityPolicy as P
from executor_core.types import RequestValidationError

_seq = iter(range(1_000_000))


def req(
    *,
    agent: str = "coder",
    selector: dict[str, str] | None = None,
    policy: P | str = P.NONE,
    team: str | None = None,
    team_nodes: dict[str, int] | None = None,
    excluded: set[str] | None = None,
    session: str | None = None,
) -> ScheduleRequest:
    return ScheduleRequest(
        session_id=session or f"s{next(_seq)}",
        agent_id=agent,
        team_id=team,
        node_selector=selector or {},
        hints=ScheduleHints(
            affinity=policy,
            team_nodes=team_nodes or {},
            excluded_nodes=frozenset(excluded or ()),
        ),
    )


def cluster(*nodes: NodeInfo) -> ClusterState:
    return ClusterState(nodes)


def reason_of(state: ClusterState, request: ScheduleRequest) -> str:
    with pytest.raises(SchedulingError) as caught:
        state.place(request)
    return caught.value.reason


# -- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocked", "request_", "why"),
    [
        (NodeInfo("a", ready=False), req(), "1 not ready"),
        (NodeInfo("a", cordoned=True), req(), "1 cordoned"),
        (NodeInfo("a", running=2, capacity=2), req(), "1 at capacity"),
        (NodeInfo("a", capacity=0), req(), "1 at capacity"),
        (NodeInfo("a", agents=frozenset({"writer"})), req(), "1 not supporting agent coder"),
        (
            NodeInfo("a", labels={"gpu": "false"}),
            req(selector={"gpu": "true"}),
            "1 did not match selector gpu=true",
        ),
        (NodeInfo("a"), req(excluded={"a"}), "1 excluded after an earlier attempt"),
    ],
)
def test_it_never_places_on_a_node_a_filter_rules_out(blocked, request_, why):
    state = cluster(blocked, NodeInfo("b", capacity=4, running=3, labels={"gpu": "true"}))
    assert state.place(request_).node == "b"
    state.remove_node("b")
    assert reason_of(state, request_) == f"0/1 nodes available: {why}"


def test_it_places_on_a_node_that_supports_the_agent_explicitly():
    state = cluster(
        NodeInfo("a", agents=frozenset({"coder"})), NodeInfo("b", agents=frozenset({"x"}))
    )
    assert state.place(req(agent="coder")).node == "a"


# -- policies -----------------------------------------------------------------------------


def test_none_picks_the_least_loaded_node_by_fraction():
    state = cluster(
        NodeInfo("a", capacity=4, running=2),
        NodeInfo("b", capacity=10, running=4),
        NodeInfo("c", capacity=2, running=1),
    )
    assert state.place(req()).node == "b"


@pytest.mark.parametrize(
    ("policy", "team_nodes", "expected"),
    [
        # a: busy team node, b: idle, c: half-busy with two members
        (P.NONE, {"a": 1}, "b"),
        (P.PREFER_COLOCATE, {"a": 1}, "a"),
        (P.PREFER_COLOCATE, {"a": 1, "c": 2}, "c"),
        (P.REQUIRE_COLOCATE, {"a": 1}, "a"),
        (P.REQUIRE_COLOCATE, {}, "b"),
        (P.REQUIRE_COLOCATE, {"a": 0}, "b"),
        (P.PREFER_SPREAD, {"b": 1}, "c"),
        (P.PREFER_SPREAD, {"a": 1, "b": 2, "c": 1}, "c"),
        (P.REQUIRE_SPREAD, {"b": 1}, "c"),
        (P.REQUIRE_SPREAD, {"b": 1, "c": 1}, "a"),
    ],
)
def test_each_policy_places_as_the_design_table_says(policy, team_nodes, expected):
    state = cluster(
        NodeInfo("a", capacity=4, running=3),
        NodeInfo("b", capacity=4, running=0),
        NodeInfo("c", capacity=4, running=2),
    )
    assert state.place(req(policy=policy, team="t", team_nodes=team_nodes)).node == expected


def test_prefer_colocate_falls_back_to_another_node_when_the_team_node_is_full():
    state = cluster(NodeInfo("a", capacity=2, running=2), NodeInfo("b", capacity=2))
    assert state.place(req(policy=P.PREFER_COLOCATE, team="t", team_nodes={"a": 2})).node == "b"


def test_prefer_spread_stacks_members_when_every_node_already_has_one():
    state = cluster(NodeInfo("a", capacity=4, running=1), NodeInfo("b", capacity=4, running=2))
    request = req(policy=P.PREFER_SPREAD, team="t", team_nodes={"a": 1, "b": 1})
    assert state.place(request).node == "a"


def test_require_colocate_ignores_team_nodes_the_cluster_no_longer_knows():
    state = cluster(NodeInfo("a"), NodeInfo("b"))
    request = req(policy=P.REQUIRE_COLOCATE, team="t", team_nodes={"gone": 1, "b": 1})
    assert state.place(request).node == "b"


@pytest.mark.parametrize("policy", [P.REQUIRE_COLOCATE, P.REQUIRE_SPREAD, "require_spread"])
def test_a_required_policy_without_a_team_is_a_validation_error(policy):
    state = cluster(NodeInfo("a"))
    with pytest.raises(RequestValidationError, match="requires a team"):
        state.place(req(policy=policy))


def test_an_unknown_policy_is_a_validation_error():
    with pytest.raises(RequestValidationError, match="unknown affinity policy 'pack'"):
        cluster(NodeInfo("a")).place(req(policy="pack"))


def test_a_policy_given_as_a_plain_string_works():
    state = cluster(NodeInfo("a"), NodeInfo("b"))
    request = req(policy="require_spread", team="t", team_nodes={"a": 1})
    assert state.place(request).node == "b"


# -- reasons ------------------------------------------------------------------------------


def test_the_reason_counts_every_node_under_its_first_failure():
    nodes = [NodeInfo(f"cpu{i}", labels={"gpu": "false"}) for i in range(7)]
    nodes += [NodeInfo(f"full{i}", labels={"gpu": "true"}, running=1) for i in range(3)]
    nodes += [NodeInfo(f"down{i}", labels={"gpu": "true"}, ready=False) for i in range(2)]
    state = ClusterState(nodes)
    assert reason_of(state, req(selector={"gpu": "true"})) == (
        "0/12 nodes available: 7 did not match selector gpu=true, 3 at capacity, 2 not ready"
    )


def test_a_selector_value_no_node_has_rules_out_every_node():
    state = cluster(NodeInfo("a", labels={"gpu": "true"}), NodeInfo("b"))
    assert reason_of(state, req(selector={"gpu": "maybe"})) == (
        "0/2 nodes available: 2 did not match selector gpu=maybe"
    )


def test_a_multi_key_selector_counts_nodes_outside_the_index_as_mismatches():
    state = cluster(
        NodeInfo("a", labels={"gpu": "true", "zone": "x"}),
        NodeInfo("b", labels={"gpu": "true", "zone": "y"}, running=1),
        NodeInfo("c", labels={"gpu": "true", "zone": "y"}, cordoned=True),
        NodeInfo("d", labels={"zone": "y"}),
        NodeInfo("e", labels={"zone": "y"}),
    )
    assert reason_of(state, req(selector={"gpu": "true", "zone": "y"})) == (
        "0/5 nodes available: 3 did not match selector gpu=true,zone=y, 1 at capacity, 1 cordoned"
    )


def test_require_colocate_reason_names_the_team_and_the_selector():
    state = cluster(
        NodeInfo("a", labels={"gpu": "true"}, running=1),
        NodeInfo("b", labels={"gpu": "true"}),
        NodeInfo("c", labels={"gpu": "true"}),
        NodeInfo("d"),
        NodeInfo("e", labels={"gpu": "false"}),
    )
    request = req(
        selector={"gpu": "true"}, policy=P.REQUIRE_COLOCATE, team="t", team_nodes={"a": 1, "e": 1}
    )
    assert reason_of(state, request) == (
        "0/5 nodes available: 2 did not match selector gpu=true, "
        "2 not on a node of team t (require_colocate), 1 at capacity"
    )


def test_require_spread_reason_says_the_nodes_already_host_a_member():
    state = cluster(NodeInfo("a"), NodeInfo("b"), NodeInfo("c", ready=False))
    request = req(policy=P.REQUIRE_SPREAD, team="t", team_nodes={"a": 1, "b": 1})
    assert reason_of(state, request) == (
        "0/3 nodes available: 2 already hosting a member of team t (require_spread), 1 not ready"
    )


def test_an_empty_cluster_says_there_are_no_nodes():
    assert reason_of(ClusterState(), req()) == "0/0 nodes available: no nodes registered"


def test_a_placement_says_why_the_node_won():
    state = cluster(NodeInfo("a", capacity=4, running=1), NodeInfo("b", capacity=4, running=2))
    placement = state.place(req(policy=P.PREFER_COLOCATE, team="t", team_nodes={"a": 1}))
    assert placement.node == "a"
    assert placement.score == 87.5
    assert placement.reason == (
        "prefer_colocate: best of 2 feasible nodes (2 checked), 1/4 running, 1 of team t there"
    )


# -- ties ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ([NodeInfo("a", capacity=8, running=2), NodeInfo("b", capacity=4, running=1)], "b"),
        ([NodeInfo("b", capacity=4, running=1), NodeInfo("a", capacity=4, running=1)], "a"),
        ([NodeInfo("z", capacity=3, running=1), NodeInfo("y", capacity=6, running=2)], "z"),
        ([NodeInfo("n2"), NodeInfo("n10"), NodeInfo("n1")], "n1"),
    ],
)
def test_ties_go_to_fewest_running_then_name(nodes, expected):
    assert ClusterState(nodes).evaluate(req()).node == expected


# -- the label index ----------------------------------------------------------------------


def fleet() -> ClusterState:
    return cluster(
        NodeInfo("a", labels={"gpu": "true", "zone": "x", "arch": "arm"}),
        NodeInfo("b", labels={"gpu": "true", "zone": "y"}),
        NodeInfo("c", labels={"gpu": "false", "zone": "x", "arch": "arm"}),
        NodeInfo("d", labels={"zone": "x", "arch": "arm"}),
        NodeInfo("e"),
    )


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ({}, ["a", "b", "c", "d", "e"]),
        ({"gpu": "true"}, ["a", "b"]),
        ({"zone": "x", "arch": "arm"}, ["a", "c", "d"]),
        ({"zone": "x", "arch": "arm", "gpu": "true"}, ["a"]),
        ({"zone": "y", "arch": "arm"}, []),
        ({"zone": "nowhere"}, []),
        ({"colour": "x"}, []),
    ],
)
def test_the_label_index_finds_exactly_the_matching_nodes(selector, names):
    assert fleet().matching_nodes(selector) == names


def test_a_label_change_through_upsert_moves_the_node_in_the_index():
    state = fleet()
    state.upsert_node(NodeInfo("b", labels={"gpu": "false", "zone": "x"}))
    assert state.matching_nodes({"gpu": "true"}) == ["a"]
    assert state.matching_nodes({"gpu": "false", "zone": "x"}) == ["b", "c"]
    assert state.matching_nodes({"zone": "y"}) == []
    assert reason_of(state, req(selector={"zone": "y"})) == (
        "0/5 nodes available: 5 did not match selector zone=y"
    )


def test_a_removed_node_leaves_the_index_and_is_never_chosen():
    state = fleet()
    assert state.remove_node("a") is True
    assert state.remove_node("a") is False
    assert state.matching_nodes({"gpu": "true"}) == ["b"]
    assert state.matching_nodes({"arch": "arm", "zone": "x"}) == ["c", "d"]
    assert "a" not in state and len(state) == 4
    assert state.place(req(selector={"gpu": "true"})).node == "b"


def test_a_removed_then_readded_node_is_indexed_again():
    state = fleet()
    state.remove_node("b")
    state.upsert_node(NodeInfo("b", labels={"zone": "y"}))
    assert state.matching_nodes({"zone": "y"}) == ["b"]
    assert state.matching_nodes({"gpu": "true"}) == ["a"]


# -- place, release, evaluate -------------------------------------------------------------


def test_place_assumes_the_slot_and_release_gives_it_back():
    state = cluster(NodeInfo("a", capacity=1))
    placement = state.place(req(session="s1", team="t"))
    assert state.node("a").running == 1
    assert state.placement_of("s1") == placement
    assert state.team_nodes("t") == {"a": 1}
    with pytest.raises(SchedulingError):
        state.place(req(session="s2"))
    assert state.release("s1") is True
    assert state.release("s1") is False
    assert state.node("a").running == 0
    assert state.placement_of("s1") is None
    assert state.team_nodes("t") == {}
    assert state.place(req(session="s2")).node == "a"


def test_evaluate_decides_like_place_without_assuming():
    state = cluster(NodeInfo("a", capacity=1), NodeInfo("b", capacity=2, running=1))
    assert state.evaluate(req(session="s1")).node == "a"
    assert state.evaluate(req(session="s1")).node == "a"
    assert [n.running for n in state.nodes()] == [0, 1]
    assert state.placement_of("s1") is None
    assert state.place(req(session="s1")).node == "a"


def test_placing_a_placed_session_again_counts_it_once():
    state = cluster(NodeInfo("a", capacity=2), NodeInfo("b", capacity=2, running=1))
    assert state.place(req(session="s1", team="t")).node == "a"
    # Its own slot is free for the new decision, so it may land on the same node.
    assert state.place(req(session="s1", team="t")).node == "a"
    assert [n.running for n in state.nodes()] == [1, 1]
    assert state.team_nodes("t") == {"a": 1}


def test_placing_a_placed_session_again_moves_it_when_its_node_is_excluded():
    state = cluster(NodeInfo("a", capacity=2), NodeInfo("b", capacity=2))
    state.place(req(session="s1", team="t"))
    assert state.place(req(session="s1", team="t", excluded={"a"})).node == "b"
    assert [n.running for n in state.nodes()] == [0, 1]
    assert state.team_nodes("t") == {"b": 1}
    assert state.release("s1") is True
    assert [n.running for n in state.nodes()] == [0, 0]


def test_a_failed_re_place_keeps_the_old_placement():
    state = cluster(NodeInfo("a", capacity=1))
    first = state.place(req(session="s1"))
    with pytest.raises(SchedulingError):
        state.place(req(session="s1", excluded={"a"}))
    assert state.placement_of("s1") == first
    assert state.node("a").running == 1


def test_a_full_node_qualifies_again_for_the_session_that_fills_it():
    state = cluster(NodeInfo("a", capacity=1))
    state.place(req(session="s1"))
    assert state.place(req(session="s1")).node == "a"
    assert state.node("a").running == 1


def test_upsert_takes_the_callers_running_count_and_keeps_placements():
    state = cluster(NodeInfo("a", capacity=4))
    state.place(req(session="s1"))
    state.upsert_node(NodeInfo("a", capacity=4, running=0))
    assert state.node("a").running == 0
    assert state.placement_of("s1") is not None
    assert state.release("s1") is True
    assert state.node("a").running == 0  # never below zero


def test_removing_a_node_forgets_the_sessions_placed_on_it():
    state = cluster(NodeInfo("a"), NodeInfo("b"))
    state.place(req(session="s1", team="t"))
    state.remove_node("a")
    assert state.placement_of("s1") is None
    assert state.release("s1") is False
    assert state.team_nodes("t") == {}


def test_nodes_are_returned_as_copies_by_name():
    state = cluster(NodeInfo("b", labels={"k": "v"}), NodeInfo("a"))
    nodes = state.nodes()
    assert [n.name for n in nodes] == ["a", "b"]
    nodes[1].labels["k"] = "changed"
    assert state.node("b").labels == {"k": "v"}
    assert state.node("missing") is None


@pytest.mark.parametrize(
    "bad",
    [
        NodeInfo(""),
        NodeInfo("a", capacity=-1),
        NodeInfo("a", running=-1),
        NodeInfo("a", capacity=1.5),  # type: ignore[arg-type]
        NodeInfo("a", labels={"k": 1}),  # type: ignore[dict-item]
    ],
)
def test_upsert_refuses_a_malformed_node(bad):
    with pytest.raises(ValueError):
        ClusterState().upsert_node(bad)


# -- sampling and rotation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [(0, 0), (1, 1), (50, 50), (51, 50), (1_000, 50), (2_000, 66), (10_000, 90), (10**6, 99)],
)
def test_the_sample_size_adapts_to_the_candidates(candidates, expected):
    assert feasible_nodes_to_find(candidates) == expected


def test_a_large_fleet_stops_filtering_once_enough_nodes_are_feasible():
    state = ClusterState(NodeInfo(f"n{i:03d}", capacity=2) for i in range(300))
    placement = state.place(req())
    assert f"best of {MIN_FEASIBLE_NODES_TO_FIND} feasible nodes" in placement.reason
    assert f"({MIN_FEASIBLE_NODES_TO_FIND} checked)" in placement.reason


def test_successive_placements_start_where_the_last_one_stopped():
    state = ClusterState(NodeInfo(f"n{i:03d}", capacity=2) for i in range(300))
    chosen = []
    for _ in range(6):
        placement = state.place(req(session="s"))
        chosen.append(placement.node)
        state.release("s")
    assert chosen == ["n000", "n050", "n100", "n150", "n200", "n250"]


def test_a_walk_stops_at_the_last_feasible_node_it_needs():
    # 100 idle nodes of one slot: a decision wants 50 feasible ones. n010 and n020 are full,
    # so the first 50 nodes leave two to find, and n050, n051 are those two: n052, full too,
    # is never evaluated, and the next walk starts there.
    full = {"n010", "n020", "n052"}
    names = [f"n{i:03d}" for i in range(100)]
    state = ClusterState(NodeInfo(n, capacity=1, running=int(n in full)) for n in names)
    first = state.place(req(session="s")).record
    assert (first.evaluated, first.feasible, first.rejected) == (52, 50, {"at capacity": 2})
    state.release("s")
    # From n052: n053-n099 and n000-n002 are the 50 feasible nodes, n052 the one rejected.
    second = state.place(req(session="s")).record
    assert (second.evaluated, second.feasible, second.rejected) == (51, 50, {"at capacity": 1})


def test_the_same_calls_on_the_same_state_give_the_same_nodes():
    def run() -> list[str]:
        state = ClusterState(
            NodeInfo(f"n{i:03d}", capacity=1 + i % 3, labels={"z": str(i % 4)}) for i in range(240)
        )
        out = []
        for i in range(200):
            request = req(session=f"s{i}", selector={"z": str(i % 4)} if i % 2 else {})
            out.append(state.place(request).node)
            if i % 3 == 0:
                state.release(f"s{i // 2}")
        return out

    assert run() == run()


def test_several_threads_never_overcommit_a_node():
    state = ClusterState(NodeInfo(f"n{i}", capacity=3) for i in range(20))
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(300):
                sid = f"w{k}-{i}"
                try:
                    state.place(req(session=sid))
                except SchedulingError:
                    continue
                if i % 2:
                    state.release(sid)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    nodes = state.nodes()
    assert all(n.running <= n.capacity for n in nodes)
    placed = sum(1 for k in range(4) for i in range(300) if state.placement_of(f"w{k}-{i}"))
    assert sum(n.running for n in nodes) == placed
