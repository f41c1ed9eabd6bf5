"""One live connection per node identity (DESIGN §13), across every hub process.

The node row names the connection holding the identity (its channel) and counts
connections (the epoch). A new connection asks the holder whether it is still there, over
the channel layer: a holder that answers, and heard from its node lately, keeps the identity
and the newcomer is refused. A holder that does not answer (its hub died, its socket is
gone) is replaced: the claim is one conditional update on the epoch, so of two newcomers one
wins. Each hub checks the connections it holds against the database every tick and closes
those whose epoch moved on (another connection took over) or whose token was rotated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from channels.layers import get_channel_layer

from executor_core.node import protocol
from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.services import identity

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
CLAIM_TRIES = 3
ERR_HELD = (
    "node {name!r} already has a live connection to the hub (another process is using "
    "this node's identity); this one is refused until that connection ends"
)
ERR_SUPERSEDED = "a newer connection of node {name!r} took over this one"
ERR_ROTATED = "node {name!r}'s token was rotated: this connection's token is no longer valid"
ERR_REMOVED = "node {name!r} was removed from the hub"


@dataclass(frozen=True)
class Claim:
    """The outcome of a connection's claim: its epoch, or why it was refused."""

    epoch: int = 0
    refusal: str = ""


@dataclass(frozen=True)
class Held:
    name: str
    epoch: int
    token_hash: str


def _process_part(channel: str) -> str:
    # Channel names are "<process part>!<random>": the same part means the same layer
    # instance, so this process can tell at once whether such a channel still exists.
    return channel.partition("!")[0] if "!" in channel else ""


class NodeConnections:
    """The node connections this hub process holds; claims, releases and checks them."""

    def __init__(self, writer: GroupWriter, idle_limit: float, instance: str) -> None:
        self.writer = writer
        self.instance = instance  # this hub process, recorded on the connections it holds
        self.idle_limit = idle_limit  # seconds of silence after which a holder is not live
        self._held: dict[str, Held] = {}  # consumer channel → what it holds

    def holds(self, channel: str, epoch: int) -> bool:
        held = self._held.get(channel)
        return held is not None and held.epoch == epoch

    async def claim(self, name: str, channel: str, token_hash: str) -> Claim:
        for _ in range(CLAIM_TRIES):
            epoch, holder = await self.writer.run(identity.node_connection, name)
            if holder and holder != channel and await self._live(holder, channel):
                return Claim(refusal=ERR_HELD.format(name=name))
            won = await self.writer.run(
                identity.node_claim_connection,
                name=name,
                channel=channel,
                seen_epoch=epoch,
                hub=self.instance,
            )
            if won is not None:
                self._held[channel] = Held(name, won, token_hash)
                if holder and holder != channel:  # silent, but maybe not gone: close it
                    await self._evict(holder, protocol.CLOSE_CONFLICT, ERR_SUPERSEDED, name)
                return Claim(epoch=won)
        return Claim(refusal=ERR_HELD.format(name=name))

    async def release(self, channel: str) -> None:
        held = self._held.pop(channel, None)
        if held is not None:
            await self.writer.run(
                identity.node_release_connection, name=held.name, epoch=held.epoch
            )

    async def _live(self, holder: str, own: str) -> bool:
        """Does the holder answer, having heard from its node within the idle limit?"""
        if holder not in self._held and _process_part(holder) == _process_part(own):
            return False  # a channel of this process that holds nothing: gone
        layer = get_channel_layer()
        reply = await layer.new_channel()
        try:
            await layer.send(holder, {"type": "connection.probe", "reply_to": reply})
            answer = await asyncio.wait_for(layer.receive(reply), PROBE_TIMEOUT)
        except TimeoutError:
            return False
        except Exception:  # a broker hiccup: count the holder as live, the node retries
            log.warning("could not ask %s whether it holds its node", holder, exc_info=True)
            return True
        return float(answer.get("idle", 0.0)) < self.idle_limit

    async def _evict(self, channel: str, code: int, reason: str, name: str) -> None:
        message = {"type": "connection.evict", "code": code, "reason": reason.format(name=name)}
        try:
            await get_channel_layer().send(channel, message)
        except Exception:
            log.warning("could not tell %s to close", channel, exc_info=True)

    async def verify(self) -> None:
        """Close the connections held here that no longer hold their identity."""
        if not self._held:
            return
        held = dict(self._held)
        rows: Mapping[str, tuple[int, str]] = await self.writer.run(
            identity.node_identities, {h.name for h in held.values()}
        )
        for channel, h in held.items():
            row = rows.get(h.name)
            if row is None:
                code, reason = protocol.CLOSE_UNAUTHORIZED, ERR_REMOVED
            elif row[1] != h.token_hash:
                code, reason = protocol.CLOSE_UNAUTHORIZED, ERR_ROTATED
            elif row[0] != h.epoch:
                code, reason = protocol.CLOSE_CONFLICT, ERR_SUPERSEDED
            else:
                continue
            # Forgotten now, not when it closes: it holds nothing any more.
            self._held.pop(channel, None)
            await self.writer.run(identity.node_release_connection, name=h.name, epoch=h.epoch)
            await self._evict(channel, code, reason, h.name)
