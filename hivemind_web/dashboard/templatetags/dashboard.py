"""Small presentation helpers for the dashboard templates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

register = template.Library()


@register.filter
def short_id(value: Any) -> str:
    """The first block of a session id: enough to tell tasks apart on screen."""
    return str(value).split("-", 1)[0]


@register.filter
def words(value: Any) -> str:
    """``force_fallback`` → ``force fallback``."""
    return str(value).replace("_", " ")


@register.filter
def event_details(data: Any) -> str:
    """An event's data as ``key value`` pairs, skipping empty ones."""
    if not isinstance(data, Mapping):
        return ""
    parts = []
    for key, value in data.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, Mapping):  # labels, a selector: never a raw Python dict
            value = ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "none"
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


@register.filter
def pairs(mapping: Any) -> list[str]:
    """Labels or a selector as ``key=value`` strings, sorted."""
    if not isinstance(mapping, Mapping):
        return []
    return [f"{k}={v}" for k, v in sorted(mapping.items())]


@register.filter
def percent(value: Any) -> int:
    try:
        return max(0, min(100, round(float(value))))
    except (TypeError, ValueError):
        return 0


@register.inclusion_tag("dashboard/_progress.html")
def progress(task: Any) -> dict[str, Any]:
    return {"pct": percent(task.progress), "status": task.status, "sid": task.session_id}


@register.filter
def seconds(value: Any) -> str:
    """A duration in seconds as people read it: 0.42 s, 12.5 s, 3 min 05 s, 2 h 10 min."""
    if value is None:
        return "—"
    total = float(value)
    if total < 10:
        return f"{total:.2f} s"
    if total < 60:
        return f"{total:.1f} s"
    minutes, secs = divmod(round(total), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
