"""Each filter and score plugin on its own: one table row per behaviour."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from executor_core.scheduling import NodeInfo, ScheduleHints, ScheduleRequest
from executor_core.scheduling.framework import (
    DEFAULT_FILTERS,
    DEFAULT_SCORES,
    FilterPlugin,
    Registry,
    ScorePlugin,
    count_reasons,
    default_registry,
    run_filters,
    run_scores,
    summarize,
)
from executor_core.scheduling.plugins import (
    affinity,
    agents,
    capacity,
    exclusion,
    readiness,
    selector,
)
from executor_core.types import NodeAffinityPolicy as P


def request(
    agent: str = "coder",
    selector: dict[str, str] | None = None,
    policy: P = P.NONE,
    team_nodes: dict[str, int] | None = None,
    excluded: frozenset[str] = frozenset(),
    team: str | None = "t",
) -> ScheduleRequest:
    return ScheduleRequest(
        session_id="s",
        agent_id=agent,
        team_id=team,
        node_selector=selector or {},
        hints=ScheduleHints(affinity=policy, team_nodes=team_nodes or {}, excluded_nodes=excluded),
    )


@pytest.mark.parametrize(
    ("ready", "cordoned", "expected"),
    [
        (True, False, None),
        (False, False, readiness.REASON_NOT_READY),
        (True, True, readiness.REASON_CORDONED),
        (False, True, readiness.REASON_NOT_READY),
    ],
)
def test_readiness_takes_only_ready_uncordoned_nodes(ready, cordoned, expected):
    node = NodeInfo("n", ready=ready, cordoned=cordoned)
    assert readiness.Readiness().filter(node, request()) == expected


@pytest.mark.parametrize(
    ("labels", "wanted", "fits"),
    [
        ({"gpu": "true"}, {}, True),
        ({}, {}, True),
        ({"gpu": "true", "zone": "a"}, {"gpu": "true"}, True),
        ({"gpu": "true", "zone": "a"}, {"gpu": "true", "zone": "a"}, True),
        ({"gpu": "false"}, {"gpu": "true"}, False),
        ({"zone": "a"}, {"gpu": "true"}, False),
        ({"gpu": "true"}, {"gpu": "true", "zone": "a"}, False),
        ({"gpu": ""}, {"gpu": ""}, True),
        ({}, {"gpu": ""}, False),
    ],
)
def test_selector_needs_every_pair_among_the_labels(labels, wanted, fits):
    node = NodeInfo("n", labels=labels)
    why = selector.Selector().filter(node, request(selector=wanted))
    assert (why is None) is fits
    if not fits:
        assert why == selector.reason(wanted)


def test_selector_reason_lists_pairs_in_key_order():
    assert selector.reason({"zone": "a", "gpu": "true"}) == "did not match selector gpu=true,zone=a"


@pytest.mark.parametrize(
    ("supported", "agent", "fits"),
    [
        (frozenset(), "coder", True),
        (frozenset({"coder"}), "coder", True),
        (frozenset({"coder", "writer"}), "writer", True),
        (frozenset({"writer"}), "coder", False),
    ],
)
def test_agents_treats_an_empty_list_as_any_agent(supported, agent, fits):
    why = agents.Agents().filter(NodeInfo("n", agents=supported), request(agent=agent))
    assert why == (None if fits else "not supporting agent coder")


@pytest.mark.parametrize(
    ("running", "cap", "fits"),
    [(0, 1, True), (3, 4, True), (4, 4, False), (5, 4, False), (0, 0, False)],
)
def test_capacity_needs_a_free_slot(running, cap, fits):
    why = capacity.Capacity().filter(NodeInfo("n", capacity=cap, running=running), request())
    assert why == (None if fits else capacity.REASON)


@pytest.mark.parametrize(
    ("excluded", "fits"), [(frozenset(), True), (frozenset({"m"}), True), (frozenset({"n"}), False)]
)
def test_exclusion_keeps_a_retry_off_the_node_that_lost_it(excluded, fits):
    why = exclusion.Exclusion().filter(NodeInfo("n"), request(excluded=excluded))
    assert why == (None if fits else exclusion.REASON)


COLOCATE_REASON = "not on a node of team t (require_colocate)"
SPREAD_REASON = "already hosting a member of team t (require_spread)"


@pytest.mark.parametrize(
    ("policy", "team_nodes", "expected"),
    [
        (P.NONE, {"n": 2}, None),
        (P.PREFER_COLOCATE, {"m": 1}, None),
        (P.PREFER_SPREAD, {"n": 1}, None),
        (P.REQUIRE_COLOCATE, {}, None),
        (P.REQUIRE_COLOCATE, {"n": 1}, None),
        (P.REQUIRE_COLOCATE, {"m": 1}, COLOCATE_REASON),
        (P.REQUIRE_COLOCATE, {"m": 0}, None),
        (P.REQUIRE_SPREAD, {}, None),
        (P.REQUIRE_SPREAD, {"m": 1}, None),
        (P.REQUIRE_SPREAD, {"n": 1}, SPREAD_REASON),
        (P.REQUIRE_SPREAD, {"n": 0}, None),
    ],
)
def test_affinity_filters_only_the_required_policies(policy, team_nodes, expected):
    why = affinity.TeamAffinity().filter(
        NodeInfo("n"), request(policy=policy, team_nodes=team_nodes)
    )
    assert why == expected


@pytest.mark.parametrize(
    ("policy", "running", "cap", "on_node", "expected"),
    [
        (P.NONE, 0, 4, 0, 100.0),
        (P.NONE, 1, 4, 0, 75.0),
        (P.NONE, 4, 4, 0, 0.0),
        (P.REQUIRE_SPREAD, 2, 4, 0, 50.0),
        (P.REQUIRE_COLOCATE, 2, 4, 3, 50.0),
        (P.PREFER_COLOCATE, 0, 4, 0, 50.0),
        (P.PREFER_COLOCATE, 2, 4, 0, 25.0),
        (P.PREFER_COLOCATE, 2, 4, 1, 75.0),
        (P.PREFER_COLOCATE, 3, 4, 2, 62.5),
        (P.PREFER_SPREAD, 0, 4, 0, 100.0),
        (P.PREFER_SPREAD, 2, 4, 0, 75.0),
        (P.PREFER_SPREAD, 0, 4, 1, 50.0),
        (P.PREFER_SPREAD, 0, 4, 2, 25.0),
        (P.PREFER_SPREAD, 4, 4, 0, 0.0),
        (P.PREFER_SPREAD, 0, 0, 0, 0.0),
    ],
)
def test_affinity_scores_each_policy_on_a_0_to_100_scale(policy, running, cap, on_node, expected):
    assert affinity.score(policy, running, cap, on_node) == expected


@pytest.mark.parametrize(
    ("policy", "better", "worse"),
    [
        # (running, capacity, members on the node)
        (P.NONE, (1, 4, 0), (3, 4, 0)),
        (P.PREFER_COLOCATE, (3, 4, 1), (0, 4, 0)),
        (P.PREFER_COLOCATE, (1, 4, 1), (3, 4, 2)),
        (P.PREFER_SPREAD, (3, 4, 0), (0, 4, 1)),
        (P.PREFER_SPREAD, (7, 8, 1), (0, 16, 2)),
        (P.PREFER_SPREAD, (1, 4, 1), (2, 4, 1)),
    ],
)
def test_affinity_scores_rank_nodes_as_the_policy_means(policy, better, worse):
    assert affinity.score(policy, *better) > affinity.score(policy, *worse)


@pytest.mark.parametrize("policy", list(P))
def test_affinity_scores_a_list_exactly_as_the_rule_scores_each_node(policy):
    # The list scorers inline the per-node rules for speed: they must give the same floats.
    grid = [(r, c, m) for c in (0, 1, 3, 4, 16) for r in range(0, c + 2) for m in (0, 1, 2, 70)]
    nodes = [
        SimpleNamespace(name=f"n{i}", running=r, capacity=c) for i, (r, c, _m) in enumerate(grid)
    ]
    team = {f"n{i}": m for i, (_r, _c, m) in enumerate(grid) if m}
    rate = affinity.TeamAffinity().prescore(request(policy=policy, team_nodes=team))
    counts = policy in affinity.COUNTS_MEMBERS
    expected = [affinity.score(policy, r, c, m if counts else 0) for r, c, m in grid]
    assert rate(nodes) == expected


def test_a_huge_team_on_one_node_still_scores_without_overflow():
    assert 0.0 <= affinity.score(P.PREFER_SPREAD, 0, 10_000, 5_000) < 1e-15


def test_equal_free_fractions_score_exactly_the_same():
    # Equal scores let the tie-break (fewest running, then name) decide.
    for policy in P:
        assert affinity.score(policy, 1, 3, 1) == affinity.score(policy, 2, 6, 1)


def test_the_default_registry_builds_every_default_plugin():
    registry = default_registry()
    filters = registry.filters()
    scores = registry.scores()
    assert [f.name for f in filters] == list(DEFAULT_FILTERS)
    assert [s.name for s in scores] == list(DEFAULT_SCORES)
    assert all(isinstance(f, FilterPlugin) for f in filters)
    assert all(isinstance(s, ScorePlugin) for s in scores)


def test_the_registry_refuses_duplicates_and_unknown_names():
    registry = Registry({capacity.NAME: capacity.Capacity})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(capacity.NAME, capacity.Capacity)
    with pytest.raises(LookupError, match="Nope"):
        registry.build("Nope")
    with pytest.raises(TypeError, match="not a scorer"):
        registry.scores([capacity.NAME])


def test_run_filters_reports_the_first_filter_that_rules_a_node_out():
    filters = default_registry().filters()
    node = NodeInfo("n", labels={}, ready=False, running=1, capacity=1)
    # Selector runs first, then readiness, then capacity.
    assert run_filters(filters, node, request(selector={"gpu": "true"})).startswith("did not")
    assert run_filters(filters, node, request()) == readiness.REASON_NOT_READY
    assert run_filters(filters, NodeInfo("n", capacity=2), request()) is None


def test_run_scores_averages_plugins_on_the_same_scale():
    class Fixed:
        def __init__(self, value: float) -> None:
            self.name, self.value = f"fixed{value}", value

        def score(self, node, request):
            return self.value

    node = NodeInfo("n")
    assert run_scores([], node, request()) == 0.0
    assert run_scores([Fixed(100.0), Fixed(50.0)], node, request()) == 75.0
    assert run_scores([Fixed(250.0), Fixed(-10.0)], node, request()) == 50.0


def test_count_reasons_counts_each_node_once():
    nodes = [
        NodeInfo("a", ready=False),
        NodeInfo("b", running=1, capacity=1),
        NodeInfo("c", running=1, capacity=1, cordoned=True),
        NodeInfo("d"),
    ]
    counts, passed = count_reasons(default_registry().filters(), nodes, request())
    assert passed == 1
    assert counts == {"not ready": 1, "at capacity": 1, "cordoned": 1}


@pytest.mark.parametrize(
    ("total", "counts", "text"),
    [
        (0, {}, "0/0 nodes available: no nodes registered"),
        (
            12,
            {"not ready": 2, "did not match selector gpu=true": 7, "at capacity": 3},
            "0/12 nodes available: 7 did not match selector gpu=true, 3 at capacity, 2 not ready",
        ),
        (
            3,
            {"cordoned": 1, "at capacity": 1, "not ready": 1, "unused": 0},
            "0/3 nodes available: 1 at capacity, 1 cordoned, 1 not ready",
        ),
    ],
)
def test_summarize_reads_like_kube_scheduler(total, counts, text):
    assert summarize(total, counts) == text
