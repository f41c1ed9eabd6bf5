"""``manage.py node_token NAME [--labels k=v] [--capacity N]``: create a node, print its token;
``manage.py node_token NAME --rotate``: issue a new token for an existing node."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from executor_core.labels import LabelError, parse_labels
from hivemind_web.hub.services.errors import NotFound, ServiceValidationError
from hivemind_web.hub.services.identity import node_rotate_token
from hivemind_web.hub.services.nodes import node_create


class Command(BaseCommand):
    help = (
        "Create a node record and print its token, or with --rotate issue a new token for an "
        "existing node (the old one stops working and its connection is closed). The token "
        "is shown once; only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--labels", default="")
        parser.add_argument("--capacity", type=int, default=1)
        parser.add_argument(
            "--rotate", action="store_true", help="issue a new token for an existing node"
        )

    def handle(
        self, *args: Any, name: str, labels: str, capacity: int, rotate: bool, **kw: Any
    ) -> None:
        try:
            if rotate:
                _node, token = node_rotate_token(name=name, actor="manage.py node_token")
            else:
                _node, token = node_create(
                    name=name, labels=parse_labels(labels), capacity=capacity
                )
        except LabelError as exc:
            raise CommandError(f"--labels: {exc}") from None
        except (ServiceValidationError, NotFound) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(token)
