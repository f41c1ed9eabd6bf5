"""The board (rendered by its script from the live stream) and the fallback-mode switch."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from hivemind_web.dashboard.charts import CHARTS
from hivemind_web.dashboard.selectors import STATUSES, board_snapshot, parse_request
from hivemind_web.dashboard.views.common import action, action_done, viewer_required
from hivemind_web.hub.api.permissions import SWITCH_FALLBACK
from hivemind_web.hub.services import hub as hub_services


@viewer_required
def board(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/board.html", {"statuses": STATUSES})


@viewer_required
def board_data(request: HttpRequest) -> JsonResponse:
    """The snapshot the stream sends, over plain HTTP (used while the socket is down)."""
    return JsonResponse(board_snapshot(parse_request(request.GET)))


@viewer_required
def board_charts(request: HttpRequest) -> JsonResponse:
    """The last hour's throughput, queue depth, fallback rate and run times per agent."""
    return JsonResponse(CHARTS.get())


@action(SWITCH_FALLBACK)
def fallback_mode(request: HttpRequest) -> HttpResponse:
    enabled = request.POST.get("enabled") in ("1", "on", "true")
    hub_services.fallback_mode_set(enabled=enabled, actor=request.user)
    state = "on" if enabled else "off"
    return action_done(request, f"Fallback mode is {state}.", default="/", enabled=enabled)
