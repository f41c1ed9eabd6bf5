"""The hub's source of truth: nodes, teams, tasks and their audit trail.

Only ``hivemind_web.hub.services`` writes these models; everything else reads them.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from executor_core.types import ExecutionStrategy, NodeAffinityPolicy, TaskStatus


def _choices(enum_cls: type) -> list[tuple[str, str]]:
    return [(member.value, member.value) for member in enum_cls]


class Node(models.Model):
    class Status(models.TextChoices):
        READY = "ready"
        NOT_READY = "not_ready"
        CORDONED = "cordoned"
        DRAINING = "draining"

    name = models.CharField(max_length=63, unique=True)
    labels = models.JSONField(default=dict, blank=True)
    capacity = models.PositiveIntegerField(default=1)
    # Tasks bound to the node (scheduled or running): the figure the conditional bind guards.
    running = models.PositiveIntegerField(default=0)
    # Derived from health and the operator's intent below (see services.node_state.derive_status);
    # stored so the board and the scheduler can filter on it.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NOT_READY)
    healthy = models.BooleanField(default=False)
    cordoned = models.BooleanField(default=False)
    draining = models.BooleanField(default=False)
    # The node itself is shutting down (SIGTERM): a drain that ends when it says hello again,
    # unlike an operator's, which leaves the node cordoned.
    self_draining = models.BooleanField(default=False)
    # Once an operator edits labels or capacity, the node's own hello no longer overrides them.
    operator_edited = models.BooleanField(default=False)
    # Grows with every change of what the node is told in node.config (cordon, drain,
    # capacity, labels); ``reported`` is the node's own last node.state, with its generation
    # and when it came, so the page shows whether the node applied the hub's word.
    config_generation = models.PositiveIntegerField(default=0)
    reported = models.JSONField(default=dict, blank=True)
    # A node that refused an assignment gets no new work until ``backoff_until``; the
    # back-off doubles with each refusal in a row and ends when it accepts or applies a config.
    refusals = models.PositiveIntegerField(default=0)
    last_refusal = models.TextField(blank=True)
    refused_at = models.DateTimeField(null=True, blank=True)
    backoff_until = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    cpu = models.FloatField(default=0.0)
    mem = models.FloatField(default=0.0)
    # Empty list: the node runs any agent.
    agents = models.JSONField(default=list, blank=True)
    # What the node advertises in hello: capability names (and, last below, the models its
    # agents serve).
    capabilities = models.JSONField(default=list, blank=True)
    # From the latest heartbeat (None until one reports them): host-wide free memory and
    # free disk where the node keeps its state. ``cpu`` is the node process's share.
    free_memory_mb = models.PositiveBigIntegerField(null=True, blank=True)
    free_disk_mb = models.PositiveBigIntegerField(null=True, blank=True)
    version = models.CharField(max_length=64, blank=True)
    token_hash = models.CharField(max_length=128, blank=True, db_index=True)
    # The one live connection holding this identity (DESIGN §13). The epoch counts the
    # connections the node was accepted on: reports from an older one are refused. The
    # channel is where the consumer holding it answers "are you still there?".
    connection_epoch = models.PositiveBigIntegerField(default=0)
    connection_channel = models.CharField(max_length=200, blank=True)
    # The hub process (HubInstance name) holding that connection: while it renews its lease
    # without hearing the node, the node is silent; while it is itself silent, nobody knows.
    connection_hub = models.CharField(max_length=128, blank=True)
    # Silence before this does not count: the hub holding the node's connection died then,
    # and the node gets the whole lost window to reach another hub.
    silence_counts_from = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # Last: the name shadows the ``models`` module in this class body.
    models = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [("manage_nodes", "Can cordon, drain and edit nodes")]

    def __str__(self) -> str:
        return self.name

    @property
    def schedulable(self) -> bool:
        return self.status == self.Status.READY


class JoinToken(models.Model):
    """A per-node join token, like a Kubernetes bootstrap token: ``<token_id>.<secret>``,
    shown once, stored hashed, good for one registration before it expires. Bound to a node
    name, it may also re-issue that existing node's token (a node that lost its state)."""

    token_id = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=128)
    # Empty: good for any name not registered yet.
    node_name = models.CharField(max_length=63, blank=True)
    description = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.CharField(max_length=63, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"join token {self.token_id}" + (f" for {self.node_name}" if self.node_name else "")


class Team(models.Model):
    class OnFailure(models.TextChoices):
        RETRY = "retry"
        FALLBACK_LOCAL = "fallback_local"
        FAIL = "fail"

    name = models.CharField(max_length=63, unique=True)
    on_failure = models.CharField(max_length=16, choices=OnFailure.choices, default=OnFailure.RETRY)
    max_retries = models.PositiveIntegerField(default=1)
    # How long the team's golem/auto tasks may wait for a node (None: HIVEMIND_SCHEDULE_WAIT).
    max_wait = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RUNNING)
BOUND_STATUSES = (TaskStatus.SCHEDULED, TaskStatus.RUNNING)
TERMINAL = tuple(s.value for s in TaskStatus if s.is_terminal)


class Task(models.Model):
    class Route(models.TextChoices):
        LOCAL = "local"
        GOLEM = "golem"

    session_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    agent_id = models.CharField(max_length=128)
    input = models.TextField(blank=True)
    strategy = models.CharField(max_length=8, choices=_choices(ExecutionStrategy))
    route = models.CharField(max_length=8, choices=Route.choices, blank=True)
    route_reason = models.TextField(blank=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT)
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.SET_NULL)
    node_selector = models.JSONField(default=dict, blank=True)
    affinity = models.CharField(
        max_length=20, choices=_choices(NodeAffinityPolicy), default=NodeAffinityPolicy.NONE
    )
    status = models.CharField(
        max_length=12, choices=_choices(TaskStatus), default=TaskStatus.PENDING
    )
    progress = models.FloatField(default=0.0)
    message = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True)
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    fallback_reason = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    # Nodes that lost or failed an attempt: a retry never goes back to them.
    excluded_nodes = models.JSONField(default=list, blank=True)
    # Set by force fallback and the fallback_local team policy: run locally whatever the strategy.
    force_local = models.BooleanField(default=False)
    # Placement constraints (DESIGN §11): this node only, preferred labels (soft), required
    # capabilities, heartbeat limits {min_free_memory_mb, max_cpu_percent}, a model to serve.
    pinned_node = models.CharField(max_length=63, blank=True)
    prefer_labels = models.JSONField(default=dict, blank=True)
    capabilities = models.JSONField(default=list, blank=True)
    resources = models.JSONField(default=dict, blank=True)
    model = models.CharField(max_length=128, blank=True)
    # Higher first in the wait queue.
    priority = models.IntegerField(default=0)
    # Seconds it may wait for a node (None: the team's, else HIVEMIND_SCHEDULE_WAIT); seconds
    # a run may last (None: no limit).
    max_wait = models.FloatField(null=True, blank=True)
    timeout = models.FloatField(null=True, blank=True)
    # In the wait queue (pending, no feasible node yet): until when, and why it waits.
    wait_until = models.DateTimeField(null=True, blank=True)
    waiting_reason = models.TextField(blank=True)
    # When the running attempt times out.
    timeout_at = models.DateTimeField(null=True, blank=True)
    # The hub instance running a local attempt: its restart fails what it left behind.
    owner = models.CharField(max_length=128, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # A retry is a new task with the same fields; each knows the other (``retries``).
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the current attempt was bound or last heard of: drives assign timeouts.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-created_at"]),
            models.Index(fields=["node", "status"]),
            models.Index(fields=["team", "status"]),
            models.Index(fields=["route", "status"]),
            # The wait queue: highest priority first, then oldest.
            models.Index(
                F("priority").desc(),
                "created_at",
                name="task_wait_queue",
                condition=Q(wait_until__isnull=False),
            ),
            models.Index(
                fields=["timeout_at"],
                name="task_running_timeout",
                condition=Q(timeout_at__isnull=False, status="running"),
            ),
        ]
        permissions = [
            ("submit_task", "Can submit tasks"),
            ("control_task", "Can cancel tasks and force fallback"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.session_id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class AuditEvent(models.Model):
    """One entry of an audit trail: what happened, who did it (a user, a node, "system")."""

    kind = models.CharField(max_length=32)
    data = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    time = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["time", "id"]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor or 'system'}"


class TaskEvent(AuditEvent):
    """A task's audit trail and timeline."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")

    class Meta(AuditEvent.Meta):
        indexes = [models.Index(fields=["task", "time"])]


class NodeEvent(AuditEvent):
    """A node's audit trail: who cordoned, drained or edited it, when it came and went."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="events")

    class Meta(AuditEvent.Meta):
        indexes = [models.Index(fields=["node", "time"])]


class HubInstance(models.Model):
    """A live hub process, holding a lease it renews; its local runs are its own. When the
    lease runs out (the process died), another hub fails them and frees its claims."""

    name = models.CharField(max_length=128, unique=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.name


class HubSetting(models.Model):
    """Hub-wide switches; one row (pk=1)."""

    fallback_mode = models.BooleanField(default=False)
    changed_by = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("switch_fallback_mode", "Can switch the global fallback mode")]


class NodeLoadSample(models.Model):
    """Node load history for the board's plots (kept for a bounded window)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="samples")
    time = models.DateTimeField(db_index=True)
    running = models.PositiveIntegerField(default=0)
    cpu = models.FloatField(default=0.0)
    mem = models.FloatField(default=0.0)

    class Meta:
        ordering = ["time"]
        indexes = [models.Index(fields=["node", "time"])]


class TaskAttempt(models.Model):
    """One attempt of a task: where it went and why, when it ran, how it ended (DESIGN §10).

    Written by the same services, in the same transactions, as the task's transitions.
    """

    class Status(models.TextChoices):
        ROUTING = "routing"
        WAITING = "waiting"
        SCHEDULED = "scheduled"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        SUPERSEDED = "superseded"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    route = models.CharField(max_length=8, blank=True)
    # Empty for a local attempt; a name, not a key: the record outlives the node.
    node = models.CharField(max_length=63, blank=True)
    reason = models.TextField(blank=True)
    fallback_reason = models.TextField(blank=True)
    # The scheduler's explanation of the placement (score, why this node).
    placement = models.JSONField(default=dict, blank=True)
    # What the run consumed, as its agent reported it: {model, prompt_tokens,
    # completion_tokens, first_token_ms, total_ms} for the llm agent; {} when nothing.
    usage = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ROUTING)
    error = models.TextField(blank=True)
    owner = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="unique_task_attempt")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.task_id}"


class ApiToken(models.Model):
    """A user's API token (``Authorization: Token <key>``). Only the key's SHA-256 digest is
    stored: the key is shown once, when it is made, and a copy of the database opens nothing."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    digest = models.CharField(max_length=64, unique=True)
    # The key's first characters, to tell a user's tokens apart (too few to guess from).
    prefix = models.CharField(max_length=8)
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["user", "created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"
