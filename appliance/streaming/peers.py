"""The viewers' peer connections of one endpoint (the panel's ``/offer``, the display's ``/display/offer``).

Both close a peer the same way and refuse offers the same way once the box shuts down: :class:`Peers` is
that one implementation, which their handler state subclasses.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiortc import RTCPeerConnection

SHUTTING_DOWN = "the box is shutting down"


class Peers:
    """An endpoint's peer connections (``peers``) and whether it has shut down (``closed``: no more viewers)."""

    def __init__(self) -> None:
        self.peers: set[RTCPeerConnection] = set()
        self.closed = False

    async def close_peer(self, pc: RTCPeerConnection) -> None:
        # shielded, and counted in peers until closed: a caller cancelled halfway (a watcher at shutdown) must
        # not leave it half-closed with its ICE sockets open, and shutdown waits for closes under way
        await asyncio.shield(pc.close())
        self.peers.discard(pc)

    def refuse_if_closed(self) -> web.Response | None:
        """The 503 an offer gets once the endpoint has shut down; None while it serves."""
        return web.json_response({"error": SHUTTING_DOWN}, status=503) if self.closed else None

    async def refuse_if_closed_meanwhile(self, pc: RTCPeerConnection) -> web.Response | None:
        """After ``pc``'s offer is answered: when the endpoint shut down meanwhile, ``pc`` closed and the 503
        (left to the offer's handler, not closed under its negotiation); None while it serves."""
        refusal = self.refuse_if_closed()
        if refusal is not None:
            await self.close_peer(pc)
        return refusal
