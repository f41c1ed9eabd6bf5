"""HIVEMIND_SCHEDULER_PROFILE: the scheduler's plugins and weights from the environment."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from executor_core.scheduling.framework import DEFAULT_FILTERS, Profile
from hivemind_web.config import env_scheduler_profile

NAME = "HIVEMIND_SCHEDULER_PROFILE"


def test_unset_means_the_built_in_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    assert env_scheduler_profile(NAME) is None


def test_a_profile_is_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, '{"scores": {"TeamAffinity": 2, "PreferLabels": 0.5}}')
    assert env_scheduler_profile(NAME) == Profile(
        filters=DEFAULT_FILTERS, scores={"TeamAffinity": 2, "PreferLabels": 0.5}
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("{not json", "HIVEMIND_SCHEDULER_PROFILE: Expecting property name"),
        ('{"filters": ["NodeCapacity", "Nope"]}', "no scheduler plugin named 'Nope'"),
        ('{"scores": {"NodeCapacity": 1}}', "'NodeCapacity' is not a scorer"),
        ('{"scores": {"TeamAffinity": 0}}', "weight of 'TeamAffinity' must be a number > 0"),
        ('["TeamAffinity"]', "must be an object"),
    ],
)
def test_a_bad_profile_stops_the_start_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, raw: str, error: str
) -> None:
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match=error):
        env_scheduler_profile(NAME)
