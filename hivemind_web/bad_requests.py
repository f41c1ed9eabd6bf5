"""Requests the hub refuses before a view sees them, answered with what was wrong: JSON for
the API and for scripts, a page for people (never Django's bare "Bad Request (400)")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, TooManyFieldsSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.decorators import sync_and_async_middleware
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error

ERR_TOO_LARGE = (
    "the request body is larger than {limit} bytes (HIVEMIND_MAX_REQUEST_BYTES); "
    "send fewer tasks per batch"
)
ERR_TOO_MANY_FIELDS = "the form has more than {limit} fields"
ERR_NUL = "the request path or query string holds a NUL character (%00)"
ERR_BAD_REQUEST = "the request is malformed"
TITLES = {400: "Bad request", 413: "Request too large"}


def too_large_message() -> str:
    return ERR_TOO_LARGE.format(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


def refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"detail": message}, status=status)
    context = {"title": TITLES.get(status, "Refused"), "message": message}
    return render(request, "error.html", context, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's handler400: a body over the size limit is a 413, and each refusal says why."""
    if isinstance(exception, RequestDataTooBig):
        return refuse(request, 413, too_large_message())
    if isinstance(exception, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return refuse(request, 400, ERR_TOO_MANY_FIELDS.format(limit=limit))
    if type(exception) is BadRequest and str(exception):  # Django's own say what is wrong
        return refuse(request, 400, str(exception))
    return refuse(request, 400, ERR_BAD_REQUEST)


ERR_NOT_FOUND = "no such API endpoint: {path} (see /api/docs/)"
ERR_SERVER = "the hub failed to answer this request; the error is in its log"


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's handler404: JSON on every /api/ path, the styled page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": ERR_NOT_FOUND.format(path=request.path)}, status=404)
    return page_not_found(request, exception or Http404())


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's handler500: JSON on every /api/ path."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": ERR_SERVER}, status=500)
    return default_server_error(request)


def _holds_nul(request: HttpRequest) -> bool:
    # PostgreSQL refuses NUL in any string it is given: a lookup by such a path parameter or
    # query value would be a 500 there, so no view ever sees one.
    query = request.META.get("QUERY_STRING", "")
    return "\x00" in request.path_info or "%00" in query or "\x00" in query


@sync_and_async_middleware
def refuse_nul(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]:
    if iscoroutinefunction(get_response):

        async def guard_async(request: HttpRequest) -> HttpResponse:
            if _holds_nul(request):
                return refuse(request, 400, ERR_NUL)
            return await get_response(request)

        return guard_async

    def guard(request: HttpRequest) -> HttpResponse:
        if _holds_nul(request):
            return refuse(request, 400, ERR_NUL)
        return get_response(request)

    return guard
