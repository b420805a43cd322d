"""Encode once, fan out: the shared encoders on their own, through aiortc's real sender, and in Chromium."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

from appliance.config import StreamConfig
from appliance.streaming.encoder import EncodedVideo, PyAvVideoEncoder, negotiated_codec
from appliance.streaming.hub import LatestFrame
from appliance.streaming.ice import offer_loopback
from tests.test_streaming import Box, run_async

W, H = 320, 180


def _picture(i: int, w: int = W, h: int = H) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = 40
    img[:, :, 2] = 200  # blue
    x = (i * 8) % (w - 40)
    img[40:120, x : x + 40] = 255
    return img


def _decode(codec: str, packets: list[Any]) -> list[np.ndarray]:
    ctx: Any = av.CodecContext.create({"VP8": "libvpx", "H264": "h264"}[codec], "r")
    out = []
    for p in packets:
        for frame in ctx.decode(av.Packet(bytes(p))):
            out.append(frame.to_ndarray(format="rgb24"))
    return out


async def _pull(track: Any, n: int) -> list[Any]:
    return [await asyncio.wait_for(track.recv(), 5.0) for _ in range(n)]


def test_one_encoder_per_codec_feeds_every_track_from_a_keyframe() -> None:
    async def main() -> None:
        frames = LatestFrame()
        video = EncodedVideo(frames, StreamConfig(width=W, height=H, fps=30.0))
        vp8 = [video.track("VP8") for _ in range(3)]
        h264 = video.track("H264")
        late = video.track("VP8")
        got: dict[int, list[Any]] = {}

        async def feed(first: int, n: int) -> None:
            for i in range(first, first + n):
                frames.put(_picture(i), 10.0 + i / 30)
                await asyncio.sleep(1 / 30)

        pulls = [asyncio.create_task(_pull(t, 8)) for t in (*vp8, h264)]
        await asyncio.sleep(0.05)  # a track's first pull subscribes it; let them all pull before pictures come
        await feed(0, 12)
        for t, task in zip((*vp8, h264), pulls, strict=True):
            got[id(t)] = await task
        late_pull = asyncio.create_task(_pull(late, 4))  # joins mid-stream: must start at a keyframe
        await feed(12, 16)
        late_packets = await late_pull

        stats = video.stats()
        assert set(stats) == {"VP8", "H264"}
        # one VP8 encoder for four tracks: about one encode per picture, not four
        assert 12 <= stats["VP8"]["frames_encoded"] <= 28 + 8, stats
        assert stats["VP8"]["viewers"] == 4 and stats["H264"]["viewers"] == 1
        first = got[id(vp8[0])]
        for t in vp8[1:]:
            assert [bytes(p) for p in got[id(t)]] == [bytes(p) for p in first]  # the very same packets
        for packets in (*got.values(), late_packets):
            assert packets[0].is_keyframe
            assert all(p.time_base == Fraction(1, 90000) for p in packets)
            pts = [int(p.pts) for p in packets]
            assert pts == sorted(pts) and len(set(pts)) == len(pts)
        assert late_packets[0].pts > first[-1].pts
        for codec, packets in (("VP8", first), ("H264", got[id(h264)]), ("VP8", late_packets)):
            pictures = _decode(codec, packets)
            assert len(pictures) == len(packets) and pictures[0].shape == (H, W, 3)
            blue = pictures[-1][150:, :, 2].mean()
            assert blue > 150, (codec, blue)  # the blue background survived encode and decode
        await video.close()
        assert all(t.readyState == "ended" for t in (*vp8, h264, late))

    run_async(main())


def test_receivers_pli_forces_a_shared_keyframe_and_remb_lowers_the_bitrate() -> None:
    """Through aiortc's own RTCRtpSender RTCP handling (a real peer connection, no network needed)."""

    async def main() -> None:
        frames = LatestFrame()
        stream = StreamConfig(
            width=W, height=H, fps=30.0, bitrate_kbps=2000, min_bitrate_kbps=300, keyframe_interval_s=600.0
        )
        video = EncodedVideo(frames, stream, bitrate_min_gap_s=0.3)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        track = video.add_to(pc, direction="sendonly")
        sender = pc.getTransceivers()[0].sender
        await pc.setLocalDescription(await pc.createOffer())
        assert "VP8" in pc.localDescription.sdp and negotiated_codec(pc.getTransceivers()[0]) == "VP8"
        track._codec = "VP8"  # no answer will come: pull directly, as the sender would
        i = 0

        async def step() -> Any:
            nonlocal i
            frames.put(_picture(i), i / 30)
            i += 1
            return await asyncio.wait_for(track.recv(), 5.0)

        async def bitrate_becomes(kbps: int) -> None:  # taken by the encoder with a following picture
            for _ in range(50):
                if video.stats()["VP8"]["bitrate_kbps"] == kbps:
                    return
                await step()
            raise AssertionError(f"bitrate stayed {video.stats()['VP8']['bitrate_kbps']} kbit/s, not {kbps}")

        pull = asyncio.create_task(track.recv())
        await asyncio.sleep(0.01)
        frames.put(_picture(i), 0.0)
        i += 1
        assert (await asyncio.wait_for(pull, 5.0)).is_keyframe
        await asyncio.sleep(0.3)  # past the least gap between keyframes
        assert not any([(await step()).is_keyframe for _ in range(3)])
        await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1234, media_ssrc=sender._ssrc))
        assert track.keyframe_requests == 1
        # the next picture is a keyframe (a keep-alive of the 0.3 s pause may still be queued before it)
        assert any([(await step()).is_keyframe for _ in range(2)])

        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1234, media_ssrc=0, fci=pack_remb_fci(1_000_000, [sender._ssrc]))
        await sender._handle_rtcp_packet(remb)
        assert track.estimate_bps == 1_000_000
        await step()
        await bitrate_becomes(1000)
        tiny = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1234, media_ssrc=0, fci=pack_remb_fci(10_000, [sender._ssrc]))
        await sender._handle_rtcp_packet(tiny)
        await asyncio.sleep(0.35)
        await step()
        await bitrate_becomes(300)  # never below [stream] min_bitrate_kbps
        await video.close()
        await pc.close()

    run_async(main())


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_connections_send_the_shared_payloads_and_resend_what_a_receiver_lost(codec: str) -> None:
    """A real aiortc viewer over loopback decodes what the box's RTP loop (``fastrtp``: payloads packetized once
    per frame for all connections) sends, and a packet asked for again (NACK) goes out again as RTX."""

    async def main() -> None:
        offer_loopback()
        frames = LatestFrame()
        video = EncodedVideo(frames, StreamConfig(width=W, height=H, fps=30.0, codecs=(codec,)))
        box, viewer = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration())
        track = video.add_to(box, direction="sendonly")
        sender = box.getTransceivers()[0].sender
        got: asyncio.Queue[Any] = asyncio.Queue()
        viewer.on("track", got.put_nowait)
        await box.setLocalDescription(await box.createOffer())
        await viewer.setRemoteDescription(box.localDescription)
        await viewer.setLocalDescription(await viewer.createAnswer())
        await box.setRemoteDescription(viewer.localDescription)
        sent: list[bytes] = []
        dtls = sender.transport
        send_rtp = dtls._send_rtp

        async def record(data: bytes) -> None:  # what goes to SRTP, as written by the box's RTP loop
            sent.append(data)
            await send_rtp(data)

        dtls._send_rtp = record  # type: ignore[method-assign]

        async def feed() -> None:
            for i in range(100_000):
                frames.put(_picture(i), i / 30)
                await asyncio.sleep(1 / 30)

        feeder = asyncio.create_task(feed())
        try:
            remote = await asyncio.wait_for(got.get(), 20.0)
            decoded = [await asyncio.wait_for(remote.recv(), 20.0) for _ in range(10)]
            assert track.fast_rtp and track.sent >= 10
            image = decoded[-1].to_ndarray(format="rgb24")
            assert image.shape == (H, W, 3)
            r, _, b = image[150:170, 10:30].reshape(-1, 3).mean(axis=0)
            assert b > 150 and r < 90  # the blue picture
            payload_type = box.getTransceivers()[0]._codecs[0].payloadType  # the negotiated codec's
            media = [d for d in sent if d[1] & 0x7F == payload_type]
            seqs = [int.from_bytes(d[2:4], "big") for d in media]
            assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))  # one sequence, no gaps
            assert all(d[0] == 0x90 for d in media)  # RTP version 2 with header extensions (mid, send time)
            before = len(sent)
            await sender._retransmit(seqs[-2])  # a NACK for an earlier packet
            rtx = sent[before:]
            assert len(rtx) == 1 and rtx[0][1] & 0x7F != media[-2][1] & 0x7F  # sent on the RTX payload type
            tail = media[-2][-20:]  # the lost packet's sequence number and payload, again
            assert rtx[0].endswith(tail) and seqs[-2].to_bytes(2, "big") in rtx[0]
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            await box.close()
            await viewer.close()
            await video.close()

    run_async(main())


def test_pictures_after_keep_alives_get_a_later_pts() -> None:
    """The source's first picture after the keep-alives sent while it was silent (a camera still starting) goes
    after them: a pts back at 0 made libvpx refuse every picture once a bitrate change had reopened it on a
    keep-alive ("pts is smaller than initial pts": the shared encoder died)."""
    line = EncodedVideo(LatestFrame(), StreamConfig(width=W, height=H, fps=30.0)).line("VP8")
    line._last_pts = 6000  # two keep-alives sent (0, then 3000 in a reopened encoder, then 6000)
    pts = [line._pts_for(t) for t in (100.0, 100.1)]
    assert pts == [9000, 18000]
    line._last_pts = pts[-1]
    assert line._pts_for(99.0) == 21000  # the producer's clock went back: still later


def test_unknown_codec_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="AV2"):
        PyAvVideoEncoder("AV2", StreamConfig())
    with pytest.raises(ValueError, match="VP9"):
        EncodedVideo(LatestFrame(), StreamConfig()).line("VP9")


# ---------- Chromium: several connections, two codecs, one encoder each ----------

VIEWERS_JS = """
async ([codecs, seconds, token]) => {
  await fetch("/api/session", {method: "POST", headers: {"Content-Type": "application/json"},
                               body: JSON.stringify({token})});  // a session cookie for the offers
  const conns = [];
  async function open(codec) {
    const pc = new RTCPeerConnection({iceServers: []});
    const tr = pc.addTransceiver("video", {direction: "recvonly"});
    const caps = RTCRtpReceiver.getCapabilities("video").codecs;
    tr.setCodecPreferences(caps.filter(c => c.mimeType === "video/" + codec)
                               .concat(caps.filter(c => c.mimeType !== "video/" + codec)));
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(r => { if (pc.iceGatheringState === "complete") r();
                             else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
    const res = await fetch("/offer", {method: "POST", headers: {"Content-Type": "application/json"},
                                       body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
    await pc.setRemoteDescription(await res.json());
    return pc;
  }
  async function summary(pc) {
    const stats = await pc.getStats();
    for (const r of stats.values()) if (r.type === "inbound-rtp" && r.kind === "video") {
      return {codec: r.codecId && stats.get(r.codecId) ? stats.get(r.codecId).mimeType : null,
              framesDecoded: r.framesDecoded || 0, frameWidth: r.frameWidth, keyFramesDecoded: r.keyFramesDecoded,
              pliCount: r.pliCount};
    }
    return {framesDecoded: 0};
  }
  for (const c of codecs) {
    conns.push(await open(c));
    const until = Date.now() + 15000;  // the next joins once this one decodes: it needs a keyframe
    while ((await summary(conns[conns.length - 1])).framesDecoded < 5 && Date.now() < until)
      await new Promise(r => setTimeout(r, 100));
  }
  const before = await Promise.all(conns.map(summary));
  const t0 = performance.now();
  await new Promise(r => setTimeout(r, seconds * 1000));
  const after = await Promise.all(conns.map(summary));
  const dt = (performance.now() - t0) / 1000;
  conns.forEach(pc => pc.close());
  return after.map((a, i) => ({...a, fps: (a.framesDecoded - before[i].framesDecoded) / dt}));
}
"""


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    b = Box()
    try:
        yield b
    finally:
        b.close()


@pytest.mark.e2e
def test_chromium_viewers_share_one_encoder_per_codec(box: Box, chromium: Any) -> None:
    page = chromium.new_page()
    try:
        page.goto(box.url + "/healthz")
        before = box.get_json("/api/state")["stream"]
        started = time.monotonic()
        result = page.evaluate(VIEWERS_JS, [["VP8", "H264", "VP8"], 3, box.read_token])
        elapsed = time.monotonic() - started
        after = box.get_json("/api/state")["stream"]
        print(f"\nviewers: {result}\nencoders: {after['encoders']}")
        assert [r["codec"] for r in result] == ["video/VP8", "video/H264", "video/VP8"]
        for r in result:
            assert r["frameWidth"] == 1280 and r["framesDecoded"] > 10
        published = after["frames_published"] - before["frames_published"]
        vp8 = after["encoders"]["VP8"]["frames_encoded"] - before.get("encoders", {}).get("VP8", {}).get(
            "frames_encoded", 0
        )
        # two VP8 viewers, one VP8 encoder: at most one encode per picture (plus keep-alives)
        assert vp8 <= published + elapsed * 4 + 2, (vp8, published)
    finally:
        page.close()
    deadline = time.monotonic() + 10
    while box.get_json("/api/state")["stream"]["viewers"]:
        assert time.monotonic() < deadline, "the box kept closed connections"
        time.sleep(0.1)
