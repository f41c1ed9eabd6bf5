"""``manage.py api_token USER [--name NAME]``: issue an API token for a user and print it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hivemind_web.hub.services.api_tokens import api_token_create_for
from hivemind_web.hub.services.errors import NotFound


class Command(BaseCommand):
    help = "Issue an API token for a user and print it (shown once; only its digest is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")

    def handle(self, *args: Any, username: str, name: str, **kw: Any) -> None:
        try:
            key = api_token_create_for(username=username, name=name)
        except NotFound as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(key)
