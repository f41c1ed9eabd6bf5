"""Every /api/ path answers in JSON, even for what does not exist; the API docs are served
by the hub itself (they work offline)."""

from __future__ import annotations

import pytest
from django.test import Client
from test_hub_api import client_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/nope/", "/api/v2/tasks/", "/api/", "/api/v1/tasks/x/y/"])
def test_an_unknown_api_path_is_a_json_404(path: str) -> None:
    response = client_for("bob", "viewer").get(path)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert path in response.json()["detail"]


def test_an_unknown_page_is_still_a_page() -> None:
    response = client_for("bob", "viewer").get("/no-such-page/")
    assert response.status_code == 404 and "text/html" in response["Content-Type"]


def test_a_wrong_method_on_the_api_is_a_json_405() -> None:
    response = client_for("alice", "admin").delete("/api/v1/tasks/")
    assert response.status_code == 405 and "DELETE" in response.json()["detail"]


def test_a_body_over_the_limit_on_the_api_is_a_json_413(settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client_for("olga", "operator").post(
        "/api/v1/tasks/", {"agent_id": "echo", "input": "x" * 5000}, format="json"
    )
    assert response.status_code == 413 and "larger than 1000 bytes" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "asset"),
    [
        ("/api/docs/", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"),
        ("/api/redoc/", "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"),
    ],
)
def test_the_api_docs_load_nothing_from_another_site(path: str, asset: str) -> None:
    html = client_for("bob", "viewer").get(path).content.decode()
    assert asset in html
    assert "cdn." not in html and "unpkg" not in html
    assert Client().get(asset).status_code == 200
