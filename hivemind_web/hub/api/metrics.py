"""``GET /metrics``: the hub's Prometheus metrics (hivemind_web.hub.metrics).

Readable by a user with the view permission (session or API token), or by a scraper that
sends ``Authorization: Bearer $HIVEMIND_METRICS_TOKEN``.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from hivemind_web.hub.api.permissions import VIEW
from hivemind_web.hub.metrics import REGISTRY


def bearer_matches(request: Any, expected: str) -> bool:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


class CanReadMetrics(BasePermission):
    message = "metrics need the view permission or the metrics bearer token"

    def has_permission(self, request: Any, view: Any) -> bool:
        if bearer_matches(request, settings.HIVEMIND["METRICS_TOKEN"]):
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(VIEW))


class Metrics(APIView):
    permission_classes = [CanReadMetrics]
    # Not part of the REST API's schema: Prometheus's text format, not JSON.
    schema = None

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
