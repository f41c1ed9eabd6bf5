"""Named users for the dashboard tests: alice the admin, olga the operator, bob the viewer,
charlie an outsider (logged in, no role)."""

from __future__ import annotations

from typing import Any

import pytest
from dashboard_users import client_for
from django.test import Client

from hivemind_web.hub.models import Node, Task
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission


@pytest.fixture
def alice(db: Any) -> Client:
    return client_for("alice", "admin")


@pytest.fixture
def olga(db: Any) -> Client:
    return client_for("olga", "operator")


@pytest.fixture
def bob(db: Any) -> Client:
    return client_for("bob", "viewer")


@pytest.fixture
def charlie(db: Any) -> Client:
    return client_for("charlie", None)


@pytest.fixture
def node(db: Any) -> Node:
    created, _ = node_services.node_create(name="gpu-1", labels={"gpu": "true"}, capacity=2)
    return created


@pytest.fixture
def task(db: Any) -> Task:
    """A pending task (stored, never started: its start hook needs a committed transaction)."""
    return submission.task_submit(actor=None, agent_id="echo", input="hi", start=False)
