"""Team services: creation and policy edits."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from executor_core.labels import label_value_error
from hivemind_web.hub.models import Team
from hivemind_web.hub.services.errors import NotFound, ServiceValidationError

ERR_TEAM_NAME = "team name must be 1-63 characters: letters, digits, '-', '_' or '.'"
ERR_MAX_RETRIES = "max_retries must be between 0 and 100"
ERR_ON_FAILURE = "on_failure must be one of: retry, fallback_local, fail"
ERR_MAX_WAIT = "max_wait must be a number of seconds from 0 to 86400, or null for the hub's"
MAX_WAIT = 86_400.0


def validate_team_name(name: object) -> str | None:
    if not isinstance(name, str) or not name or label_value_error("team", name):
        return ERR_TEAM_NAME
    return None


def validate_team(
    *,
    name: str | None = None,
    on_failure: str | None = None,
    max_retries: int | None = None,
    max_wait: float | None = None,
) -> dict[str, str]:
    """Every problem with these team fields (a name is also checked for being free)."""
    errors = _validate(on_failure, max_retries, max_wait)
    if name is not None:
        if problem := validate_team_name(name):
            errors["name"] = problem
        elif Team.objects.filter(name=name).exists():
            errors["name"] = f"a team named {name!r} already exists"
    return errors


def _validate(
    on_failure: str | None, max_retries: int | None, max_wait: float | None = None
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if max_wait is not None and (
        isinstance(max_wait, bool)
        or not isinstance(max_wait, int | float)
        or not 0 <= max_wait <= MAX_WAIT
    ):
        errors["max_wait"] = ERR_MAX_WAIT
    if on_failure is not None and on_failure not in Team.OnFailure.values:
        errors["on_failure"] = ERR_ON_FAILURE
    if max_retries is not None and not (isinstance(max_retries, int) and 0 <= max_retries <= 100):
        errors["max_retries"] = ERR_MAX_RETRIES
    return errors


def team_get_or_create(*, name: str) -> Team:
    """The named team, created with the default policy when it does not exist yet."""
    if problem := validate_team_name(name):
        raise ServiceValidationError({"team": problem})
    team = Team.objects.filter(name=name).first()
    if team is not None:
        return team
    try:
        with transaction.atomic():
            return Team.objects.create(name=name)
    except IntegrityError:  # created concurrently: take the winner's row
        return Team.objects.get(name=name)


@transaction.atomic
def team_create(
    *,
    name: str,
    on_failure: str = Team.OnFailure.RETRY,
    max_retries: int = 1,
    max_wait: float | None = None,
) -> Team:
    errors = validate_team(
        name=name, on_failure=on_failure, max_retries=max_retries, max_wait=max_wait
    )
    if errors:
        raise ServiceValidationError(errors)
    return Team.objects.create(
        name=name, on_failure=on_failure, max_retries=max_retries, max_wait=max_wait
    )


_KEEP: Any = object()  # team_update: leave the field as it is


@transaction.atomic
def team_update(
    *,
    name: str,
    on_failure: str | None = None,
    max_retries: int | None = None,
    max_wait: Any = _KEEP,
) -> Team:
    """Change the given fields (``max_wait=None`` goes back to the hub's default)."""
    errors = _validate(on_failure, max_retries, None if max_wait is _KEEP else max_wait)
    if errors:
        raise ServiceValidationError(errors)
    team = Team.objects.select_for_update().filter(name=name).first()
    if team is None:
        raise NotFound(f"no team named {name!r}")
    if on_failure is not None:
        team.on_failure = on_failure
    if max_retries is not None:
        team.max_retries = max_retries
    if max_wait is not _KEEP:
        team.max_wait = None if max_wait is None else float(max_wait)
    team.save(update_fields=["on_failure", "max_retries", "max_wait"])
    return team
