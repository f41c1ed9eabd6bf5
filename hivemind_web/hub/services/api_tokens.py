"""API tokens of users: issued once in the clear, kept as digests, checked by digest."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from hivemind_web.hub.models import ApiToken
from hivemind_web.hub.services.errors import NotFound
from hivemind_web.hub.services.identity import hash_token

ERR_NO_USER = "no user named {username!r}"


@transaction.atomic
def api_token_create(*, user: Any, name: str = "") -> str:
    """A new token for ``user``; the returned key is the only copy in the clear."""
    key = secrets.token_hex(20)
    ApiToken.objects.create(user=user, digest=hash_token(key), prefix=key[:8], name=name[:100])
    return key


def api_token_create_for(*, username: str, name: str = "") -> str:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(ERR_NO_USER.format(username=username))
    return api_token_create(user=user, name=name)


def api_token_user(key: str) -> Any | None:
    """The active user whose token ``key`` is, or None. One hash, one indexed lookup: the
    digest of a random 160-bit key leaks nothing through the comparison's timing."""
    if not key:
        return None
    token = ApiToken.objects.select_related("user").filter(digest=hash_token(key)).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


@transaction.atomic
def api_tokens_revoke(*, tokens: Any) -> int:
    """Delete tokens (a queryset or a list of rows): requests with them fail at once, and
    within the token cache's lifetime on the submission fast path."""
    ids = [token.pk for token in tokens]
    return ApiToken.objects.filter(pk__in=ids).delete()[0]
