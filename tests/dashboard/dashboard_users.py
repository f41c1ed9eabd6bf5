"""Users for the dashboard tests, by role."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.test import Client


def make_user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username, password="pw-" + username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def client_for(username: str, role: str | None) -> Client:
    client = Client()
    client.force_login(make_user(username, role))
    return client
