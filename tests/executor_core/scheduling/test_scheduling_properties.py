"""Property tests: ClusterState against a naive reference written here from DESIGN §5."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from executor_core.scheduling import (
    ClusterState,
    NodeInfo,
    ScheduleHints,
    ScheduleRequest,
    SchedulingError,
)
from executor_core.scheduling.cluster import MIN_FEASIBLE_NODES_TO_FIND
from executor_core.types import NodeAffinityPolicy as P

KEYS = ("gpu", "zone", "arch")
VALUES = ("a", "b")
AGENTS = ("coder", "writer")
CAPABILITIES = ("browser", "gpu")
MODELS = ("llama3", "mistral")
FAST = settings(max_examples=150, deadline=None)

labels_st = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


node_st = st.tuples(
    labels_st,
    st.integers(0, 4),  # capacity
    st.integers(0, 5),  # running = min(this, capacity + 1)
    st.integers(0, 5),  # not ready when 0
    st.integers(0, 5),  # cordoned when 0
    st.frozensets(st.sampled_from(AGENTS), max_size=2),
    st.frozensets(st.sampled_from(CAPABILITIES), max_size=2),
    st.frozensets(st.sampled_from(MODELS), max_size=2),
    st.none() | st.sampled_from([0, 512, 2048, 8192]),  # free memory MB
    st.none() | st.sampled_from([0.0, 30.0, 80.0, 100.0]),  # CPU %
)


def nodes_st(
    max_nodes: int = 12, loaded: bool = True, min_nodes: int = 0
) -> st.SearchStrategy[list[NodeInfo]]:
    def build(rows: list[tuple]) -> list[NodeInfo]:
        return [
            NodeInfo(
                name=f"n{i:02d}",
                labels=labels,
                capacity=cap,
                running=min(running, cap + 1) if loaded else 0,
                ready=ready != 0,
                cordoned=cordoned == 0,
                agents=agents,
                capabilities=capabilities,
                models=models,
                free_memory_mb=memory,
                cpu_percent=cpu,
            )
            for i, (
                labels,
                cap,
                running,
                ready,
                cordoned,
                agents,
                capabilities,
                models,
                memory,
                cpu,
            ) in enumerate(rows)
        ]

    return st.lists(node_st, min_size=min_nodes, max_size=max_nodes).map(build)


@st.composite
def request_st(draw, names: list[str], newer: bool = True) -> ScheduleRequest:
    """A request; with ``newer`` it may also pin a node, ask for capabilities, a model or
    resources, and prefer labels."""
    policy = draw(st.sampled_from(list(P)))
    pool = [*names, "ghost"]
    team_nodes = draw(
        st.dictionaries(st.sampled_from(pool), st.integers(0, 2), max_size=max(4, len(pool) // 3))
    )
    extra: dict = {}
    if newer:
        extra = {
            "node": draw(st.just("") | st.sampled_from(pool)),
            "prefer_labels": draw(labels_st),
            "capabilities": draw(st.frozensets(st.sampled_from(CAPABILITIES), max_size=2)),
            "model": draw(st.just("") | st.sampled_from(MODELS)),
            "min_free_memory_mb": draw(st.none() | st.sampled_from([0, 1024, 4096])),
            "max_cpu_percent": draw(st.none() | st.sampled_from([0.0, 50.0, 90.0])),
        }
    return ScheduleRequest(
        session_id="s",
        agent_id=draw(st.sampled_from((*AGENTS, "other"))),
        team_id="t",
        node_selector=draw(labels_st.filter(lambda d: len(d) <= 2)),
        hints=ScheduleHints(
            affinity=policy,
            team_nodes=team_nodes,
            excluded_nodes=frozenset(
                draw(st.lists(st.sampled_from(pool), max_size=max(2, len(pool) // 2)))
            ),
        ),
        **extra,
    )


# -- the naive reference -----------------------------------------------------------------


def static_failure(node: NodeInfo, r: ScheduleRequest) -> str | None:
    """The first rule the node breaks that waiting cannot change, or None."""
    if r.node and node.name != r.node:
        return f"not the requested node {r.node}"
    if any(node.labels.get(k) != v for k, v in r.node_selector.items()):
        pairs = ",".join(f"{k}={r.node_selector[k]}" for k in sorted(r.node_selector))
        return f"did not match selector {pairs}"
    if node.agents and r.agent_id not in node.agents:
        return f"not supporting agent {r.agent_id}"
    if not r.capabilities <= node.capabilities:
        return "missing capabilities " + ",".join(sorted(r.capabilities))
    if r.model and r.model not in node.models:
        return f"not serving model {r.model}"
    if node.name in r.hints.excluded_nodes:
        return "excluded after an earlier attempt"
    return None


def first_failure(node: NodeInfo, r: ScheduleRequest) -> str | None:
    """The first rule the node breaks, in the documented order, or None when it fits."""
    hints = r.hints
    members = {n for n, c in hints.team_nodes.items() if c > 0}
    if r.node and node.name != r.node:
        return f"not the requested node {r.node}"
    if any(node.labels.get(k) != v for k, v in r.node_selector.items()):
        pairs = ",".join(f"{k}={r.node_selector[k]}" for k in sorted(r.node_selector))
        return f"did not match selector {pairs}"
    if hints.affinity == P.REQUIRE_COLOCATE and members and node.name not in members:
        return "not on a node of team t (require_colocate)"
    if hints.affinity == P.REQUIRE_SPREAD and node.name in members:
        return "already hosting a member of team t (require_spread)"
    if not node.ready:
        return "not ready"
    if node.cordoned:
        return "cordoned"
    if node.agents and r.agent_id not in node.agents:
        return f"not supporting agent {r.agent_id}"
    if not r.capabilities <= node.capabilities:
        return "missing capabilities " + ",".join(sorted(r.capabilities))
    if r.model and r.model not in node.models:
        return f"not serving model {r.model}"
    if node.name in hints.excluded_nodes:
        return "excluded after an earlier attempt"
    if node.running >= node.capacity:
        return "at capacity"
    memory, cpu = r.min_free_memory_mb, r.max_cpu_percent
    if memory is not None and (node.free_memory_mb is None or node.free_memory_mb < memory):
        return f"less than {memory} MB memory free (or not reported)"
    if cpu is not None and (node.cpu_percent is None or node.cpu_percent > cpu):
        return f"CPU above {cpu:g}% (or not reported)"
    return None


def preference(node: NodeInfo, r: ScheduleRequest) -> tuple:
    """Sort key of the best node first: the policy's order, then fewest running, then name."""
    free = Fraction(node.capacity - node.running, node.capacity)
    on_node = max(0, r.hints.team_nodes.get(node.name, 0))
    if r.hints.affinity == P.PREFER_COLOCATE:
        primary: tuple = (on_node == 0, -free)
    elif r.hints.affinity == P.PREFER_SPREAD:
        primary = (on_node, -free)
    else:
        primary = (-free,)
    return (*primary, node.running, node.name)


def expected_reason(nodes: list[NodeInfo], r: ScheduleRequest) -> str:
    if r.node:
        pinned = [n for n in nodes if n.name == r.node]
        why = first_failure(pinned[0], r) if pinned else "is not registered"
        return f"0/{len(nodes)} nodes available: node {r.node} {why}"
    if not nodes:
        return "0/0 nodes available: no nodes registered"
    counts = Counter(first_failure(n, r) for n in nodes)
    parts = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"0/{len(nodes)} nodes available: " + ", ".join(f"{n} {why}" for why, n in parts)


# -- properties -------------------------------------------------------------------------


@FAST
@given(st.data(), st.booleans())
def test_no_placement_violates_a_filter_and_failures_explain_every_node(data, large):
    # Large fleets go past the sample size, so filtering stops early and starts mid-ring.
    nodes = data.draw(nodes_st(min_nodes=60, max_nodes=150) if large else nodes_st(max_nodes=40))
    request = data.draw(request_st([n.name for n in nodes]))
    feasible = [n for n in nodes if first_failure(n, request) is None]
    state = ClusterState(nodes)
    try:
        placement = state.place(request)
    except SchedulingError as exc:
        assert not feasible
        assert exc.reason == expected_reason(nodes, request)
        return
    chosen = next(n for n in nodes if n.name == placement.node)
    assert first_failure(chosen, request) is None
    assert 0.0 <= placement.score <= 100.0
    record = placement.record
    assert record.chosen == chosen.name == record.candidates[0].node
    assert record.feasible <= len(feasible) and record.evaluated <= len(nodes)
    totals = [c.total for c in record.candidates]
    assert totals == sorted(totals, reverse=True)
    soft = request.prefer_labels or request.min_free_memory_mb is not None
    soft = soft or request.max_cpu_percent is not None
    if len(nodes) <= MIN_FEASIBLE_NODES_TO_FIND and not soft:
        # Small enough to look at every node: the choice is the exact best.
        assert chosen == min(feasible, key=lambda n: preference(n, request))


@FAST
@given(st.data())
def test_the_same_state_and_request_always_give_the_same_node(data):
    nodes = data.draw(nodes_st(max_nodes=60))
    request = data.draw(request_st([n.name for n in nodes]))
    shuffled = data.draw(st.permutations(nodes))
    first, second = ClusterState(nodes), ClusterState(shuffled)

    def outcome(state: ClusterState) -> str:
        try:
            return state.evaluate(request).node
        except SchedulingError as exc:
            return exc.reason

    assert outcome(first) == outcome(first) == outcome(second)
    # place decides exactly what evaluate announced.
    assert outcome(first) == (
        first.place(request).node if not outcome(first).startswith("0/") else outcome(first)
    )


@FAST
@given(nodes=nodes_st(max_nodes=16, loaded=False), members=st.integers(1, 12))
def test_require_spread_never_puts_two_members_of_a_team_on_one_node(nodes, members):
    state = ClusterState(nodes)
    used: list[str] = []
    for i in range(members):
        request = ScheduleRequest(
            session_id=f"m{i}",
            agent_id="coder",
            team_id="t",
            hints=ScheduleHints(affinity=P.REQUIRE_SPREAD, team_nodes=Counter(used)),
        )
        try:
            used.append(state.place(request).node)
        except SchedulingError:
            break
    assert len(used) == len(set(used))
    assert state.team_nodes("t") == dict.fromkeys(used, 1)


step_st = st.tuples(
    st.integers(0, 3),  # release one placed session when 0
    st.integers(0, 1000),  # which one
    st.sampled_from(AGENTS),
    labels_st.filter(lambda d: len(d) <= 1),
    st.sampled_from([P.NONE, P.PREFER_SPREAD, P.PREFER_COLOCATE, P.REQUIRE_SPREAD]),
)


@FAST
@given(nodes=nodes_st(max_nodes=60, loaded=False), steps=st.lists(step_st, min_size=1, max_size=80))
def test_sequential_placements_never_exceed_capacity(nodes, steps):
    state = ClusterState(nodes)
    capacity = {n.name: n.capacity for n in nodes}
    placed: list[str] = []
    for i, (release, which, agent, selector, policy) in enumerate(steps):
        if placed and release == 0:
            assert state.release(placed.pop(which % len(placed)))
            continue
        team = f"t{i % 3}"
        request = ScheduleRequest(
            session_id=f"s{i}",
            agent_id=agent,
            team_id=team,
            node_selector=selector,
            hints=ScheduleHints(affinity=policy, team_nodes=state.team_nodes(team)),
        )
        try:
            state.place(request)
        except SchedulingError:
            continue
        placed.append(request.session_id)
        assert all(n.running <= capacity[n.name] for n in state.nodes())
    assert sum(n.running for n in state.nodes()) == len(placed)


@FAST
@given(
    first=st.lists(labels_st, min_size=1, max_size=20),
    changes=st.lists(st.tuples(st.integers(0, 19), labels_st | st.none()), max_size=20),
    selector=labels_st,
)
def test_the_label_index_agrees_with_a_scan_after_upserts_and_removals(first, changes, selector):
    state = ClusterState(NodeInfo(f"n{i:02d}", labels=lab) for i, lab in enumerate(first))
    truth = {f"n{i:02d}": lab for i, lab in enumerate(first)}
    for i, labels in changes:
        name = f"n{i:02d}"
        if labels is None:
            state.remove_node(name)
            truth.pop(name, None)
        else:
            state.upsert_node(NodeInfo(name, labels=labels))
            truth[name] = labels
    expected = sorted(
        n for n, lab in truth.items() if all(lab.get(k) == v for k, v in selector.items())
    )
    assert state.matching_nodes(selector) == expected
    assert len(state) == len(truth)


# -- the newer constraints -------------------------------------------------------------------


def outcome_of(state: ClusterState, request: ScheduleRequest) -> tuple[bool, str]:
    try:
        return True, state.evaluate(request).node
    except SchedulingError as exc:
        return False, exc.reason


@FAST
@given(st.data(), st.booleans())
def test_a_pinned_request_never_lands_elsewhere(data, large):
    nodes = data.draw(nodes_st(min_nodes=60, max_nodes=120) if large else nodes_st(max_nodes=30))
    names = [n.name for n in nodes]
    pinned = data.draw(st.sampled_from([*names, "ghost"]))
    request = replace(data.draw(request_st(names)), node=pinned)
    state = ClusterState(nodes)
    fits = any(n.name == pinned and first_failure(n, request) is None for n in nodes)
    try:
        placement = state.place(request)
    except SchedulingError as exc:
        assert not fits
        assert exc.reason.startswith(f"0/{len(nodes)} nodes available: node {pinned} ")
        return
    assert fits and placement.node == pinned


@FAST
@given(st.data())
def test_prefer_labels_never_changes_feasibility(data):
    nodes = data.draw(nodes_st(max_nodes=60))
    request = data.draw(request_st([n.name for n in nodes]))
    preferring = replace(request, prefer_labels=data.draw(labels_st.filter(bool)))
    plain = replace(request, prefer_labels={})
    placed, what = outcome_of(ClusterState(nodes), preferring)
    placed_plain, what_plain = outcome_of(ClusterState(nodes), plain)
    assert placed is placed_plain
    if not placed:
        assert what == what_plain  # the same nodes, ruled out for the same reasons
    else:
        chosen = next(n for n in nodes if n.name == what)
        assert first_failure(chosen, preferring) is None


@FAST
@given(st.data())
def test_waitable_is_false_exactly_when_no_node_passes_the_static_filters(data):
    nodes = data.draw(nodes_st(max_nodes=40))
    request = data.draw(request_st([n.name for n in nodes]))
    try:
        ClusterState(nodes).place(request)
    except SchedulingError as exc:
        assert exc.waitable is any(static_failure(n, request) is None for n in nodes)
        assert exc.record is not None and exc.record.summary == exc.reason


constrained_step_st = st.tuples(
    st.integers(0, 3),  # release one placed session when 0
    st.integers(0, 1000),  # which one
    st.sampled_from(AGENTS),
    st.frozensets(st.sampled_from(CAPABILITIES), max_size=1),
    st.just("") | st.sampled_from(MODELS),
    st.none() | st.sampled_from([0, 1024]),
    labels_st.filter(lambda d: len(d) <= 1),  # preferred
    st.just("") | st.sampled_from([f"n{i:02d}" for i in range(8)]),  # pinned
)


@FAST
@given(
    nodes=nodes_st(max_nodes=40, loaded=False),
    steps=st.lists(constrained_step_st, min_size=1, max_size=60),
)
def test_placements_with_every_constraint_never_exceed_capacity(nodes, steps):
    state = ClusterState(nodes)
    by_name = {n.name: n for n in nodes}
    placed: list[str] = []
    for i, (release, which, agent, wanted, model, memory, preferred, pinned) in enumerate(steps):
        if placed and release == 0:
            assert state.release(placed.pop(which % len(placed)))
            continue
        request = ScheduleRequest(
            session_id=f"s{i}",
            agent_id=agent,
            capabilities=wanted,
            model=model,
            min_free_memory_mb=memory,
            prefer_labels=preferred,
            node=pinned,
        )
        try:
            placement = state.place(request)
        except SchedulingError:
            continue
        placed.append(request.session_id)
        assert static_failure(by_name[placement.node], request) is None
        assert all(n.running <= by_name[n.name].capacity for n in state.nodes())
    assert sum(n.running for n in state.nodes()) == len(placed)
