"""Kubernetes label syntax for node labels and node selectors.

A key is an optional DNS-subdomain prefix (``example.com/``) and a name of at most 63
characters; a value is empty or at most 63 characters. Both start and end with an
alphanumeric character and may hold ``-``, ``_`` and ``.`` inside.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

MAX_NAME = 63
MAX_PREFIX = 253
MAX_LABELS = 64  # per node and per selector: every path that takes labels holds to it


class LabelError(ValueError):
    """A label key, value or selector string that breaks Kubernetes label syntax."""


def label_key_error(key: object) -> str | None:
    """Return why ``key`` is not a valid label key, or None when it is."""
    if not isinstance(key, str) or not key:
        return "label key must be a non-empty string"
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > MAX_PREFIX:
            return f"label key {key!r}: prefix must be 1-{MAX_PREFIX} characters"
        if not all(_DNS_LABEL.match(part) for part in prefix.split(".")):
            return f"label key {key!r}: prefix must be a lowercase DNS subdomain"
    if len(name) > MAX_NAME or not _NAME.match(name):
        return (
            f"label key {key!r}: name must be 1-{MAX_NAME} characters, alphanumeric at "
            "both ends, with only '-', '_' or '.' inside"
        )
    return None


def label_value_error(key: str, value: object) -> str | None:
    """Return why ``value`` is not a valid value for ``key``, or None when it is."""
    if not isinstance(value, str):
        return f"label {key!r}: value must be a string"
    if value and (len(value) > MAX_NAME or not _NAME.match(value)):
        return (
            f"label {key!r}: value {value!r} must be empty or 1-{MAX_NAME} characters, "
            "alphanumeric at both ends, with only '-', '_' or '.' inside"
        )
    return None


def node_name_error(name: object) -> str | None:
    """Why ``name`` is not a valid node name (a lowercase DNS label), or None."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > MAX_NAME or not _DNS_LABEL.match(name):
        return (
            "must be a DNS label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return None


def label_count_error(labels: Mapping[str, object], *, what: str = "labels") -> str | None:
    """Why ``labels`` holds too many entries, or None."""
    if len(labels) > MAX_LABELS:
        return f"{what} must hold at most {MAX_LABELS} labels (got {len(labels)})"
    return None


MAX_NAMES = 64


def names_error(values: object, *, what: str = "names", limit: int = MAX_NAMES) -> str | None:
    """Why ``values`` is not a list of at most ``limit`` names (capabilities, models), each
    written like a non-empty label value, or None when it is."""
    if isinstance(values, str | bytes) or not isinstance(values, list | tuple | set | frozenset):
        return f"{what} must be a list of names"
    if len(values) > limit:
        return f"{what} must hold at most {limit} names (got {len(values)})"
    for value in values:
        if not isinstance(value, str) or not value:
            return f"{what}: every name must be a non-empty string"
        if len(value) > MAX_NAME or not _NAME.match(value):
            return (
                f"{what}: {value!r} must be 1-{MAX_NAME} characters, alphanumeric at both "
                "ends, with only '-', '_' or '.' inside"
            )
    return None


def validate_labels(labels: object, *, what: str = "labels") -> dict[str, str]:
    """Check a mapping of labels and return it as a plain dict; raise LabelError otherwise."""
    if not isinstance(labels, Mapping):
        raise LabelError(f"{what} must be a mapping of label keys to values")
    if problem := label_count_error(labels, what=what):
        raise LabelError(problem)
    for key, value in labels.items():
        problem = label_key_error(key) or label_value_error(key, value)
        if problem:
            raise LabelError(problem)
    return dict(labels)


def parse_labels(text: str, *, separators: str = ",\n") -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (or one ``k=v`` per line) into a validated dict.

    Blank items are ignored; an item without ``=`` or a repeated key is an error.
    """
    labels: dict[str, str] = {}
    items = re.split("[" + re.escape(separators) + "]", text or "")
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise LabelError(f"{item!r} is not of the form key=value")
        if key in labels:
            raise LabelError(f"label {key!r} is given twice")
        labels[key] = value
    return validate_labels(labels)


def format_labels(labels: Mapping[str, str], *, separator: str = ",") -> str:
    """The inverse of :func:`parse_labels`, keys sorted."""
    return separator.join(f"{k}={labels[k]}" for k in sorted(labels))
