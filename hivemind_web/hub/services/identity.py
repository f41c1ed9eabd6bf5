"""Node identity (DESIGN §13): a name is bound to its token, per-node join tokens, token
rotation, and the one live connection an identity may have."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from executor_core.labels import node_name_error
from hivemind_web.hub.models import JoinToken, Node
from hivemind_web.hub.services import events
from hivemind_web.hub.services.errors import NotFound, ServiceValidationError

# kubeadm's bootstrap token shape, with a longer secret: "<6 chars>.<24 chars>".
JOIN_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{24})$")
_ALPHABET = string.ascii_lowercase + string.digits
MAX_TTL = timedelta(days=365)
DEFAULT_TTL = timedelta(hours=24)  # kubeadm's default too

ERR_TTL = "ttl must be between 1 second and 365 days"
ERR_DESCRIPTION = "description must be at most 200 characters"


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def validate_join_token_fields(
    *, node_name: str, ttl: timedelta, description: str
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if node_name and (problem := node_name_error(node_name)):
        errors["node_name"] = f"node name {problem}"
    if not timedelta(seconds=1) <= ttl <= MAX_TTL:
        errors["ttl"] = ERR_TTL
    if len(description) > 200:
        errors["description"] = ERR_DESCRIPTION
    return errors


@transaction.atomic
def join_token_create(
    *,
    node_name: str = "",
    ttl: timedelta = DEFAULT_TTL,
    description: str = "",
    actor: Any = None,
) -> tuple[JoinToken, str]:
    """A one-time join token, shown once (only its hash is kept). With ``node_name`` it
    registers that name only, and may re-issue that node's token if it exists."""
    errors = validate_join_token_fields(node_name=node_name, ttl=ttl, description=description)
    if errors:
        raise ServiceValidationError(errors)
    token_id = _random(6)
    while JoinToken.objects.filter(token_id=token_id).exists():
        token_id = _random(6)
    secret = _random(24)
    row = JoinToken.objects.create(
        token_id=token_id,
        secret_hash=hash_token(secret),
        node_name=node_name,
        description=description,
        expires_at=timezone.now() + ttl,
        created_by=events.actor_name(actor) if actor is not None else "",
    )
    return row, f"{token_id}.{secret}"


def join_token_redeem(token: str, *, name: str) -> JoinToken | None:
    """Use up a per-node join token for registering ``name`` (inside the registration's
    transaction: a refused registration does not burn it). None when ``token`` is not a
    valid, unused, unexpired one for that name."""
    match = JOIN_TOKEN_RE.match(token)
    if match is None:
        return None
    row = JoinToken.objects.select_for_update().filter(token_id=match.group(1)).first()
    if (
        row is None
        or not hmac.compare_digest(row.secret_hash.encode(), hash_token(match.group(2)).encode())
        or row.used_at is not None
        or row.expires_at <= timezone.now()
        or (row.node_name and row.node_name != name)
    ):
        return None
    row.used_at, row.used_by = timezone.now(), name
    row.save(update_fields=["used_at", "used_by"])
    return row


def join_token_revoke(*, token_id: str) -> bool:
    return JoinToken.objects.filter(token_id=token_id).delete()[0] > 0


@transaction.atomic
def node_rotate_token(*, name: str, actor: Any) -> tuple[Node, str]:
    """A new token for the node, shown once. The old one stops working at once, and the
    connection made with it is closed by the hub holding it (within a housekeeping tick)."""
    node = Node.objects.select_for_update().filter(name=name).first()
    if node is None:
        raise NotFound(f"no node named {name!r}")
    token = secrets.token_urlsafe(32)
    node.token_hash = hash_token(token)
    node.save(update_fields=["token_hash", "updated_at"])
    events.node_event(node, "token_rotated", actor=actor)
    return node, token


# The live connection -------------------------------------------------------------------


def node_connection(name: str) -> tuple[int, str]:
    """(epoch, channel of the connection holding the node's identity, "" when none)."""
    row = Node.objects.filter(name=name).values_list("connection_epoch", "connection_channel")
    return row.first() or (0, "")


def node_claim_connection(*, name: str, channel: str, seen_epoch: int, hub: str = "") -> int | None:
    """Take the identity for the connection on ``channel`` (served by hub process ``hub``),
    unless another connection took it since ``seen_epoch`` was read. Returns the new epoch,
    or None."""
    with transaction.atomic():
        taken = Node.objects.filter(name=name, connection_epoch=seen_epoch).update(
            connection_epoch=F("connection_epoch") + 1,
            connection_channel=channel,
            connection_hub=hub,
        )
    return seen_epoch + 1 if taken else None


def node_release_connection(*, name: str, epoch: int) -> None:
    """The connection of ``epoch`` closed; a newer one keeps what it holds."""
    with transaction.atomic():
        Node.objects.filter(name=name, connection_epoch=epoch).update(
            connection_channel="", connection_hub="", updated_at=timezone.now()
        )


def node_identities(names: Iterable[str]) -> dict[str, tuple[int, str]]:
    """name → (connection epoch, token hash), for the connections a hub holds."""
    rows = Node.objects.filter(name__in=list(names))
    return {
        name: (epoch, token_hash)
        for name, epoch, token_hash in rows.values_list("name", "connection_epoch", "token_hash")
    }
