"""What every dashboard view shares: who may see or act, and how an action answers.

Actions answer JSON to the pages' scripts (``Accept: application/json``) and redirect with a
message otherwise, so every button also works as a plain form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from hivemind_web.hub.api.permissions import VIEW

View = Callable[..., HttpResponse]


def viewer_required(view: View) -> View:
    """Anonymous users go to the login page; users without the view permission get 403."""
    return login_required(permission_required(VIEW, raise_exception=True)(view))


def action(perm: str) -> Callable[[View], View]:
    """A POST-only action needing ``perm``: a forged request from anyone else gets 403."""

    def decorate(view: View) -> View:
        guarded = permission_required([VIEW, perm], raise_exception=True)(view)
        return require_POST(login_required(guarded))

    return decorate


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _back(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def action_done(request: HttpRequest, message: str, *, default: str, **extra: Any) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"ok": True, "message": message, **extra})
    messages.success(request, message)
    return redirect(_back(request, default))


def action_refused(
    request: HttpRequest, message: str, *, default: str, status: int = 409
) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"ok": False, "message": message}, status=status)
    messages.error(request, message)
    return redirect(_back(request, default))
