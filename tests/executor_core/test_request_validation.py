from __future__ import annotations

import pytest

from executor_core import (
    ExecuteRequest,
    ExecutionStrategy,
    ExecutorError,
    NodeAffinityPolicy,
    RequestValidationError,
)

VALID = {"agent_id": "echo", "session_id": "s-1", "input": "hello"}


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"agent_id": ""}, "agent_id", "non-empty"),
        ({"agent_id": "   "}, "agent_id", "non-empty"),
        ({"agent_id": None}, "agent_id", "non-empty"),
        ({"session_id": ""}, "session_id", "non-empty"),
        ({"input": None}, "input", "must be a string"),
        ({"strategy": "fast"}, "strategy", "unknown strategy 'fast'"),
        ({"strategy": " "}, "strategy", "unknown strategy ' '"),
        ({"strategy": "Local"}, "strategy", "unknown strategy 'Local'"),
        ({"affinity_policy": "cluster"}, "affinity_policy", "unknown affinity policy 'cluster'"),
        ({"affinity_policy": "require_colocate"}, "affinity_policy", "requires a team"),
        (
            {"affinity_policy": "require_spread", "team_id": ""},
            "affinity_policy",
            "requires a team",
        ),
        ({"node_selector": {"-gpu": "true"}}, "node_selector", "label key '-gpu'"),
        ({"node_selector": {"Example.com/gpu": "x"}}, "node_selector", "DNS subdomain"),
        ({"node_selector": {"": "x"}}, "node_selector", "non-empty"),
        ({"node_selector": {"gpu": "a b"}}, "node_selector", "value 'a b'"),
        ({"node_selector": {"gpu": "x" * 64}}, "node_selector", "1-63 characters"),
        ({"node_selector": {"gpu": 1}}, "node_selector", "value must be a string"),
        ({"node_selector": ["gpu"]}, "node_selector", "must be a mapping"),
        ({"node": "GPU_1"}, "node", "DNS label"),
        ({"prefer_labels": {"zone": "a b"}}, "prefer_labels", "value 'a b'"),
        ({"prefer_labels": "zone=a"}, "prefer_labels", "must be a mapping"),
        ({"capabilities": "browser"}, "capabilities", "list of names"),
        ({"capabilities": [""]}, "capabilities", "non-empty"),
        ({"min_free_memory_mb": -1}, "min_free_memory_mb", "whole number of megabytes"),
        ({"min_free_memory_mb": 1.5}, "min_free_memory_mb", "whole number of megabytes"),
        ({"max_cpu_percent": 101}, "max_cpu_percent", "from 0 to 100"),
        ({"max_cpu_percent": True}, "max_cpu_percent", "from 0 to 100"),
        ({"model": "a\tb"}, "model", "spaces or control characters"),
        ({"model": "m" * 129}, "model", "at most 128"),
        ({"priority": 1.5}, "priority", "whole number"),
        ({"max_wait": -1}, "max_wait", "from 0"),
        ({"max_wait": float("nan")}, "max_wait", "from 0"),
        ({"timeout": 0}, "timeout", "above 0"),
        ({"timeout": float("inf")}, "timeout", "above 0"),
    ],
)
def test_it_rejects_an_invalid_request_naming_the_field(changes, field, fragment):
    with pytest.raises(RequestValidationError) as caught:
        ExecuteRequest(**{**VALID, **changes})

    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ExecutorError)
    assert isinstance(caught.value, ValueError)


def test_placement_fields_are_normalised():
    request = ExecuteRequest(
        **VALID,
        node="gpu-1",
        prefer_labels={"zone": "eu"},
        capabilities=["browser", "browser", "gpu_inference"],
        max_cpu_percent=50,
        max_wait=0,
        timeout=2,
    )
    assert request.capabilities == frozenset({"browser", "gpu_inference"})
    assert (request.max_cpu_percent, request.max_wait, request.timeout) == (50.0, 0.0, 2.0)
    assert ExecuteRequest(**VALID, node=None).node == ""


def test_it_lists_the_known_strategies_when_one_is_unknown():
    with pytest.raises(RequestValidationError, match="expected one of local, golem, auto"):
        ExecuteRequest(**VALID, strategy="fast")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("", ExecutionStrategy.LOCAL),
        (None, ExecutionStrategy.LOCAL),
        ("local", ExecutionStrategy.LOCAL),
        ("golem", ExecutionStrategy.GOLEM),
        ("auto", ExecutionStrategy.AUTO),
        (ExecutionStrategy.GOLEM, ExecutionStrategy.GOLEM),
    ],
)
def test_an_empty_strategy_means_local(strategy, expected):
    request = ExecuteRequest(**VALID, strategy=strategy)

    assert request.strategy is expected


def test_it_normalises_strings_to_enums_and_an_empty_team_to_none():
    request = ExecuteRequest(
        **VALID,
        strategy="golem",
        affinity_policy="none",
        team_id="",
        node_selector={"example.com/gpu": "true", "zone": ""},
    )

    assert request.strategy is ExecutionStrategy.GOLEM
    assert request.affinity_policy is NodeAffinityPolicy.NONE
    assert request.team_id is None
    assert request.node_selector == {"example.com/gpu": "true", "zone": ""}


@pytest.mark.parametrize(
    "policy", ["prefer_colocate", "prefer_spread", "require_colocate", "require_spread"]
)
def test_every_team_policy_without_a_team_is_refused_alike(policy: str) -> None:
    with pytest.raises(RequestValidationError, match=f"{policy} requires a team"):
        ExecuteRequest(**VALID, affinity_policy=policy)


def test_a_require_policy_is_valid_with_a_team():
    request = ExecuteRequest(**VALID, team_id="red", affinity_policy="require_colocate")

    assert request.affinity_policy.requires_team


def test_the_default_strategy_is_auto_without_affinity():
    request = ExecuteRequest(**VALID)

    assert request.strategy is ExecutionStrategy.AUTO
    assert request.affinity_policy is NodeAffinityPolicy.NONE
