"""The submit form, the task page (and its live fragment), cancel and force fallback."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from hivemind_web.dashboard import placement, selectors
from hivemind_web.dashboard.forms import TaskSubmitForm
from hivemind_web.dashboard.views.common import (
    action,
    action_done,
    action_refused,
    viewer_required,
)
from hivemind_web.hub.api.permissions import CONTROL, SUBMIT, VIEW
from hivemind_web.hub.models import Task
from hivemind_web.hub.selectors import current_usage
from hivemind_web.hub.services import retries, submission
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services.errors import NotFound, ServiceValidationError, TransitionError


@login_required
@permission_required([VIEW, SUBMIT], raise_exception=True)
def task_new(request: HttpRequest) -> HttpResponse:
    agents = submission.known_agents()
    form = TaskSubmitForm(request.POST or None, agents=agents)
    if request.method == "POST":
        task = _submit(form, request.user)
        if task is not None:
            return redirect("task", session_id=task.session_id)
    context = {"form": form, "teams": selectors.team_names()}
    return render(request, "dashboard/task_new.html", context, status=400 if form.errors else 200)


def _submit(form: TaskSubmitForm, actor: Any) -> Task | None:
    """Submit through the service; every problem, the form's and the service's, lands on its
    field. Nothing is stored unless everything is valid."""
    valid = form.is_valid()
    try:
        if valid:
            return submission.task_submit(actor=actor, **form.service_fields())
        # Still ask the service, so the other fields' errors show at the same time.
        submission.validate_submission(**form.service_fields())
    except ServiceValidationError as exc:
        form.add_service_errors(exc.errors)
    return None


def _task_or_404(session_id: Any) -> Task:
    task = selectors.get_task(session_id)
    if task is None:
        raise Http404(f"no task {session_id}")
    return task


def _task_context(task: Task) -> dict[str, Any]:
    attempts = placement.task_attempts(task)
    current = next((a for a in attempts if a.number == task.attempts), None)
    return {
        "task": task,
        "events": list(selectors.task_events(task)),
        "panel": placement.placement_panel(task, current),
        "attempts": placement.attempt_rows(attempts),
        "retries": list(task.retries.order_by("created_at").values_list("session_id", flat=True)),
        "usage": current_usage(task),
        "max_log_lines": settings.HIVEMIND["MAX_LOG_LINES"],
    }


@viewer_required
def task_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    return render(request, "dashboard/task_detail.html", _task_context(_task_or_404(session_id)))


@viewer_required
def task_live(request: HttpRequest, session_id: str) -> HttpResponse:
    """The part of the task page that changes, re-read by the page when the task moves on."""
    return render(request, "dashboard/_task_live.html", _task_context(_task_or_404(session_id)))


def _task_action(request: HttpRequest, session_id: str, service: Any, done: str) -> HttpResponse:
    page = reverse("task", kwargs={"session_id": session_id})
    try:
        service(session_id=session_id, actor=request.user)
    except NotFound:
        raise Http404(f"no task {session_id}") from None
    except TransitionError as exc:
        return action_refused(request, str(exc), default=page)
    return action_done(request, done, default=page)


@action(CONTROL)
def task_cancel(request: HttpRequest, session_id: str) -> HttpResponse:
    return _task_action(request, session_id, task_services.task_cancel, "Task cancelled.")


@action(CONTROL)
def task_force_fallback(request: HttpRequest, session_id: str) -> HttpResponse:
    return _task_action(
        request, session_id, task_services.task_force_fallback, "Task forced to local execution."
    )


@action(SUBMIT)
def task_retry(request: HttpRequest, session_id: str) -> HttpResponse:
    page = reverse("task", kwargs={"session_id": session_id})
    try:
        new = retries.task_retry(session_id=session_id, actor=request.user)
    except NotFound:
        raise Http404(f"no task {session_id}") from None
    except (TransitionError, ServiceValidationError) as exc:
        message = str(exc) if isinstance(exc, TransitionError) else _errors_text(exc)
        return action_refused(request, message, default=page)
    url = reverse("task", kwargs={"session_id": new.session_id})
    return action_done(request, f"Retried as {str(new.session_id)[:8]}.", default=url, url=url)


def _errors_text(exc: ServiceValidationError) -> str:
    return "; ".join(f"{k}: {v}" for k, v in exc.errors.items())


BULK_ACTIONS = {"cancel": "Cancelled", "retry": "Retried"}


def _selection_query(params: Any) -> selectors.TaskQuery | None:
    """The board's filters (repeated status keys kept) as a task query."""
    params = params.copy()
    params["tasks"] = "1"
    return selectors.parse_request(params).tasks


@viewer_required
def tasks_bulk_preview(request: HttpRequest) -> JsonResponse:
    """How many tasks of the board's filtered selection a bulk action would touch."""
    kind = request.GET.get("action", "")
    if kind not in BULK_ACTIONS:
        return JsonResponse({"detail": f"unknown action {kind!r}"}, status=400)
    query = _selection_query(request.GET)
    ids = selectors.bulk_selection(query, kind)
    return JsonResponse({"action": kind, "count": len(ids), "limit": selectors.MAX_BULK})


@action(CONTROL)
def tasks_bulk(request: HttpRequest) -> HttpResponse:
    kind = request.POST.get("action", "")
    if kind not in BULK_ACTIONS:
        return action_refused(request, f"unknown action {kind!r}", default="/", status=400)
    if kind == "retry" and not request.user.has_perm(SUBMIT):
        return action_refused(
            request, "retrying needs the submit permission", default="/", status=403
        )
    query = _selection_query(request.POST)
    ids = selectors.bulk_selection(query, kind)
    each = retries.tasks_cancel_each if kind == "cancel" else retries.tasks_retry_each
    result = each(session_ids=ids, actor=request.user)
    return action_done(
        request, result.message(BULK_ACTIONS[kind]), default="/", done=len(result.done)
    )
