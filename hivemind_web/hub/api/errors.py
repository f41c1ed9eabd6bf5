"""Map service errors onto HTTP: 400 with per-field messages, 404, 409."""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hivemind_web.hub.services.errors import (
    AtCapacity,
    IdentityConflict,
    NotFound,
    ServiceValidationError,
    TransitionError,
)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceValidationError):
        body = {k: v if isinstance(v, list | dict) else [v] for k, v in exc.errors.items()}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, TransitionError | IdentityConflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, AtCapacity):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, NotFound):
        return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
    return drf_exception_handler(exc, context)
