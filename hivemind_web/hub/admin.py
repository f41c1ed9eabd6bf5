"""Django admin for operators: every change goes through the services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from executor_core.labels import LabelError, format_labels, parse_labels
from hivemind_web.hub.models import ApiToken, JoinToken, Node, Task, TaskEvent, Team
from hivemind_web.hub.services import api_tokens as api_token_services
from hivemind_web.hub.services import identity
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services import teams as team_services
from hivemind_web.hub.services.errors import ServiceValidationError, TransitionError


def _run_each(request: HttpRequest, rows: QuerySet, action: Any, key: str, done: str) -> None:
    ok, failed = 0, []
    for row in rows:
        try:
            action(**{key: getattr(row, key)}, actor=request.user)
            ok += 1
        except (TransitionError, ServiceValidationError) as exc:
            failed.append(f"{getattr(row, key)}: {exc}")
    if ok:
        messages.success(request, f"{done} {ok}.")
    for problem in failed:
        messages.error(request, problem)


class NodeForm(forms.ModelForm):
    labels_text = forms.CharField(
        label="Labels",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One key=value per line, Kubernetes label syntax.",
    )

    class Meta:
        model = Node
        fields = ["capacity"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["labels_text"].initial = format_labels(self.instance.labels, separator="\n")

    def clean_labels_text(self) -> dict[str, str]:
        try:
            return parse_labels(self.cleaned_data["labels_text"])
        except LabelError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_capacity(self) -> int:
        capacity = self.cleaned_data["capacity"]
        if not 1 <= capacity <= node_services.MAX_CAPACITY:
            raise forms.ValidationError(node_services.ERR_CAPACITY)
        return capacity


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    form = NodeForm
    list_display = ["name", "status", "load", "labels_shown", "cpu", "mem", "last_heartbeat"]
    list_filter = ["status"]
    search_fields = ["name"]
    readonly_fields = [
        "name",
        "status",
        "running",
        "last_heartbeat",
        "cpu",
        "mem",
        "agents",
        "capabilities",
        "models",
        "free_memory_mb",
        "free_disk_mb",
        "version",
    ]
    actions = ["cordon", "uncordon", "drain", "rotate_token"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # nodes join with the join token (or `manage.py node_token`)

    def has_delete_permission(self, request: HttpRequest, obj: Node | None = None) -> bool:
        # A node holding tasks cannot be deleted: they would be stranded, bound to nothing.
        if obj is not None and obj.running:
            return False
        return super().has_delete_permission(request, obj)

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("hub.manage_nodes")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_manage_permission(request)

    @admin.display(description="load")
    def load(self, node: Node) -> str:
        return f"{node.running}/{node.capacity}"

    @admin.display(description="labels")
    def labels_shown(self, node: Node) -> str:
        return format_labels(node.labels, separator=", ")

    def save_model(self, request: HttpRequest, obj: Node, form: Any, change: bool) -> None:
        node_services.node_update(
            name=obj.name,
            actor=request.user,
            labels=form.cleaned_data["labels_text"],
            capacity=form.cleaned_data["capacity"],
        )

    @admin.action(description="Cordon selected nodes", permissions=["manage"])
    def cordon(self, request: HttpRequest, rows: QuerySet) -> None:
        _run_each(request, rows, node_services.node_cordon, "name", "Cordoned")

    @admin.action(description="Uncordon selected nodes", permissions=["manage"])
    def uncordon(self, request: HttpRequest, rows: QuerySet) -> None:
        _run_each(request, rows, node_services.node_uncordon, "name", "Uncordoned")

    @admin.action(description="Drain selected nodes", permissions=["manage"])
    def drain(self, request: HttpRequest, rows: QuerySet) -> None:
        _run_each(request, rows, node_services.node_drain, "name", "Draining")

    @admin.action(description="Rotate token (the old one stops working)", permissions=["manage"])
    def rotate_token(self, request: HttpRequest, rows: QuerySet) -> None:
        for row in rows:
            _node, token = identity.node_rotate_token(name=row.name, actor=request.user)
            messages.warning(
                request,
                f"New token for {row.name} (shown once; its old connection is closed): {token}",
            )


class JoinTokenForm(forms.ModelForm):
    ttl_hours = forms.FloatField(
        label="Valid for (hours)",
        initial=24,
        help_text="The token works once, until it expires.",
    )

    class Meta:
        model = JoinToken
        fields = ["node_name", "description"]
        help_texts = {
            "node_name": "Only this node may register with it (it may re-register an existing "
            "node that lost its token). Empty: any name not registered yet."
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        hours = data.get("ttl_hours")
        problems = identity.validate_join_token_fields(
            node_name=data.get("node_name") or "",
            ttl=timedelta(hours=hours if hours is not None and 0 < hours < 1e6 else 0),
            description=data.get("description") or "",
        )
        for field, message in problems.items():
            self.add_error({"ttl": "ttl_hours"}.get(field, field), message)
        return data


@admin.register(JoinToken)
class JoinTokenAdmin(admin.ModelAdmin):
    """Per-node, one-time join tokens: made here, shown once; delete one to revoke it."""

    form = JoinTokenForm
    list_display = ["token_id", "node_name", "description", "expires_at", "used_at", "used_by"]
    search_fields = ["token_id", "node_name"]

    def _manages(self, request: HttpRequest) -> bool:
        return request.user.has_perm("hub.manage_nodes")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._manages(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._manages(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._manages(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a token is made, used or revoked; never edited

    def save_model(self, request: HttpRequest, obj: JoinToken, form: Any, change: bool) -> None:
        data = form.cleaned_data
        row, token = identity.join_token_create(
            node_name=data["node_name"],
            ttl=timedelta(hours=data["ttl_hours"]),
            description=data["description"],
            actor=request.user,
        )
        obj.pk, obj.token_id = row.pk, row.token_id
        messages.warning(request, f"Join token (shown once): {token}")

    def delete_model(self, request: HttpRequest, obj: JoinToken) -> None:
        identity.join_token_revoke(token_id=obj.token_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for row in queryset:
            identity.join_token_revoke(token_id=row.token_id)


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name", "on_failure", "max_retries", "max_wait"]
        help_texts = {
            "max_wait": "Seconds the team's golem/auto tasks may wait for a node; "
            "empty: HIVEMIND_SCHEDULE_WAIT."
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        problems = team_services.validate_team(
            name=data.get("name") if not self.instance.pk else None,
            on_failure=data.get("on_failure"),
            max_retries=data.get("max_retries"),
            max_wait=data.get("max_wait"),
        )
        for field, message in problems.items():
            self.add_error(field if field in self.fields else None, message)
        return data


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    form = TeamForm
    list_display = ["name", "on_failure", "max_retries", "max_wait", "created_at"]
    search_fields = ["name"]

    def save_model(self, request: HttpRequest, obj: Team, form: Any, change: bool) -> None:
        data = form.cleaned_data
        policy = {k: data[k] for k in ("on_failure", "max_retries", "max_wait")}
        if change:
            team_services.team_update(name=obj.name, **policy)
        else:
            team_services.team_create(name=data["name"], **policy)

    def get_readonly_fields(self, request: HttpRequest, obj: Team | None = None) -> list[str]:
        return ["name"] if obj else []


class TaskEventInline(admin.TabularInline):
    model = TaskEvent
    extra = 0
    can_delete = False
    readonly_fields = ["time", "kind", "actor", "data"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "session_id",
        "agent_id",
        "status",
        "route",
        "node",
        "team",
        "priority",
        "progress",
        "created_at",
    ]
    list_filter = ["status", "route", "strategy", "team", "node"]
    search_fields = ["=session_id", "agent_id", "team__name"]
    inlines = [TaskEventInline]
    actions = ["cancel", "force_fallback"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Task._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # submit through the form or the API: validation lives there

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit trail is kept

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # read-only: a save would write every column behind the services' back

    def has_control_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("hub.control_task")

    @admin.action(description="Cancel selected tasks", permissions=["control"])
    def cancel(self, request: HttpRequest, rows: QuerySet) -> None:
        _run_each(request, rows, task_services.task_cancel, "session_id", "Cancelled")

    @admin.action(description="Force fallback to local", permissions=["control"])
    def force_fallback(self, request: HttpRequest, rows: QuerySet) -> None:
        _run_each(request, rows, task_services.task_force_fallback, "session_id", "Forced local:")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued with ``manage.py api_token USER`` (the key is shown once); here they
    are listed and revoked."""

    list_display = ["user", "name", "prefix", "created_at"]
    list_filter = ["user"]
    fields = ["user", "name", "prefix", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        api_token_services.api_tokens_revoke(tokens=[obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        api_token_services.api_tokens_revoke(tokens=list(queryset))
