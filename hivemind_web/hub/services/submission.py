"""Task submission: every field checked at once, then stored and handed to the runtime."""

from __future__ import annotations

from collections.abc import Collection
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
from hivemind_web.hub.services import events, statements
from hivemind_web.hub.services.errors import AtCapacity, ServiceValidationError
from hivemind_web.hub.services.teams import team_get_or_create, validate_team_name
from hivemind_web.hub.services.transitions import _start_after_commit, hub_limits

ERR_INPUT_TOO_LARGE = "input is {size} bytes; the limit is {limit} bytes"
ERR_UNKNOWN_AGENT = "unknown agent {agent!r}; known agents: {known}"
ERR_NUL = "must not contain NUL characters"

ERR_RESOURCES = "must be an object with min_free_memory_mb and/or max_cpu_percent"
ERR_RESOURCE_KEYS = "unknown keys {keys}: only min_free_memory_mb and max_cpu_percent"
RESOURCE_KEYS = ("min_free_memory_mb", "max_cpu_percent")

# ExecuteRequest's field names → the API's.
_API_FIELD = {
    "affinity_policy": "affinity",
    "team_id": "team",
    "min_free_memory_mb": "resources",
    "max_cpu_percent": "resources",
}
# What a bad field is replaced with to look for the next problem.
_FALLBACKS: dict[str, Any] = {
    "agent_id": "x",
    "strategy": ExecutionStrategy.AUTO,
    "affinity_policy": NodeAffinityPolicy.NONE,
    "node_selector": {},
    "team_id": None,
    "node": "",
    "prefer_labels": {},
    "capabilities": frozenset(),
    "min_free_memory_mb": None,
    "max_cpu_percent": None,
    "model": "",
    "priority": 0,
    "max_wait": None,
    "timeout": None,
}


def known_agents() -> list[str]:
    """Agents the hub can run: its own registry plus every agent a node advertises."""
    names = set(hub_registry().names())
    for agents in Node.objects.exclude(agents=[]).values_list("agents", flat=True):
        names.update(agents)
    return sorted(names)


def _resources(value: Any, errors: dict[str, str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors["resources"] = ERR_RESOURCES
        return {}
    unknown = sorted(set(value) - set(RESOURCE_KEYS))
    if unknown:
        errors["resources"] = ERR_RESOURCE_KEYS.format(keys=", ".join(map(str, unknown)))
    return {k: value[k] for k in RESOURCE_KEYS if value.get(k) is not None}


def validate_submission(
    *,
    agent_id: Any,
    input: Any,
    strategy: Any,
    team: Any,
    node_selector: Any,
    affinity: Any,
    node: Any = "",
    prefer_labels: Any = None,
    capabilities: Any = None,
    resources: Any = None,
    model: Any = "",
    priority: Any = 0,
    max_wait: Any = None,
    timeout: Any = None,
    known: Collection[str] | None = None,
) -> ExecuteRequest:
    """Check every field (all errors at once) and return the request the router will get.
    ``known``: the agents that exist (read from the database when not given)."""
    errors: dict[str, str] = {}
    if not isinstance(input, str):
        errors["input"] = "must be a string"
    elif "\x00" in input:
        errors["input"] = ERR_NUL
    else:
        size, limit = len(input.encode()), hub_limits()["MAX_INPUT_BYTES"]
        if size > limit:
            errors["input"] = ERR_INPUT_TOO_LARGE.format(size=size, limit=limit)
        elif isinstance(agent_id, str) and (problem := hub_registry().input_error(agent_id, input)):
            errors["input"] = problem
    if isinstance(agent_id, str) and agent_id.strip():
        known = known_agents() if known is None else known
        if agent_id not in known:
            errors["agent_id"] = ERR_UNKNOWN_AGENT.format(
                agent=agent_id, known=", ".join(sorted(known))
            )
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
        "node": node or "",
        "prefer_labels": prefer_labels if prefer_labels is not None else {},
        "capabilities": capabilities if capabilities is not None else [],
        **_resources(resources, errors),
        "model": model if model is not None else "",
        "priority": priority if priority is not None else 0,
        "max_wait": max_wait,
        "timeout": timeout,
    }
    for _ in range(len(_FALLBACKS) + 1):
        try:
            request = ExecuteRequest(**fields)
            break
        except RequestValidationError as exc:
            name = _API_FIELD.get(exc.field, exc.field)
            message = exc.message if name == exc.field else f"{exc.field}: {exc.message}"
            errors.setdefault(name, message)
            fields[exc.field] = _FALLBACKS[exc.field]
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
    **placement: Any,
) -> Task:
    """Validate, store a pending task, and hand it to the hub runtime once committed.
    ``placement``: the optional fields (node, prefer_labels, capabilities, resources, model,
    priority, max_wait, timeout)."""
    fields = {
        "agent_id": agent_id,
        "input": input,
        "strategy": strategy,
        "team": team,
        "node_selector": node_selector,
        "affinity": affinity,
        **placement,
    }
    return task_submit_many(actor=actor, items=[fields], start=start, single=True)[0]


def task_submit_many(
    *, actor: Any, items: list[dict[str, Any]], start: bool = True, single: bool = False
) -> list[Task]:
    """Submit several tasks at once: all valid and stored, or none (errors by item index)."""
    requests = validate_items(items, single=single)
    return tasks_store(actor=actor, requests=requests, start=start)


def validate_items(
    items: list[dict[str, Any]], *, single: bool = False, known: Collection[str] | None = None
) -> list[ExecuteRequest]:
    """Every item checked; ServiceValidationError with every problem, keyed by item index
    (``single``: the one item's errors, as a single submission reports them)."""
    if known is None and items:
        known = known_agents()
    requests, errors = [], {}
    for i, item in enumerate(items):
        try:
            requests.append(validate_submission(**item, known=known))
        except ServiceValidationError as exc:
            errors[str(i)] = exc.errors if single else {k: [v] for k, v in exc.errors.items()}
    if errors:
        raise ServiceValidationError(errors["0"] if single else {"tasks": errors})
    return requests


def resources_of(request: ExecuteRequest) -> dict[str, Any]:
    """The request's heartbeat limits as the task stores them (only those given)."""
    limits = {
        "min_free_memory_mb": request.min_free_memory_mb,
        "max_cpu_percent": request.max_cpu_percent,
    }
    return {k: v for k, v in limits.items() if v is not None}


def _submitted_data(task: Task) -> dict[str, Any]:
    data: dict[str, Any] = {"strategy": task.strategy}
    if task.retry_of is not None:
        data["retry_of"] = str(task.retry_of.session_id)
    return data


def tasks_store(
    *,
    actor: Any,
    requests: list[ExecuteRequest],
    start: bool = True,
    retry_of: list[Task] | None = None,
) -> list[Task]:
    """Store validated requests as pending tasks (all or none) and, once committed, hand
    them to the runtime. Refused (AtCapacity) when the local queue cannot take them.
    ``retry_of``: for each request, the task it retries."""
    call = {"actor": actor, "requests": requests, "start": start, "retry_of": retry_of}
    result = tasks_store_many([call])[0]
    if isinstance(result, AtCapacity):
        raise result
    return result


def tasks_store_many(calls: list[dict[str, Any]]) -> list[list[Task] | AtCapacity]:
    """``tasks_store`` for several submissions at once (the writer gathers concurrent POSTs):
    one insert of all their tasks, one of their events. A submission the local queue cannot
    take is refused alone, with the AtCapacity it would have raised."""
    results: list[list[Task] | AtCapacity] = []
    teams: dict[str, Any] = {}
    rows: list[Task] = []
    spans: list[tuple[int, int, dict[str, Any]]] = []
    queued = 0  # local tasks of the earlier submissions here: not in the local queue yet
    # Atomic alone; inside the writer's batch, which is atomic already, no savepoint.
    with transaction.atomic(savepoint=False):
        for call in calls:
            requests, retry_of = call["requests"], call.get("retry_of")
            local = sum(1 for r in requests if r.strategy == ExecutionStrategy.LOCAL)
            if call.get("start", True) and local:
                refusal = intents.port().local_capacity_refusal(extra=queued + local - 1)
                if refusal:
                    results.append(AtCapacity(refusal))
                    continue
                queued += local
            first = len(rows)
            for i, request in enumerate(requests):
                rows.append(
                    _task_row(request, call["actor"], teams, retry_of[i] if retry_of else None)
                )
            spans.append((first, len(rows), call))
            results.append([])
        # One insert for the tasks, one for their events (the backends return the keys).
        statements.insert(rows, keys=True)
        tasks = rows
        items = []
        for first, end, call in spans:
            actor = call["actor"]
            items += [(t, "submitted", actor, _submitted_data(t)) for t in tasks[first:end]]
            items += [
                (t.retry_of, "retried", actor, {"retry": str(t.session_id)})
                for t in tasks[first:end]
                if t.retry_of
            ]
            if call.get("start", True):
                for task in tasks[first:end]:
                    _start_after_commit(task)
        events.task_events(items)
    stored = iter(tasks[first:end] for first, end, _ in spans)
    return [r if isinstance(r, AtCapacity) else next(stored) for r in results]


def _task_row(
    request: ExecuteRequest, actor: Any, teams: dict[str, Any], retry_of: Task | None
) -> Task:
    team_row = None
    if request.team_id:
        team_row = teams.get(request.team_id)
        if team_row is None:
            team_row = teams[request.team_id] = team_get_or_create(name=request.team_id)
    return statements.new_row(
        Task,
        agent_id=request.agent_id,
        input=request.input,
        strategy=request.strategy.value,
        team=team_row,
        node_selector=dict(request.node_selector),
        affinity=request.affinity_policy.value,
        pinned_node=request.node,
        prefer_labels=dict(request.prefer_labels),
        capabilities=sorted(request.capabilities),
        resources=resources_of(request),
        model=request.model,
        priority=request.priority,
        max_wait=request.max_wait,
        timeout=request.timeout,
        submitted_by_id=getattr(actor, "pk", None),
        retry_of=retry_of,
    )
