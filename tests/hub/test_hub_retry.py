"""Request-path transactions that lose a deadlock are tried again, outside any other
transaction only."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, transaction

from hivemind_web.hub.services.retry import TRIES, retry_deadlocks


class Deadlock(DatabaseError):
    sqlstate = "40P01"


def flaky(failures: int, error: type[Exception] = Deadlock) -> tuple[list[int], object]:
    tried: list[int] = []

    @retry_deadlocks
    def write() -> str:
        tried.append(1)
        if len(tried) <= failures:
            raise error("lost")
        return "written"

    return tried, write


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_deadlock_victim_is_tried_again() -> None:
    tried, write = flaky(2)
    assert write() == "written" and len(tried) == 3


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_gives_up_after_a_few_tries_and_never_retries_other_errors() -> None:
    tried, write = flaky(TRIES)
    with pytest.raises(Deadlock):
        write()
    assert len(tried) == TRIES
    tried, write = flaky(1, error=DatabaseError)
    with pytest.raises(DatabaseError):
        write()
    assert len(tried) == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_inside_another_transaction_nothing_is_retried() -> None:
    tried, write = flaky(1)
    with pytest.raises(Deadlock), transaction.atomic():
        write()
    assert len(tried) == 1
