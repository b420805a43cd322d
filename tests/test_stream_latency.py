"""Where the room's picture spends its time on the way to Chromium: the playout-delay header extension that
lets Chromium show frames at once, and the 720p30 room through a real Janus, read back by Chromium with the
bench's bar code (the figures are printed; the targets are `roombox bench stream`'s)."""

from __future__ import annotations

import asyncio
import os
import re
import struct
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpHeaderExtensionParameters, RTCRtpParameters, rtp

from appliance.bench.stream import CODE_BITS, CODE_ROWS, MEASURE_JS, CodedRoom, video_rows
from appliance.config import JanusConfig, StreamConfig
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import AudioHub, LatestFrame
from appliance.streaming.ice import offer_loopback
from appliance.streaming.janus import JanusPublisher
from appliance.streaming.playout import PLAYOUT_DELAY_URI, PlayoutDelayMap, playout_delay_bytes
from tests import test_janus
from tests.janus_fixture import ROOM, Janus, wait_for
from tests.test_janus import SUBSCRIBE_JS
from tests.test_streaming import LoopThread, run_async

W, H = 1280, 720


def test_playout_delay_bytes_and_the_map_writes_them_on_each_packet() -> None:
    assert playout_delay_bytes(0, 0) == b"\x00\x00\x00"
    assert playout_delay_bytes(100, 1000) == bytes([0x00, 0xA0, 0x64])  # 10 and 100 units of 10 ms
    assert playout_delay_bytes(0, 5) == b"\x00\x00\x01"  # rounded up
    with pytest.raises(ValueError, match="min <= max"):
        playout_delay_bytes(50, 10)
    m = PlayoutDelayMap(0, 0)
    params = RTCRtpParameters(
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
            RTCRtpHeaderExtensionParameters(id=9, uri=PLAYOUT_DELAY_URI),
        ]
    )
    values = rtp.HeaderExtensions(mid="0")
    assert rtp.unpack_header_extensions(*PlayoutDelayMap(0, 0).set(values)) == []  # not negotiated: not sent
    m.configure(params)
    assert rtp.unpack_header_extensions(*m.set(values)) == [(1, b"0"), (9, b"\x00\x00\x00")]
    packet = rtp.RtpPacket(payload_type=96, sequence_number=1, timestamp=0, payload=b"x")
    packet.extensions.mid = "0"
    data = packet.serialize(m)
    assert data[12:14] == b"\xbe\xde" and bytes([0x92, 0, 0, 0]) in data[16:]  # one-byte header: id 9, 3 bytes
    assert rtp.RtpPacket.parse(data).payload == b"x"


def _extensions(data: bytes) -> list[tuple[int, bytes]]:
    """The header extensions of one (decrypted) RTP packet."""
    cc, has_extension = data[0] & 0x0F, data[0] & 0x10
    if not has_extension:
        return []
    pos = 12 + 4 * cc
    profile, length = struct.unpack_from("!HH", data, pos)
    return rtp.unpack_header_extensions(profile, data[pos + 4 : pos + 4 + 4 * length])


@pytest.mark.parametrize("enabled", [True, False])
def test_the_box_video_carries_the_playout_delay_to_a_real_peer(enabled: bool) -> None:
    """Two aiortc peers on 127.0.0.1: the viewer offers, the box answers with its shared encoder's track; the
    packets the viewer decrypts carry min 0 / max ``[stream] playout_delay_max_ms`` (none when turned off)."""

    async def main() -> None:
        offer_loopback()
        frames = LatestFrame()
        stream = StreamConfig(width=320, height=180, codecs=("VP8",), playout_delay=enabled, playout_delay_max_ms=100)
        video = EncodedVideo(frames, stream)
        viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        box = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        viewer.addTransceiver("video", direction="recvonly")
        await viewer.setLocalDescription(await viewer.createOffer())
        await box.setRemoteDescription(viewer.localDescription)
        video.add_to(box)
        await box.setLocalDescription(await box.createAnswer())
        await viewer.setRemoteDescription(box.localDescription)
        ids = [int(m) for m in re.findall(rf"a=extmap:(\d+) {PLAYOUT_DELAY_URI}", box.localDescription.sdp)]
        if enabled:
            assert len(ids) == 1, box.localDescription.sdp
        transport: Any = viewer.getTransceivers()[0].receiver.transport
        original, seen = transport._handle_rtp_data, []

        async def handle(data: bytes, arrival_time_ms: int) -> None:
            seen.append(_extensions(data))
            await original(data, arrival_time_ms)

        transport._handle_rtp_data = handle
        try:
            for i in range(300):
                frames.put(np.full((180, 320, 3), i % 250, np.uint8), i / 30)
                await asyncio.sleep(1 / 30)
                if len(seen) >= 20:
                    break
            assert len(seen) >= 20, f"{len(seen)} RTP packets reached the viewer"
            delays = [value for exts in seen for x_id, value in exts if x_id in ids]
            if enabled:
                assert len(delays) == len(seen) and set(delays) == {b"\x00\x00\x0a"}  # 0 and 10 x 10 ms
            else:
                assert delays == []
        finally:
            await viewer.close()
            await box.close()
            await video.close()

    run_async(main())


janus = test_janus.janus  # the same Janus fixture (one Janus for this module's tests)


class _CodedBox:
    """On a loop thread: the simulated room at 720p30 with bar codes, encoded once, published into Janus."""

    def __init__(self, janus: Janus, codec: str) -> None:
        self.lt = LoopThread()
        self.lt.run(self._start(janus, codec), timeout=60)

    async def _start(self, janus: Janus, codec: str) -> None:
        offer_loopback()  # Janus is on 127.0.0.1
        frames = LatestFrame()
        self.video = EncodedVideo(frames, StreamConfig(width=W, height=H, codecs=(codec,)))
        self.room = CodedRoom(frames, W, H)
        self.video.trace = self.room.on_stage
        self.feeding = asyncio.create_task(self.room.feed())
        cfg = JanusConfig(url=janus.url, room=ROOM, display="roombox", retry_min_s=0.5, retry_max_s=2.0)
        self.pub = JanusPublisher.from_config(cfg, self.video, AudioHub())
        await self.pub.start()
        await wait_for(lambda: self.pub.state == "connected", 30, "connected")

    async def _stop(self) -> None:
        await self.pub.stop()
        self.feeding.cancel()
        await asyncio.gather(self.feeding, return_exceptions=True)
        await self.video.close()

    def close(self) -> None:
        self.lt.run(self._stop())
        self.lt.close()


# test_janus's subscriber, measuring each shown frame (the bench's MEASURE_JS) instead of counting
THROUGH_JANUS_JS = SUBSCRIBE_JS.replace("async ([room, seconds]) =>", "async ([room, seconds, bits, rows]) =>").replace(
    "  const waitUntil = Date.now() + 20000;",
    "  const measured = await window.measureVideo(pc, video, seconds, bits, rows);\n"
    '  measured.playoutDelayOffered = offer.sdp.includes("playout-delay");\n'
    "  polling = false;\n"
    '  await post(`${base}/${s}`, {janus: "destroy"});\n'
    "  await keepalive;\n"
    "  return measured;\n"
    "  const waitUntil = Date.now() + 20000;",
)


@pytest.mark.e2e
def test_chromium_through_janus_decodes_the_720p_room_and_reads_its_codes(janus: Janus, chromium: Any) -> None:
    assert "window.measureVideo(pc, video" in THROUGH_JANUS_JS  # test_janus's page still has this shape
    box = _CodedBox(janus, "VP8")
    page = chromium.new_page()
    try:
        page.goto(f"http://127.0.0.1:{janus.port}/janus/info")
        page.evaluate(MEASURE_JS)
        r = page.evaluate(THROUGH_JANUS_JS, [ROOM, 5, CODE_BITS, CODE_ROWS])
    finally:
        page.close()
        box.close()
    assert "error" not in r, r
    rows = video_rows("Chromium through Janus, VP8", r, box.room.trace)
    print("\n" + "\n".join(f"{v:8.1f} {unit:9s} {name}" for name, v, unit in rows))
    print(f"Janus offered Chromium the playout-delay extension: {r['playoutDelayOffered']}; load {os.getloadavg()}")
    assert (r["width"], r["height"]) == (W, H)
    assert r["framesDecoded"] > 0
    # the codes Chromium read are pictures the box drew: the picture came through whole and in order
    drawn = {code for code, stage, _ in box.room.trace if stage == "captured"}
    read = [f["code"] for f in r["frames"]]
    assert len(read) > 10
    assert sum(code in drawn for code in read) >= 0.9 * len(read)
    assert any(name.endswith("glass-to-glass latency, median") for name, _, _ in rows)
