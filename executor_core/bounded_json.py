"""JSON decoding with a nesting limit, for everything the hub reads from the network.

``json.loads`` recurses once per nested bracket: 100,000 of them raise ``RecursionError``
(not ``ValueError``), which escapes ordinary error handling and takes a request or a socket
handler down. ``loads`` turns that, and any nesting past ``MAX_DEPTH``, into ``TooDeep``, a
``ValueError`` with a message a client can act on. No message of the hub's protocols or API
nests deeper than a few levels.
"""

from __future__ import annotations

import functools
import json
from typing import Any

MAX_DEPTH = 32
ERR_TOO_DEEP = "JSON nests deeper than {limit} levels"


class TooDeep(ValueError):
    """The document nests arrays and objects deeper than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(ERR_TOO_DEEP.format(limit=limit))
        self.limit = limit


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH, **options: Any) -> Any:
    """``json.loads`` that raises ``TooDeep`` (a ``ValueError``) past ``max_depth`` levels."""
    try:
        if not options:
            value = json.loads(text)
        else:
            # json.loads builds a decoder per call when given options; one per set of options
            # is kept instead (every node frame and API body comes through here).
            if isinstance(text, bytes | bytearray):
                text = text.decode(json.detect_encoding(text), "surrogatepass")
            value = _decoder(tuple(sorted(options.items()))).decode(text)
    except RecursionError:
        raise TooDeep(max_depth) from None
    check_depth(value, text, max_depth=max_depth)
    return value


@functools.lru_cache(maxsize=8)
def _decoder(options: tuple[tuple[str, Any], ...]) -> json.JSONDecoder:
    return json.JSONDecoder(**dict(options))


def check_depth(value: Any, text: str | bytes = "", *, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` when ``value`` nests deeper than ``max_depth`` containers.

    ``text``, the document ``value`` came from, lets the common case skip the walk: fewer
    opening brackets than the limit cannot nest past it.
    """
    if text:
        opening = (b"[", b"{") if isinstance(text, bytes) else ("[", "{")
        if text.count(opening[0]) + text.count(opening[1]) <= max_depth:  # type: ignore[arg-type]
            return
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise TooDeep(max_depth)
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
