"""An API fuzz against the OpenAPI schema (schemathesis), in process through Django's WSGI
handler: whatever an admin's token sends to any operation, the hub never answers 5xx, and
every documented answer matches the schema. Bounded: a few examples per operation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from hivemind_web.hub.services.api_tokens import api_token_create
from hivemind_web.hub.services.nodes import node_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_key() -> str:
    alice = User.objects.create_user("alice")
    alice.groups.add(Group.objects.get(name="admin"))
    node_create(name="gpu-1", labels={"gpu": "true"}, capacity=2)
    return api_token_create(user=alice)


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Iterator[None]:
    # As Django's test client does: a request's start and end must not close the
    # connection that holds the test's transaction.
    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (signals.request_started, signals.request_finished):
        signal.connect(close_old_connections)


def _openapi() -> dict[str, Any]:
    """The schema /api/schema/ serves, generated without a request (at collection)."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document, renderer_context={}))


# Valid and invalid data alike, NUL characters included: both must get answers, not 500s.
config = SchemathesisConfig()
config.projects.default.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True
)
schema = schemathesis.openapi.from_dict(_openapi(), config=config)
schema.app = get_wsgi_application()


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_or_off_schema(case: Any, api_key: str) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Token {api_key}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
