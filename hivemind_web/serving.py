"""How daphne serves the hub: the options ``hive``, the tests and the README's production
command share. Daphne drops a WebSocket message past its own limit without a word; set above
the protocol's frame limit, it lets the hub answer an oversized node frame with an error
frame instead."""

from __future__ import annotations

from executor_core.node.protocol import TRANSPORT_MAX_BYTES

DAPHNE_LIMITS = (
    "--websocket-max-message-size",
    str(TRANSPORT_MAX_BYTES),
    "--websocket-max-frame-size",
    str(TRANSPORT_MAX_BYTES),
)
