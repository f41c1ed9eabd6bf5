"""``manage.py node_token NAME [--labels k=v] [--capacity N]``: create a node, print its token."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from executor_core.labels import LabelError, parse_labels
from hivemind_web.hub.services.errors import ServiceValidationError
from hivemind_web.hub.services.nodes import node_create


class Command(BaseCommand):
    help = "Create a node record and print its token (shown once; only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--labels", default="")
        parser.add_argument("--capacity", type=int, default=1)

    def handle(self, *args: Any, name: str, labels: str, capacity: int, **kw: Any) -> None:
        try:
            _node, token = node_create(name=name, labels=parse_labels(labels), capacity=capacity)
        except LabelError as exc:
            raise CommandError(f"--labels: {exc}") from None
        except ServiceValidationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(token)
