"""Node identity (DESIGN §13): a name is bound to its token. The shared join token registers
new names only; per-node join tokens are one-time and expire; rotation (CLI, admin) issues a
new token and the old one stops working."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from hivemind_web.hub.models import JoinToken, Node, NodeEvent
from hivemind_web.hub.services import identity
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services.errors import ServiceValidationError

pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/nodes/register/"


@pytest.fixture(autouse=True)
def join_token(settings: Any) -> str:
    settings.HIVEMIND = {**settings.HIVEMIND, "JOIN_TOKEN": "sesame"}
    return "sesame"


def register(name: str, join_token: str = "sesame", **extra: object) -> tuple[int, dict]:
    body = {"join_token": join_token, "name": name, "labels": {"zone": "a"}, "capacity": 2}
    response = APIClient().post(REGISTER, {**body, **extra}, format="json")
    return response.status_code, response.json()


def manage(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_registering_a_taken_name_with_the_join_token_is_refused_and_says_how_to_rotate() -> None:
    status, body = register("gpu-1")
    assert status == 201
    token_hash = Node.objects.get(name="gpu-1").token_hash
    status, refusal = register("gpu-1", capacity=64, labels={"owned": "yes"})
    assert status == 409
    assert "already registered" in refusal["detail"]
    assert "manage.py node_token gpu-1 --rotate" in refusal["detail"]
    node = Node.objects.get(name="gpu-1")
    # Nothing changed: the real node's token still works, and only it.
    assert (node.token_hash, node.capacity, node.labels) == (token_hash, 2, {"zone": "a"})
    assert node_services.node_authenticate(body["token"]) == node


def test_a_name_created_by_hand_cannot_be_taken_with_the_join_token() -> None:
    node_services.node_create(name="cpu-1")
    assert register("cpu-1")[0] == 409


def test_node_token_rotate_issues_a_new_token_and_the_old_one_stops_working() -> None:
    _, body = register("gpu-1")
    new = manage("node_token", "gpu-1", "--rotate")
    assert new and new != body["token"]
    assert node_services.node_authenticate(body["token"]) is None
    assert node_services.node_authenticate(new).name == "gpu-1"
    assert NodeEvent.objects.filter(node__name="gpu-1", kind="token_rotated").exists()


def test_node_token_rotate_of_an_unknown_node_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="no node named 'ghost'"):
        manage("node_token", "ghost", "--rotate")


def test_the_admin_rotates_a_token_and_shows_it_once() -> None:
    node, old = node_services.node_create(name="n1")
    user = User.objects.create_user("alice", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="admin"))
    client = Client()
    client.force_login(user)
    page = client.post(
        "/admin/hub/node/",
        {"action": "rotate_token", "_selected_action": [node.pk]},
        follow=True,
    ).content.decode()
    assert "New token for n1" in page
    assert node_services.node_authenticate(old) is None
    new = page.split("New token for n1 (shown once; its old connection is closed): ")[1]
    assert node_services.node_authenticate(new.split("<")[0].strip()) == node


def test_a_node_join_token_registers_its_name_once() -> None:
    token = manage("join_token", "create", "--node", "edge-1", "--ttl", "1h")
    assert identity.JOIN_TOKEN_RE.match(token)
    assert register("edge-2", join_token=token)[0] == 403  # made for another name
    status, body = register("edge-1", join_token=token)
    assert status == 201 and node_services.node_authenticate(body["token"]).name == "edge-1"
    assert register("edge-1", join_token=token)[0] == 403  # used up
    row = JoinToken.objects.get(token_id=token.split(".")[0])
    assert (row.used_by, row.used_at is not None) == ("edge-1", True)
    assert token.split(".")[1] not in row.secret_hash  # stored hashed


def test_a_node_join_token_rejoins_its_existing_node_and_retires_the_old_token() -> None:
    _, first = register("edge-1")
    token = manage("join_token", "create", "--node", "edge-1")
    status, second = register("edge-1", join_token=token)
    assert status == 201
    assert node_services.node_authenticate(first["token"]) is None
    assert node_services.node_authenticate(second["token"]).name == "edge-1"


def test_an_open_join_token_cannot_take_a_registered_name_and_is_not_used_up() -> None:
    register("edge-1")
    token = manage("join_token", "create")
    assert register("edge-1", join_token=token)[0] == 409
    assert JoinToken.objects.get(token_id=token.split(".")[0]).used_at is None
    assert register("edge-9", join_token=token)[0] == 201


def test_a_refused_registration_does_not_use_up_a_join_token() -> None:
    token = manage("join_token", "create", "--node", "edge-1")
    status, body = register("edge-1", join_token=token, capacity=0)
    assert status == 400 and "capacity" in body
    assert register("edge-1", join_token=token)[0] == 201


def test_an_expired_or_revoked_join_token_is_refused() -> None:
    expired, token = identity.join_token_create(ttl=timedelta(seconds=1))
    JoinToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    assert register("edge-1", join_token=token)[0] == 403
    revoked = manage("join_token", "create")
    manage("join_token", "revoke", revoked.split(".")[0])
    assert register("edge-1", join_token=revoked)[0] == 403
    with pytest.raises(CommandError, match="no join token 'nope00'"):
        manage("join_token", "revoke", "nope00")


def test_join_token_list_shows_usable_tokens_without_their_secrets() -> None:
    token = manage("join_token", "create", "--node", "edge-1", "--description", "rack 4")
    listing = manage("join_token", "list")
    token_id, secret = token.split(".")
    assert token_id in listing and "edge-1" in listing and "rack 4" in listing
    assert secret not in listing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ttl", "forever"], "--ttl must be a number with a unit"),
        (["--ttl", "400d"], "ttl must be between 1 second and 365 days"),
        (["--node", "Not_A_Name"], "node_name: node name"),
    ],
)
def test_join_token_create_refuses_bad_input(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        manage("join_token", "create", *args)
    assert not JoinToken.objects.exists()


def test_join_tokens_are_made_in_the_admin_and_shown_once() -> None:
    user = User.objects.create_user("alice", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="admin"))
    client = Client()
    client.force_login(user)
    bad = client.post(
        "/admin/hub/jointoken/add/", {"node_name": "Bad Name", "ttl_hours": 1, "description": ""}
    )
    assert bad.status_code == 200 and "node name" in bad.content.decode()
    page = client.post(
        "/admin/hub/jointoken/add/",
        {"node_name": "edge-1", "ttl_hours": 2, "description": "rack 4"},
        follow=True,
    ).content.decode()
    token = page.split("Join token (shown once): ")[1].split("<")[0].strip()
    assert register("edge-1", join_token=token)[0] == 201


def test_join_token_fields_are_validated_by_the_service() -> None:
    with pytest.raises(ServiceValidationError) as raised:
        identity.join_token_create(node_name="x" * 64, ttl=timedelta(0), description="d" * 201)
    assert set(raised.value.errors) == {"node_name", "ttl", "description"}
