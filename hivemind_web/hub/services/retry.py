"""Trying a transaction again when PostgreSQL picked it as a deadlock's victim.

Two hub processes can lock the same task and node rows in opposite orders (an operator's
cancel locks the task, then its node; another hub's writer batch locks tasks, then nodes).
PostgreSQL then aborts one of them; a fresh try usually goes through at once.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, connection

RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure
TRIES = 5

F = TypeVar("F", bound=Callable[..., Any])


def retryable(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) in RETRYABLE_SQLSTATES


def retry_deadlocks(fn: F) -> F:
    """Run ``fn`` (a whole transaction) again when it lost a deadlock, a few times. Inside
    an outer transaction nothing is retried: that one's locks would still be held."""

    @functools.wraps(fn)
    def attempt(*args: Any, **kwargs: Any) -> Any:
        for tried in range(1, TRIES + 1):
            try:
                return fn(*args, **kwargs)
            except DatabaseError as exc:
                if tried == TRIES or connection.in_atomic_block or not retryable(exc):
                    raise
                time.sleep(random.uniform(0.005, 0.05) * tried)
        raise AssertionError("unreachable")  # pragma: no cover

    return attempt  # type: ignore[return-value]
