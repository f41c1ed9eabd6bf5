"""The team page: members, where they run, and whether each one's affinity rule holds now."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from hivemind_web.dashboard import selectors
from hivemind_web.dashboard.views.common import viewer_required
from hivemind_web.hub import selectors as hub_selectors


def _team_context(name: str) -> dict[str, Any]:
    team = hub_selectors.team_by_name(name)
    if team is None:
        raise Http404(f"no team named {name!r}")
    return {"team": team, **selectors.team_members(team)}


@viewer_required
def team_detail(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "dashboard/team_detail.html", _team_context(name))


@viewer_required
def team_live(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, "dashboard/_team_live.html", _team_context(name))
