"""The submit form. It only shapes input: the rules are the service's, which reports every bad
field at once; the view maps those errors back onto the fields here."""

from __future__ import annotations

from typing import Any

from django import forms

from executor_core.labels import LabelError, parse_labels
from executor_core.types import ExecutionStrategy, NodeAffinityPolicy

STRATEGY_HELP = {
    "auto": "auto: the less loaded of local and the best node",
    "local": "local: run inside the hub",
    "golem": "golem: run on a node (falls back to local if none fits)",
}
AFFINITY_HELP = {
    "none": "none",
    "prefer_colocate": "prefer colocate (same node as the team)",
    "require_colocate": "require colocate",
    "prefer_spread": "prefer spread (away from the team)",
    "require_spread": "require spread",
}


class TaskSubmitForm(forms.Form):
    # Plain text fields behind select widgets: an unknown value reaches the service, whose
    # message says what is allowed, instead of Django's generic "select a valid choice".
    agent_id = forms.CharField(label="Agent", widget=forms.Select)
    input = forms.CharField(
        label="Input", required=False, strip=False, widget=forms.Textarea(attrs={"rows": 4})
    )
    strategy = forms.CharField(
        label="Strategy",
        initial=ExecutionStrategy.AUTO.value,
        widget=forms.Select(choices=[(s.value, STRATEGY_HELP[s.value]) for s in ExecutionStrategy]),
    )
    team = forms.CharField(
        label="Team",
        required=False,
        help_text="Optional. A new name creates the team with the default policy.",
        widget=forms.TextInput(attrs={"list": "team-options", "autocomplete": "off"}),
    )
    node_selector = forms.CharField(
        label="Node selector",
        required=False,
        help_text="One key=value per line; only nodes with all these labels qualify.",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "zone=eu\ngpu=true"}),
    )
    affinity = forms.CharField(
        label="Affinity",
        initial=NodeAffinityPolicy.NONE.value,
        widget=forms.Select(
            choices=[(p.value, AFFINITY_HELP[p.value]) for p in NodeAffinityPolicy]
        ),
    )

    node = forms.CharField(
        label="Node",
        required=False,
        help_text="Optional. Run on this node only.",
    )
    prefer_labels = forms.CharField(
        label="Preferred labels",
        required=False,
        help_text="One key=value per line; each one a node has raises its score (never a filter).",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "zone=eu"}),
    )
    capabilities = forms.CharField(
        label="Capabilities",
        required=False,
        help_text="Comma-separated; the node must advertise all of them.",
        widget=forms.TextInput(attrs={"placeholder": "browser,gpu_inference"}),
    )
    min_free_memory_mb = forms.IntegerField(
        label="Min. free memory (MB)", required=False, help_text="On the node's latest heartbeat."
    )
    max_cpu_percent = forms.FloatField(
        label="Max. CPU %", required=False, help_text="On the node's latest heartbeat."
    )
    model = forms.CharField(
        label="Model", required=False, help_text="Optional. The node must serve it."
    )
    priority = forms.IntegerField(
        label="Priority", initial=0, required=False, help_text="Higher waits less."
    )
    max_wait = forms.FloatField(
        label="Max. wait (s)",
        required=False,
        help_text="How long it may wait for a node; empty: the team's or the hub's default.",
    )
    timeout = forms.FloatField(
        label="Timeout (s)", required=False, help_text="Optional. A longer run fails, timed out."
    )

    def __init__(self, *args: Any, agents: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["agent_id"].widget.choices = [(name, name) for name in agents]

    def clean_node_selector(self) -> dict[str, str]:
        try:
            return parse_labels(self.cleaned_data.get("node_selector") or "")
        except LabelError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_prefer_labels(self) -> dict[str, str]:
        try:
            return parse_labels(self.cleaned_data.get("prefer_labels") or "")
        except LabelError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_capabilities(self) -> list[str]:
        text = self.cleaned_data.get("capabilities") or ""
        return [name.strip() for name in text.split(",") if name.strip()]

    def service_fields(self) -> dict[str, Any]:
        """The fields as the service takes them (a bad selector counts as empty, so the
        service still checks the rest)."""
        data = self.cleaned_data
        resources = {
            key: data[key]
            for key in ("min_free_memory_mb", "max_cpu_percent")
            if data.get(key) is not None
        }
        return {
            "agent_id": data.get("agent_id", self.data.get("agent_id", "")),
            "input": data.get("input", ""),
            "strategy": data.get("strategy", self.data.get("strategy", "")),
            "team": data.get("team") or None,
            "node_selector": data.get("node_selector") or {},
            "affinity": data.get("affinity", self.data.get("affinity", "")),
            "node": data.get("node") or "",
            "prefer_labels": data.get("prefer_labels") or {},
            "capabilities": data.get("capabilities") or [],
            "resources": resources,
            "model": data.get("model") or "",
            "priority": data.get("priority") or 0,
            "max_wait": data.get("max_wait"),
            "timeout": data.get("timeout"),
        }

    def add_service_errors(self, errors: dict[str, Any]) -> None:
        for name, message in errors.items():
            messages = message if isinstance(message, list) else [message]
            for text in map(str, messages):
                field = name
                if name == "resources":  # "max_cpu_percent: must be ..." names its field
                    field, _, text = text.partition(": ")
                if field in self.errors:
                    continue  # the form's own message for this field already says it
                self.add_error(field if field in self.fields else None, text)
