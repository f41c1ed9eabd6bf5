"""Rate limits on the endpoints that hand out tokens, keyed by the client's address."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from rest_framework.throttling import ScopedRateThrottle


def client_address(request: HttpRequest) -> str:
    """Where the request came from: the peer, or behind HIVEMIND_TRUSTED_PROXY the address
    that proxy appended to X-Forwarded-For (earlier entries are the client's own say-so).
    Login lockout (django-axes) and the throttles use this one answer."""
    peer = request.META.get("REMOTE_ADDR", "")
    if settings.TRUSTED_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return peer


class RegisterThrottle(ScopedRateThrottle):
    """Node registration trades the join token for a node token: HIVEMIND_REGISTER_RATE
    attempts per address, good or bad, so a join token cannot be guessed at speed."""

    scope_attr = "throttle_scope"

    def get_ident(self, request: HttpRequest) -> str:  # type: ignore[override]
        return client_address(request)
