"""The node page (and its live fragment) and the operator's cordon / uncordon / drain."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from hivemind_web.dashboard import selectors
from hivemind_web.dashboard.templatetags.dashboard import words
from hivemind_web.dashboard.views.common import action, action_done, viewer_required
from hivemind_web.hub import selectors as hub_selectors
from hivemind_web.hub.api.permissions import MANAGE_NODES
from hivemind_web.hub.models import Node
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services.errors import NotFound

NODE_EVENTS_SHOWN = 20


def _node_context(name: str) -> dict[str, Any]:
    node = selectors.get_node(name)
    if node is None:
        raise Http404(f"no node named {name!r}")
    return {
        "node": node,
        "control": selectors.node_control(node),
        "tasks": hub_selectors.tasks_on_node(name),
        "recent": selectors.recent_tasks_on_node(name),
        # The latest of the node's audit trail, oldest first.
        "events": list(reversed(node.events.order_by("-time", "-id")[:NODE_EVENTS_SHOWN])),
    }


@viewer_required
def node_detail(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "dashboard/node_detail.html", _node_context(name))


@viewer_required
def node_live(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "dashboard/_node_live.html", _node_context(name))


def _node_action(request: HttpRequest, name: str, service: Any, verb: str) -> HttpResponse:
    try:
        node: Node = service(name=name, actor=request.user)
    except NotFound:
        raise Http404(f"no node named {name!r}") from None
    page = reverse("node", kwargs={"name": name})
    return action_done(request, f"{name} {verb}{_status_note(verb, node.status)}", default=page)


def _status_note(verb: str, status: str) -> str:
    """Say the status only when it is news (not "cordoned; it is now cordoned")."""
    return "." if status in verb else f"; it is now {words(status)}."


@action(MANAGE_NODES)
def node_cordon(request: HttpRequest, name: str) -> HttpResponse:
    return _node_action(request, name, node_services.node_cordon, "cordoned")


@action(MANAGE_NODES)
def node_uncordon(request: HttpRequest, name: str) -> HttpResponse:
    return _node_action(request, name, node_services.node_uncordon, "uncordoned")


@action(MANAGE_NODES)
def node_drain(request: HttpRequest, name: str) -> HttpResponse:
    return _node_action(request, name, node_services.node_drain, "set to drain")
