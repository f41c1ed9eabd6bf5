"""The plugins of pinning, capabilities, models, resources and preferred labels, the profile,
and the framework's contract for plugins: one table row per behaviour."""

from __future__ import annotations

from typing import Any

import pytest

from executor_core.scheduling import ClusterState, NodeInfo, ScheduleRequest, SchedulingError
from executor_core.scheduling.framework import (
    DEFAULT_FILTERS,
    DEFAULT_SCORES,
    Framework,
    Profile,
    Registry,
    default_registry,
)
from executor_core.scheduling.plugins import (
    capabilities,
    models,
    pinning,
    preference,
    resources,
)
from executor_core.scheduling.plugins.base import Filter, Narrow, Rate, Rejected, Score, reject


def request(**fields: Any) -> ScheduleRequest:
    return ScheduleRequest("s", "coder", **fields)


MEMORY = "less than 1024 MB memory free (or not reported)"
CPU = "CPU above 80% (or not reported)"


@pytest.mark.parametrize(
    ("node", "pinned", "expected"),
    [
        ("a", "", None),
        ("a", "a", None),
        ("b", "a", "not the requested node a"),
    ],
)
def test_node_name_lets_only_the_pinned_node_through(node, pinned, expected):
    assert pinning.NodeName().filter(NodeInfo(node), request(node=pinned)) == expected


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        (frozenset(), frozenset(), None),
        (frozenset({"gpu"}), frozenset(), None),
        (frozenset({"gpu", "browser"}), frozenset({"gpu"}), None),
        (frozenset({"gpu", "browser"}), frozenset({"gpu", "browser"}), None),
        (frozenset({"gpu"}), frozenset({"gpu", "browser"}), "missing capabilities browser,gpu"),
        (frozenset(), frozenset({"gpu"}), "missing capabilities gpu"),
    ],
)
def test_capabilities_needs_every_one_asked_for(offered, wanted, expected):
    node = NodeInfo("n", capabilities=offered)
    assert capabilities.Capabilities().filter(node, request(capabilities=wanted)) == expected


@pytest.mark.parametrize(
    ("served", "model", "expected"),
    [
        (frozenset(), "", None),
        (frozenset({"llama3"}), "llama3", None),
        (frozenset({"llama3", "mistral"}), "mistral", None),
        (frozenset({"llama3"}), "mistral", "not serving model mistral"),
        (frozenset(), "llama3", "not serving model llama3"),
    ],
)
def test_model_needs_a_node_serving_it(served, model, expected):
    assert models.Models().filter(NodeInfo("n", models=served), request(model=model)) == expected


@pytest.mark.parametrize(
    ("free", "cpu", "limits", "expected"),
    [
        (None, None, {}, None),
        (2048, 10.0, {"min_free_memory_mb": 1024, "max_cpu_percent": 80.0}, None),
        (1024, 80.0, {"min_free_memory_mb": 1024, "max_cpu_percent": 80.0}, None),
        (1023, 10.0, {"min_free_memory_mb": 1024}, MEMORY),
        (None, 10.0, {"min_free_memory_mb": 1024}, MEMORY),
        (2048, 80.5, {"max_cpu_percent": 80.0}, CPU),
        (2048, None, {"max_cpu_percent": 80.0}, CPU),
        # Memory is judged first.
        (None, None, {"min_free_memory_mb": 1024, "max_cpu_percent": 80.0}, MEMORY),
        # Only the figures asked for matter.
        (None, 99.0, {"min_free_memory_mb": 0}, "less than 0 MB memory free (or not reported)"),
        (0, 99.0, {"min_free_memory_mb": 0}, None),
    ],
)
def test_resources_filter_on_the_latest_heartbeat(free, cpu, limits, expected):
    node = NodeInfo("n", free_memory_mb=free, cpu_percent=cpu)
    assert resources.Resources().filter(node, request(**limits)) == expected


@pytest.mark.parametrize(
    ("free", "cpu", "limits", "expected"),
    [
        (4096, 10.0, {"min_free_memory_mb": 1024}, 75.0),
        (1024, 10.0, {"min_free_memory_mb": 1024}, 0.0),
        (None, 10.0, {"min_free_memory_mb": 1024}, 0.0),
        (4096, 20.0, {"max_cpu_percent": 80.0}, 75.0),
        (4096, 80.0, {"max_cpu_percent": 80.0}, 0.0),
        (4096, 20.0, {"min_free_memory_mb": 1024, "max_cpu_percent": 80.0}, 75.0),
        (2048, 60.0, {"min_free_memory_mb": 1024, "max_cpu_percent": 80.0}, 37.5),
        (4096, 20.0, {}, 0.0),
    ],
)
def test_resources_score_the_headroom_beyond_the_limits(free, cpu, limits, expected):
    node = NodeInfo("n", free_memory_mb=free, cpu_percent=cpu)
    assert resources.Resources().score(node, request(**limits)) == expected


def test_more_headroom_always_scores_higher():
    rate = resources.Resources().prescore(request(min_free_memory_mb=512, max_cpu_percent=90.0))
    nodes = [
        NodeInfo(f"n{i}", free_memory_mb=512 + 256 * i, cpu_percent=90.0 - i) for i in range(8)
    ]
    scores = rate(nodes)
    assert scores == sorted(scores) and len(set(scores)) == len(scores)


@pytest.mark.parametrize(
    ("labels", "preferred", "expected"),
    [
        ({"zone": "eu"}, {}, 0.0),
        ({"zone": "eu"}, {"zone": "eu"}, 100.0),
        ({"zone": "us"}, {"zone": "eu"}, 0.0),
        ({"zone": "eu", "gpu": "a100"}, {"zone": "eu", "gpu": "a100"}, 100.0),
        ({"zone": "eu"}, {"zone": "eu", "gpu": "a100"}, 50.0),
        ({}, {"zone": "eu", "gpu": "a100"}, 0.0),
        ({"a": "1", "b": "2"}, {"a": "1", "b": "2", "c": "3"}, 100.0 * 2 / 3),
        ({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "2", "c": "3"}, 100.0),
    ],
)
def test_prefer_labels_scores_the_share_of_preferred_labels_carried(labels, preferred, expected):
    node = NodeInfo("n", labels=labels)
    assert preference.PreferLabels().score(node, request(prefer_labels=preferred)) == expected


@pytest.mark.parametrize(
    ("name", "transient"),
    [
        ("NodeName", False),
        ("NodeSelector", False),
        ("NodeAgents", False),
        ("NodeCapabilities", False),
        ("NodeModel", False),
        ("TeamAffinity", True),
        ("NodeReadiness", True),
        ("NodeExclusion", False),
        ("NodeCapacity", True),
        ("NodeResources", True),
    ],
)
def test_each_filter_says_whether_waiting_can_lift_it(name, transient):
    assert default_registry().build(name).transient is transient


@pytest.mark.parametrize(
    "constraint",
    [
        {},
        {"node": "a"},
        {"node_selector": {"k": "v"}},
        {"capabilities": frozenset({"gpu"})},
        {"model": "llama3"},
        {"min_free_memory_mb": 1},
        {"prefer_labels": {"k": "v"}},
    ],
)
def test_an_indexed_filter_has_a_key_exactly_when_it_constrains(constraint):
    for plugin in default_registry().filters(DEFAULT_FILTERS):
        if getattr(plugin, "indexed", False):
            constrains = plugin.prefilter(request(**constraint)) is not None
            assert (plugin.index_key(request(**constraint)) is not None) is constrains


def test_the_default_profile_is_every_built_in_plugin():
    profile = Profile()
    assert profile.filters == DEFAULT_FILTERS
    assert tuple(profile.scores) == DEFAULT_SCORES
    assert set(default_registry().names()) == set(DEFAULT_FILTERS) | set(DEFAULT_SCORES)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([], "must be an object"),
        ({"filters": "NodeCapacity"}, "'filters' must be a list"),
        ({"filters": [1]}, "'filters' must be a list"),
        ({"scores": ["TeamAffinity"]}, "'scores' must map"),
        ({"scores": {"TeamAffinity": 0}}, "weight of 'TeamAffinity'"),
        ({"scores": {"TeamAffinity": -1}}, "weight of 'TeamAffinity'"),
        ({"scores": {"TeamAffinity": "1"}}, "weight of 'TeamAffinity'"),
        ({"scores": {"TeamAffinity": True}}, "weight of 'TeamAffinity'"),
        ({"scores": {}}, "at least one score plugin"),
        ({"filters": ["NodeCapacity", "NodeCapacity"]}, "twice"),
        ({"filters": [], "extra": 1}, "must be an object"),
    ],
)
def test_a_malformed_profile_is_refused_with_the_reason(data, error):
    with pytest.raises(ValueError, match=error):
        Profile.from_dict(data)


@pytest.mark.parametrize(
    ("profile", "error"),
    [
        (Profile(filters=("NodeCapacity", "Nope")), LookupError),
        (Profile(scores={"NodeCapacity": 1.0}), TypeError),
        (Profile(filters=("PreferLabels",)), TypeError),
    ],
)
def test_a_profile_naming_a_missing_or_misplaced_plugin_fails_when_built(profile, error):
    with pytest.raises(error):
        Framework(profile)


def test_a_profile_keeps_its_defaults_for_the_key_left_out():
    profile = Profile.from_dict({"scores": {"TeamAffinity": 2, "PreferLabels": 1}})
    assert profile.filters == DEFAULT_FILTERS
    assert dict(profile.scores) == {"TeamAffinity": 2, "PreferLabels": 1}


# -- a plugin from outside: one class and one line in a profile -----------------------------


class EvenOnly(Filter):
    """Test plugin: only nodes whose name ends in an even digit."""

    name = "EvenOnly"
    transient = False
    REASON = "odd"

    def prefilter(self, request: ScheduleRequest) -> Narrow:
        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if int(n.name[-1]) % 2 == 0]
            reject(rejected, self.REASON, nodes, kept)
            return kept

        return narrow


class Alphabetical(Score):
    """Test plugin: prefers names early in the alphabet, whatever the load."""

    name = "Alphabetical"

    def prescore(self, request: ScheduleRequest) -> Rate:
        return lambda nodes: [100.0 - ord(n.name[0]) + ord("a") for n in nodes]


def registry() -> Registry:
    built_in = default_registry()
    extended = Registry({name: (lambda n=name: built_in.build(n)) for name in built_in.names()})
    extended.register(EvenOnly.name, EvenOnly)
    extended.register(Alphabetical.name, Alphabetical)
    return extended


def test_a_registered_filter_in_the_profile_takes_part_in_decisions():
    profile = Profile(filters=(*DEFAULT_FILTERS, "EvenOnly"))
    state = ClusterState(
        [NodeInfo("n1"), NodeInfo("n2", running=3, capacity=4), NodeInfo("n3")],
        profile=profile,
        registry=registry(),
    )
    assert state.place(request()).node == "n2"
    state.upsert_node(NodeInfo("n2", running=4, capacity=4))
    with pytest.raises(SchedulingError, match="0/3 nodes available: 2 odd, 1 at capacity"):
        state.place(ScheduleRequest("s2", "coder"))


def test_a_registered_score_outweighs_load_by_its_weight():
    nodes = [NodeInfo("b1", capacity=4), NodeInfo("a1", capacity=4, running=3)]
    light = ClusterState(nodes, profile=Profile(scores={"TeamAffinity": 1.0}), registry=registry())
    heavy = ClusterState(
        nodes,
        profile=Profile(scores={"TeamAffinity": 1.0, "Alphabetical": 100.0}),
        registry=registry(),
    )
    assert light.place(request()).node == "b1"
    placement = heavy.place(request())
    assert placement.node == "a1"
    assert set(placement.record.candidates[0].scores) == {"TeamAffinity", "Alphabetical"}


def test_a_profile_without_a_plugin_ignores_its_constraint():
    nodes = [NodeInfo("a"), NodeInfo("b", models=frozenset({"llama3"}))]
    without = Profile(filters=tuple(f for f in DEFAULT_FILTERS if f != "NodeModel"))
    assert ClusterState(nodes).place(request(model="llama3")).node == "b"
    assert ClusterState(nodes, profile=without).place(request(model="llama3")).node == "a"
