"""/metrics: Prometheus text that parses, whose figures are the database's, readable with the
view permission or the metrics bearer token and by nobody else."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient
from test_hub_api import client_for

from hivemind_web.hub.metrics import fallback_kind
from hivemind_web.hub.models import Task, TaskAttempt
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission

pytestmark = pytest.mark.django_db
TOKEN = "scrape-me-" + "x" * 24
REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def task(status: str, route: str, agent: str = "echo", seconds: float = 0, **extra) -> Task:
    row = submission.task_submit(actor=None, agent_id=agent, start=False)
    now = timezone.now()
    fields = {"status": status, "route": route, **extra}
    if seconds:
        fields |= {"started_at": now - timedelta(seconds=seconds), "finished_at": now}
    Task.objects.filter(pk=row.pk).update(**fields)
    return row


def test_nobody_without_the_view_permission_reads_it(settings) -> None:
    settings.HIVEMIND = {**settings.HIVEMIND, "METRICS_TOKEN": TOKEN}
    assert Client().get("/metrics").status_code in (401, 403)
    assert client_for("charlie", None).get("/metrics").status_code == 403
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code in (401, 403)


def test_a_viewer_and_a_scraper_with_the_token_read_it(settings) -> None:
    settings.HIVEMIND = {**settings.HIVEMIND, "METRICS_TOKEN": TOKEN}
    viewer = client_for("bob", "viewer").get("/metrics")
    assert viewer.status_code == 200 and viewer["Content-Type"].startswith("text/plain")
    scraper = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert scraper.status_code == 200


def test_without_a_metrics_token_a_bearer_header_gets_nothing(settings) -> None:
    settings.HIVEMIND = {**settings.HIVEMIND, "METRICS_TOKEN": ""}
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code in (401, 403)


def test_the_figures_are_the_databases(settings) -> None:
    node_services.node_create(name="n1", capacity=3)
    for _ in range(3):
        task("succeeded", "golem", seconds=2.0)
    task("failed", "local", agent="fail", seconds=0.3)
    task("succeeded", "local", seconds=40, fallback_reason="0/1 nodes available: 1 at capacity")
    task("pending", "")
    fell = task("succeeded", "local")
    TaskAttempt.objects.update_or_create(
        task=fell, number=1, defaults={"fallback_reason": "node n1 did not accept"}
    )
    text = client_for("bob", "viewer").get("/metrics").content.decode()
    got = samples(text)
    assert (
        got[("hivemind_tasks_finished_total", (("route", "golem"), ("status", "succeeded")))] == 3
    )
    assert got[("hivemind_tasks_finished_total", (("route", "local"), ("status", "failed")))] == 1
    assert got[("hivemind_tasks", (("route", "none"), ("status", "pending")))] == 1
    assert got[("hivemind_fallbacks_total", (("kind", "not_accepted"),))] == 1
    echo = (("agent", "echo"),)
    assert got[("hivemind_task_duration_seconds_count", echo)] == 4
    assert got[("hivemind_task_duration_seconds_bucket", (*echo, ("le", "2.5")))] == 3
    assert got[("hivemind_task_duration_seconds_sum", echo)] == pytest.approx(46.0, abs=0.1)
    assert got[("hivemind_queue_depth", (("queue", "pending"),))] == 1
    assert got[("hivemind_nodes", (("status", "not_ready"),))] == 1
    assert got[("hivemind_node_capacity", (("node", "n1"),))] == 3
    assert got[("hivemind_node_running", (("node", "n1"),))] == 0


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (
            "0/3 nodes available: 2 did not match selector gpu=true, 1 at capacity",
            "no_feasible_node",
        ),
        ("node n1 did not accept the task within 10s", "not_accepted"),
        ("node n1 rejected the task: draining", "rejected"),
        ("bind conflict: node n1 filled up under us 3 times", "bind_conflict"),
        ("fallback mode is on: every task runs locally", "fallback_mode"),
        ("forced to local by alice", "forced"),
        ("something new", "other"),
    ],
)
def test_fallback_reasons_are_counted_by_kind(reason: str, kind: str) -> None:
    assert fallback_kind(reason) == kind


def test_an_api_client_needs_no_csrf_to_scrape(settings) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_authenticate(user=None)
    settings.HIVEMIND = {**settings.HIVEMIND, "METRICS_TOKEN": TOKEN}
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_the_grafana_dashboard_charts_only_metrics_the_hub_exports() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "hivemind.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"hivemind_[a-z_]+", expr)}
    text = client_for("bob", "viewer").get("/metrics").content.decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    exported = {f + suffix for f in families for suffix in ("", "_total", "_bucket", "_count")}
    assert used and used <= exported, used - exported
