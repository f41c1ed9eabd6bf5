"""API shapes. Output serializers describe rows; input serializers only check JSON types:
the domain rules live in the services, which report every bad field at once."""

from __future__ import annotations

from rest_framework import serializers

from hivemind_web.hub.models import Node, NodeEvent, Task, TaskAttempt, TaskEvent, Team
from hivemind_web.hub.selectors import current_usage, latest_placement
from hivemind_web.hub.snapshots import NODE_FIELDS, TASK_FIELDS


class TaskSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.name", default=None, read_only=True)
    node = serializers.CharField(source="node.name", default=None, read_only=True)

    class Meta:
        model = Task
        fields = list(TASK_FIELDS)
        read_only_fields = fields


class TaskDetailSerializer(TaskSerializer):
    # What the current attempt consumed (model, tokens, latency), {} when nothing.
    usage = serializers.SerializerMethodField()
    placement = serializers.SerializerMethodField()
    # The task this one retries, and the retries of this one (session ids).
    retry_of = serializers.SlugRelatedField(slug_field="session_id", read_only=True)
    retries = serializers.SlugRelatedField(slug_field="session_id", many=True, read_only=True)

    class Meta(TaskSerializer.Meta):
        fields = [
            *TaskSerializer.Meta.fields,
            "log",
            "excluded_nodes",
            "usage",
            "placement",
            "retry_of",
            "retries",
        ]
        read_only_fields = fields

    def get_usage(self, task: Task) -> dict:
        return current_usage(task)

    def get_placement(self, task: Task) -> dict:
        """The scheduler's record of the latest attempt's decision (empty before one)."""
        return latest_placement(task)


class TaskSubmitSerializer(serializers.Serializer):
    agent_id = serializers.CharField(max_length=128)
    input = serializers.CharField(allow_blank=True, trim_whitespace=False, default="")
    strategy = serializers.CharField(default="auto")
    team = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None)
    node_selector = serializers.DictField(
        child=serializers.CharField(allow_blank=True), default=dict
    )
    affinity = serializers.CharField(default="none")
    # Placement (DESIGN §11); the service checks the values.
    node = serializers.CharField(allow_blank=True, allow_null=True, default="")
    prefer_labels = serializers.DictField(
        child=serializers.CharField(allow_blank=True), default=dict
    )
    capabilities = serializers.ListField(child=serializers.CharField(), default=list)
    resources = serializers.DictField(default=dict)
    model = serializers.CharField(allow_blank=True, default="")
    priority = serializers.IntegerField(default=0)
    max_wait = serializers.FloatField(allow_null=True, default=None)
    timeout = serializers.FloatField(allow_null=True, default=None)


class TaskBatchSerializer(serializers.Serializer):
    tasks = serializers.ListField(
        child=serializers.DictField(), min_length=1, max_length=500, allow_empty=False
    )


class TaskAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskAttempt
        fields = [
            "number",
            "route",
            "node",
            "reason",
            "fallback_reason",
            "placement",
            "usage",
            "status",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class TaskEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskEvent
        fields = ["kind", "data", "actor", "time"]


class NodeEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = NodeEvent
        fields = ["kind", "data", "actor", "time"]


class NodeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Node
        fields = list(NODE_FIELDS)
        read_only_fields = fields


class NodeUpdateSerializer(serializers.Serializer):
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    capacity = serializers.IntegerField(required=False)


class NodeRegisterSerializer(serializers.Serializer):
    join_token = serializers.CharField()
    name = serializers.CharField(max_length=63)
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True), default=dict)
    capacity = serializers.IntegerField(default=1)


class TeamSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["name", "on_failure", "max_retries", "max_wait", "created_at"]
        read_only_fields = ["created_at"]


class TeamUpdateSerializer(serializers.Serializer):
    on_failure = serializers.CharField(required=False)
    max_retries = serializers.IntegerField(required=False)
    max_wait = serializers.FloatField(required=False, allow_null=True)


class FallbackModeSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    changed_by = serializers.CharField(read_only=True)
    changed_at = serializers.DateTimeField(read_only=True, allow_null=True)
