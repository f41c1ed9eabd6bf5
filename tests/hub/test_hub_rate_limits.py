"""Guessing is slow: registration is throttled per client address (the 11th attempt in a
minute gets 429), logins lock out after repeated wrong passwords, and behind a trusted proxy
the address is the one the proxy saw, not what the client claims."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory

from hivemind_web.hub.api import fast_submit
from hivemind_web.hub.api.throttles import client_address
from hivemind_web.hub.models import Node

pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/nodes/register/"


@pytest.fixture
def join_token(settings: Any) -> str:
    settings.HIVEMIND = {**settings.HIVEMIND, "JOIN_TOKEN": "the-join-token"}
    return "the-join-token"


def register(client: Client, token: str, name: str, **extra: Any) -> Any:
    body = {"join_token": token, "name": name}
    return client.post(REGISTER, body, content_type="application/json", **extra)


def test_the_11th_registration_in_a_minute_from_one_address_gets_429(
    client: Client, join_token: str
) -> None:
    answers = [register(client, "wrong", f"n{i}").status_code for i in range(10)]
    assert answers == [403] * 10
    refused = register(client, join_token, "n10")
    assert refused.status_code == 429
    assert "throttled" in refused.json()["detail"] and refused["Retry-After"]
    assert not Node.objects.exists()


def test_another_address_may_still_register(client: Client, join_token: str) -> None:
    for i in range(11):
        register(client, "wrong", f"n{i}")
    other = register(client, join_token, "n1", REMOTE_ADDR="10.0.0.2")
    assert other.status_code == 201


def test_a_client_cannot_dodge_the_limit_with_x_forwarded_for(
    client: Client, join_token: str
) -> None:
    for i in range(10):
        register(client, "wrong", f"n{i}", HTTP_X_FORWARDED_FOR=f"10.9.0.{i}")
    assert register(client, join_token, "n10", HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429


@pytest.mark.parametrize(
    ("trusted", "forwarded", "address"),
    [
        (False, "", "203.0.113.7"),
        (False, "198.51.100.1", "203.0.113.7"),
        (True, "", "203.0.113.7"),
        (True, "198.51.100.1", "198.51.100.1"),
        (True, "1.2.3.4, 198.51.100.1", "198.51.100.1"),
    ],
)
def test_the_client_address_is_the_peer_or_what_the_trusted_proxy_saw(
    settings: Any, trusted: bool, forwarded: str, address: str
) -> None:
    settings.TRUSTED_PROXY = trusted
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.7", **extra)
    assert client_address(request) == address


def test_logins_from_an_address_lock_out_after_repeated_wrong_passwords(
    client: Client, settings: Any
) -> None:
    User.objects.create_user("alice", password="right-password")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        wrong = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
        assert wrong.status_code == 200  # the form again, with its error
    locked = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    still = client.post("/accounts/login/", {"username": "alice", "password": "right-password"})
    assert still.status_code == 429
    other = Client(REMOTE_ADDR="10.0.0.3")
    assert (
        other.post(
            "/accounts/login/", {"username": "alice", "password": "right-password"}
        ).status_code
        == 302
    )


def test_the_admin_login_is_locked_out_too(client: Client, settings: Any) -> None:
    User.objects.create_user("root", password="right-password", is_staff=True)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "root", "password": "nope"})
    locked = client.post("/admin/login/", {"username": "root", "password": "right-password"})
    assert locked.status_code == 429


def scope(scheme: str = "http", proto: str = "") -> dict[str, Any]:
    headers = [(b"authorization", b"Token abc"), (b"host", b"hub.example.com")]
    if proto:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return {"type": "http", "method": "POST", "path": "/api/v1/tasks/", "scheme": scheme,
            "headers": headers}  # fmt: skip


def test_with_https_plain_http_submissions_go_the_way_that_redirects(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert not fast_submit.wants(scope())
    assert not fast_submit.wants(scope(proto="http"))
    assert fast_submit.wants(scope(scheme="https"))
    assert fast_submit.wants(scope(proto="https"))


def test_without_a_trusted_proxy_its_header_means_nothing(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = None
    assert not fast_submit.wants(scope(proto="https"))


async def test_secure_fast_path_answers_carry_hsts(settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = False
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    wrapped = fast_submit._with_hsts(send, fast_submit._hsts())
    await wrapped({"type": "http.response.start", "status": 201, "headers": []})
    assert sent[0]["headers"] == [(b"strict-transport-security", b"max-age=600; includeSubDomains")]
