"""``manage.py join_token create [--node NAME] [--ttl 24h]``, ``list``, ``revoke TOKEN_ID``:
per-node, one-time join tokens (like Kubernetes bootstrap tokens), beside the shared
``HIVEMIND_JOIN_TOKEN``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from hivemind_web.hub.models import JoinToken
from hivemind_web.hub.services import identity
from hivemind_web.hub.services.errors import ServiceValidationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ERR_TTL_FORMAT = "--ttl must be a number with a unit s, m, h or d (e.g. 30m, 24h, 7d), got {!r}"


def parse_ttl(value: str) -> timedelta:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if match is None:
        raise CommandError(ERR_TTL_FORMAT.format(value))
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


class Command(BaseCommand):
    help = "Create, list or revoke one-time join tokens (shown once; only their hash is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="make a token and print it")
        create.add_argument("--node", default="", help="only this node name may use it")
        create.add_argument("--ttl", default="24h", help="how long it is valid (default 24h)")
        create.add_argument("--description", default="")
        sub.add_parser("list", help="tokens not used yet and not expired")
        revoke = sub.add_parser("revoke", help="delete a token by its id")
        revoke.add_argument("token_id")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            try:
                _row, token = identity.join_token_create(
                    node_name=options["node"],
                    ttl=parse_ttl(options["ttl"]),
                    description=options["description"],
                    actor="manage.py join_token",
                )
            except ServiceValidationError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(token)
        elif action == "list":
            rows = JoinToken.objects.filter(used_at__isnull=True, expires_at__gt=timezone.now())
            for row in rows:
                self.stdout.write(
                    f"{row.token_id}\t{row.node_name or '*'}\t{row.expires_at.isoformat()}"
                    f"\t{row.description}"
                )
        elif not identity.join_token_revoke(token_id=options["token_id"]):
            raise CommandError(f"no join token {options['token_id']!r}")
