"""Task submission: every field checked at once, then stored and handed to the runtime."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from executor_core.types import (
    ExecuteRequest,
    ExecutionStrategy,
    NodeAffinityPolicy,
    RequestValidationError,
)
from hivemind_web.hub import intents
from hivemind_web.hub.agents import hub_registry
from hivemind_web.hub.models import Node, Task
from hivemind_web.hub.services import events
from hivemind_web.hub.services.errors import AtCapacity, ServiceValidationError
from hivemind_web.hub.services.tasks import _start_after_commit, hub_limits
from hivemind_web.hub.services.teams import team_get_or_create, validate_team_name

ERR_INPUT_TOO_LARGE = "input is {size} bytes; the limit is {limit} bytes"
ERR_UNKNOWN_AGENT = "unknown agent {agent!r}; known agents: {known}"
ERR_NUL = "must not contain NUL characters"

# ExecuteRequest's field names → the API's.
_API_FIELD = {"affinity_policy": "affinity", "team_id": "team"}


def known_agents() -> list[str]:
    """Agents the hub can run: its own registry plus every agent a node advertises."""
    names = set(hub_registry().names())
    for agents in Node.objects.exclude(agents=[]).values_list("agents", flat=True):
        names.update(agents)
    return sorted(names)


def validate_submission(
    *,
    agent_id: Any,
    input: Any,
    strategy: Any,
    team: Any,
    node_selector: Any,
    affinity: Any,
) -> ExecuteRequest:
    """Check every field (all errors at once) and return the request the router will get."""
    errors: dict[str, str] = {}
    if not isinstance(input, str):
        errors["input"] = "must be a string"
    elif "\x00" in input:
        errors["input"] = ERR_NUL
    else:
        size, limit = len(input.encode()), hub_limits()["MAX_INPUT_BYTES"]
        if size > limit:
            errors["input"] = ERR_INPUT_TOO_LARGE.format(size=size, limit=limit)
    if isinstance(agent_id, str) and agent_id.strip():
        known = known_agents()
        if agent_id not in known:
            errors["agent_id"] = ERR_UNKNOWN_AGENT.format(agent=agent_id, known=", ".join(known))
    if team not in (None, "") and (problem := validate_team_name(team)):
        errors["team"] = problem
    request = None
    # ExecuteRequest reports one problem at a time; peel them off to report them all.
    fields = {
        "agent_id": agent_id,
        "session_id": "validation",
        "input": input if isinstance(input, str) else "",
        "strategy": strategy,
        "team_id": team or None,
        "node_selector": node_selector if node_selector is not None else {},
        "affinity_policy": affinity,
    }
    fallbacks = {
        "agent_id": "x",
        "strategy": ExecutionStrategy.AUTO,
        "affinity_policy": NodeAffinityPolicy.NONE,
        "node_selector": {},
        "team_id": None,
    }
    for _ in range(len(fallbacks) + 1):
        try:
            request = ExecuteRequest(**fields)
            break
        except RequestValidationError as exc:
            errors.setdefault(_API_FIELD.get(exc.field, exc.field), exc.message)
            fields[exc.field] = fallbacks[exc.field]
    if errors:
        raise ServiceValidationError(errors)
    assert request is not None
    return request


def task_submit(
    *,
    actor: Any,
    agent_id: Any,
    input: Any = "",
    strategy: Any = ExecutionStrategy.AUTO,
    team: Any = None,
    node_selector: Any = None,
    affinity: Any = NodeAffinityPolicy.NONE,
    start: bool = True,
) -> Task:
    """Validate, store a pending task, and hand it to the hub runtime once committed."""
    fields = {
        "agent_id": agent_id,
        "input": input,
        "strategy": strategy,
        "team": team,
        "node_selector": node_selector,
        "affinity": affinity,
    }
    return task_submit_many(actor=actor, items=[fields], start=start, single=True)[0]


def task_submit_many(
    *, actor: Any, items: list[dict[str, Any]], start: bool = True, single: bool = False
) -> list[Task]:
    """Submit several tasks at once: all valid and stored, or none (errors by item index)."""
    requests, errors = [], {}
    for i, item in enumerate(items):
        try:
            requests.append(validate_submission(**item))
        except ServiceValidationError as exc:
            errors[str(i)] = exc.errors if single else {k: [v] for k, v in exc.errors.items()}
    if errors:
        raise ServiceValidationError(errors["0"] if single else {"tasks": errors})
    local = sum(1 for r in requests if r.strategy == ExecutionStrategy.LOCAL)
    if start and local:
        refusal = intents.port().local_capacity_refusal(extra=local - 1)
        if refusal:
            raise AtCapacity(refusal)
    tasks = []
    with transaction.atomic():
        for request in requests:
            team_row = team_get_or_create(name=request.team_id) if request.team_id else None
            task = Task.objects.create(
                agent_id=request.agent_id,
                input=request.input,
                strategy=request.strategy.value,
                team=team_row,
                node_selector=dict(request.node_selector),
                affinity=request.affinity_policy.value,
                submitted_by=actor if getattr(actor, "pk", None) else None,
            )
            events.task_event(task, "submitted", actor=actor, strategy=task.strategy)
            if start:
                _start_after_commit(task)
            tasks.append(task)
    return tasks
