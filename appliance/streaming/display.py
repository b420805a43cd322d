"""The room display (``/display``, full screen, for the TV): the far end's picture.

The box puts the far end's pictures (e.g. a :class:`~appliance.streaming.janus.FarEnd`'s ``frames``, see
:func:`show_far_end`) into a :class:`LatestFrame`; the display page takes them over WebRTC from a shared
encoder of its own (``POST /display/offer``), exactly as the panel takes the room: the same credentials,
the same bound (``[access] max_viewers``) and the same drop of a display that has not connected within
``[access] ice_timeout_s`` (:class:`~appliance.streaming.server.WatchedPeers`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from appliance.config import StreamConfig
from appliance.control.guard import Control, fail, read_json
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import LatestFrame
from appliance.streaming.server import WatchedPeers, check_offer_sdp

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


class Display(WatchedPeers):
    """The display's shared encoder and its viewers (the TV, usually one)."""

    what = "display"

    def __init__(self, frames: LatestFrame, stream: StreamConfig, control: Control) -> None:
        super().__init__()
        self.frames = frames
        self.stream = stream
        self.control = control
        self.video = EncodedVideo(frames, stream)

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "display.html", headers={"Cache-Control": "no-cache"})

    async def offer(self, request: web.Request) -> web.Response:
        access = self.control.access
        who = self.control.require(request, "read", changes_state=True)
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or not isinstance(body.get("type"), str):
            return web.json_response({"error": 'expected JSON {"sdp": "...", "type": "offer"}'}, status=400)
        if body["type"] != "offer":  # checked first: aiortc raises on a type it does not know
            return web.json_response({"error": f'expected an offer, got "{body["type"]}"'}, status=400)
        offer = RTCSessionDescription(sdp=body["sdp"], type="offer")
        problem = check_offer_sdp(offer.sdp, access.max_media_lines)
        if problem is not None:
            return web.json_response({"error": problem}, status=400)
        if len(self.peers) >= access.max_viewers:
            fail(429, "too many displays (access.max_viewers)", headers={"Retry-After": "5"})
        if (refusal := self.refuse_if_closed()) is not None:
            return refusal
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.add(pc)
        self.drop_if_not_connected(pc, access.ice_timeout_s)
        remote = request.remote
        self.drop_when_credentials_end(pc, lambda: self.control.still_valid(who, remote) is not None)

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            log.info("display %s: %s", request.remote, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close_peer(pc)

        try:
            await pc.setRemoteDescription(offer)
            if any(t.kind == "video" for t in pc.getTransceivers()):
                self.video.add_to(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:
            await self.close_peer(pc)
            return web.json_response({"error": f"cannot answer this offer: {e}"}, status=400)
        except BaseException:  # cancelled (the server going away): its ICE sockets must not stay open
            await self.close_peer(pc)
            raise
        if (refusal := await self.refuse_if_closed_meanwhile(pc)) is not None:
            return refusal
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def close(self) -> None:
        self.closed = True
        self.cancel_watchers()
        await asyncio.gather(*(self.close_peer(pc) for pc in list(self.peers)))
        await self.video.close()


def add_display(app: web.Application, frames: LatestFrame, stream: StreamConfig, control: Control) -> Display:
    """Serve ``/display`` and ``POST /display/offer`` (credentials as for ``/offer``) from ``frames`` on
    ``app``; closed on shutdown."""
    display = Display(frames, stream, control)
    app.router.add_get("/display", display.page)
    app.router.add_post("/display/offer", display.offer)

    async def _close(app: web.Application) -> None:
        await display.close()

    app.on_shutdown.append(_close)
    return display


async def show_far_end(pick: Callable[[], LatestFrame | None], display: LatestFrame, poll_s: float = 0.25) -> None:
    """Copy the pictures of the far end ``pick()`` returns (None: nobody) into ``display``, until cancelled.

    E.g. ``pick=lambda: next((f.frames for f in janus_publisher.far_ends.values()), None)``.
    """
    source: LatestFrame | None = None
    seq = 0
    while True:
        current = pick()
        if current is not source:
            source, seq = current, 0
        if source is None:
            await asyncio.sleep(poll_s)
            continue
        try:
            seq, image, t = await asyncio.wait_for(source.get_newer(seq), poll_s)
        except TimeoutError:
            continue
        display.put(image, t)
