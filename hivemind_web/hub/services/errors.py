"""Errors the service layer raises; the API maps them to 400 / 404 / 409."""

from __future__ import annotations


class ServiceValidationError(Exception):
    """Bad input: ``errors`` maps each field to its message(s). Nothing was stored."""

    def __init__(self, errors: dict[str, str | list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class TransitionError(Exception):
    """The requested transition is illegal in the current state (HTTP 409)."""


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class AtCapacity(Exception):
    """The local executor's queue is full: the submission is refused, not dropped (HTTP 503)."""


class IdentityConflict(Exception):
    """The name belongs to another node identity (HTTP 409)."""
