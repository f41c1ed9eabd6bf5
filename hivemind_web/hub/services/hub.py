"""Hub-wide switches: the global fallback mode."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from hivemind_web.hub import broadcast, intents
from hivemind_web.hub.models import HubSetting
from hivemind_web.hub.services.events import actor_name


def hub_settings() -> HubSetting:
    """The hub-wide switches (defaults until someone first changes one): never writes."""
    return HubSetting.objects.filter(pk=1).first() or HubSetting(pk=1)


def fallback_mode_enabled() -> bool:
    return HubSetting.objects.filter(pk=1, fallback_mode=True).exists()


@transaction.atomic
def fallback_mode_set(*, enabled: bool, actor: Any) -> HubSetting:
    """While on, every golem/auto task routes local (for a Golem incident)."""
    setting, _ = HubSetting.objects.select_for_update().get_or_create(pk=1)
    setting.fallback_mode = bool(enabled)
    setting.changed_by = actor_name(actor)
    setting.save()
    broadcast.publish(
        "fallback_mode", {"enabled": setting.fallback_mode, "changed_by": setting.changed_by}
    )
    intents.fallback_mode_changed(setting.fallback_mode)
    return setting
