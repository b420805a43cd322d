"""Peer connections are closed to the end, whenever their closing is interrupted.

A connected aiortc ``RTCPeerConnection`` whose ``close()`` is cancelled halfway (a ``stop()`` landing while
a connector tears a session down, a watcher cancelled at shutdown) keeps its ICE socket on 127.0.0.1 open
for good: the loop ends, and the garbage collector later finds an unclosed datagram transport (a
``ResourceWarning`` at the end of the whole run). Here the interruption is swept over the first event-loop
steps of the close, against a real WHIP ingest (an aiortc peer behind a tiny HTTP endpoint) and a real
viewer of the panel server, and every socket the box opened must be closed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from appliance.config import StreamConfig, WhipConfig
from appliance.control import Auth, Control
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import EventBus, LatestFrame
from appliance.streaming.ice import offer_loopback
from appliance.streaming.server import PARTS, create_app, run_server
from appliance.streaming.whip import WhipPublisher
from tests.janus_fixture import wait_for
from tests.test_metrics_health import _viewer
from tests.test_streaming import run_async

W, H, FPS = 160, 90, 15.0
# event-loop steps into the teardown at which it is interrupted: with aiohttp 3.14 and aiortc 1.16 the old code
# left the socket open at steps 10-15 of the WHIP teardown (its DELETE first) and 1-6 of a viewer's close
WHIP_STEPS = range(0, 24, 3)
VIEWER_STEPS = range(0, 10, 2)


def open_udp_ports() -> set[int]:
    """The local ports of this process's open UDP sockets (/proc)."""
    inodes = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    ports = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            ports.add(inodes[target[8:-1]])
    return ports


def candidate_ports(sdp: str) -> set[int]:
    return {int(p) for p in re.findall(r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host", sdp)}


async def _feed(frames: LatestFrame) -> None:
    t = 0.0
    while True:
        frames.put(np.full((H, W, 3), int(t * 100) % 250, np.uint8), t)
        t += 1 / FPS
        await asyncio.sleep(1 / FPS)


async def _steps(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class Ingest:
    """A WHIP ingest on 127.0.0.1: each POSTed offer answered by a receive-only aiortc peer."""

    def __init__(self) -> None:
        self.peers: list[RTCPeerConnection] = []
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/whip", self._post)
        app.router.add_delete("/resource/{n}", self._delete)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/whip"

    async def _post(self, request: web.Request) -> web.Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.append(pc)
        pc.on("track", lambda track: None)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/resource/{len(self.peers)}"},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def stop(self) -> None:
        for pc in self.peers:
            await pc.close()
        if self.runner is not None:
            await self.runner.cleanup()


def _sweep(steps: range, once: Callable[[LatestFrame, int], Awaitable[set[int]]], what: str) -> None:
    """``once(frames, n)`` interrupts a close ``n`` loop steps in and returns the ports left open: none may be."""

    async def main() -> list[tuple[int, set[int]]]:
        frames = LatestFrame()
        feeder = asyncio.create_task(_feed(frames))
        try:
            return [(n, await once(frames, n)) for n in steps]
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    left = run_async(main())
    print(f"\n{what}, by the loop step the close was interrupted at: {left}")
    assert all(not ports for _, ports in left), left


async def _whip_stopped_in_its_teardown(frames: LatestFrame, steps: int) -> set[int]:
    offer_loopback()
    video = EncodedVideo(frames, StreamConfig(width=W, height=H, fps=FPS, codecs=("VP8",)))
    ingest = Ingest()
    url = await ingest.start()
    try:
        pub = WhipPublisher.from_config(WhipConfig(url=url, retry_min_s=0.5), video, None)
        await pub.start()
        await wait_for(lambda: pub.state == "connected", 30, "connected")
        assert pub.pc is not None and pub._task is not None
        ports = candidate_ports(pub.pc.localDescription.sdp)
        assert ports and ports <= open_udp_ports()
        # the session ends (as on a lost far end) and stop() lands while it is being torn down
        pub._task.cancel()
        await asyncio.gather(pub._task, return_exceptions=True)
        teardown = asyncio.create_task(pub._teardown())
        await _steps(steps)
        teardown.cancel()
        await asyncio.gather(teardown, return_exceptions=True)
        await pub.stop()
        return ports & open_udp_ports()
    finally:
        await ingest.stop()
        await video.close()


def test_a_stop_landing_while_the_whip_connector_closes_its_session_leaves_no_socket_open() -> None:
    _sweep(WHIP_STEPS, _whip_stopped_in_its_teardown, "the publisher's ICE ports still open after stop()")


async def _viewer_close_cancelled(frames: LatestFrame, steps: int) -> set[int]:
    control = Control(Auth.in_memory())
    token = control.auth.tokens.create("read", "a viewer")[1]
    app = create_app(frames, None, EventBus(), StreamConfig(width=W, height=H, fps=FPS), control=control)
    parts: Any = app[PARTS]
    async with run_server(app, "127.0.0.1", 0) as server:
        viewer = await _viewer(f"http://127.0.0.1:{server.port}", [], token)
        try:
            await wait_for(lambda: viewer.connectionState == "connected", 30, "connected")
            (pc,) = parts.peers
            await wait_for(lambda: pc.connectionState == "connected", 30, "connected")
            ports = candidate_ports(pc.localDescription.sdp)
            assert ports and ports <= open_udp_ports()
            closing = asyncio.create_task(parts.close_peer(pc))
            await _steps(steps)
            closing.cancel()
            await asyncio.gather(closing, return_exceptions=True)
        finally:
            await server.stop()
            await viewer.close()
    return ports & open_udp_ports()


def test_a_viewer_close_cancelled_halfway_is_finished_by_the_server_shutdown() -> None:
    """E.g. the watcher that drops a viewer never connected, cancelled by the shutdown while closing it."""
    _sweep(VIEWER_STEPS, _viewer_close_cancelled, "the server's ICE ports still open after its shutdown")


def test_offers_to_the_panel_and_to_the_display_of_a_box_shutting_down_are_refused_with_503() -> None:
    async def main() -> list[tuple[int, str]]:
        control = Control(Auth.in_memory())
        token = control.auth.tokens.create("read", "a viewer")[1]
        stream = StreamConfig(width=W, height=H, fps=FPS)
        app = create_app(LatestFrame(), None, EventBus(), stream, control=control, display=LatestFrame())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        got = []
        try:
            async with run_server(app, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:
                await app.shutdown()  # the box shutting down, its server still listening
                for path in ("/offer", "/display/offer"):
                    url = f"http://127.0.0.1:{server.port}{path}"
                    async with http.post(url, headers={"Authorization": f"Bearer {token}"}, json=offer) as r:
                        got.append((r.status, (await r.json())["error"]))
                assert not app[PARTS].peers
        finally:
            await pc.close()
        return got

    assert run_async(main()) == [(503, "the box is shutting down")] * 2
