"""``Authorization: Token <key>`` checked against stored digests (services.api_tokens)."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from hivemind_web.hub.services.api_tokens import api_token_user

ERR_BAD_TOKEN = "Invalid token."


class HashedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, None]:
        user = api_token_user(key)
        if user is None:
            raise AuthenticationFailed(ERR_BAD_TOKEN)
        return user, None
