"""A far end reports (RTCP) once media reaches it, so its silence counts from the first picture sent.

The shared encoder for a codec starts when the first connection pulls, and on a loaded box its first keyframe
took seconds: the first session to a real far end was dropped as silent ("no RTCP for 4.1 s") before the box had
sent it anything, and the second attempt connected fine. Here the late first picture is made without load (an
encoder whose first picture sleeps in the codec's thread), against a real receive-only aiortc far end behind a
WHIP endpoint on 127.0.0.1. A box that never sends a picture still ends the session, saying so, and a far end
that never reports is still reported ``media_timeout_s`` after the first picture.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from appliance.config import StreamConfig, WhipConfig
from appliance.streaming import connector
from appliance.streaming.encoder import EncodedVideo, PyAvVideoEncoder
from appliance.streaming.hub import LatestFrame
from appliance.streaming.ice import offer_loopback
from appliance.streaming.whip import WhipPublisher
from tests.janus_fixture import wait_for
from tests.test_peer_close import FPS, H, Ingest, W, _feed
from tests.test_streaming import run_async

FIRST_PICTURE_LATE_S = 5.0  # beyond the media timeout below
MEDIA_TIMEOUT_S = 3.0  # aiortc's receiver reports every 0.5-1.5 s once media reaches it


class _SlowFirstPicture(PyAvVideoEncoder):
    """libvpx whose first picture takes FIRST_PICTURE_LATE_S, as a loaded box's first keyframe did."""

    def encode(self, image: np.ndarray, pts: int, keyframe: bool = False) -> list[Any]:
        if not getattr(self, "slept", False):
            self.slept = True
            time.sleep(FIRST_PICTURE_LATE_S)  # in the codec's thread: the loop and the far end go on
        return super().encode(image, pts, keyframe)


class _NoKeyframes(PyAvVideoEncoder):
    """libvpx that loses every keyframe: a connection waits for one for ever and sends nothing."""

    def encode(self, image: np.ndarray, pts: int, keyframe: bool = False) -> list[Any]:
        return [p for p in super().encode(image, pts, keyframe) if not p.is_keyframe]


class Session:
    """The box's WHIP connector publishing a fed picture to a receive-only aiortc far end."""

    def __init__(self, make_encoder: type[PyAvVideoEncoder]) -> None:
        offer_loopback()
        self.frames = LatestFrame()
        self.video = EncodedVideo(self.frames, StreamConfig(width=W, height=H, fps=FPS, codecs=("VP8",)), make_encoder)
        self.ingest = Ingest()
        self.states: list[tuple[float, str, str]] = []
        self.pub: WhipPublisher | None = None
        self._feeder = asyncio.create_task(_feed(self.frames))

    async def start(self) -> WhipPublisher:
        url = await self.ingest.start()
        cfg = WhipConfig(url=url, media_timeout_s=MEDIA_TIMEOUT_S, retry_min_s=0.5)
        self.pub = WhipPublisher.from_config(
            cfg, self.video, None, on_state=lambda s, d: self.states.append((time.monotonic(), s, d))
        )
        await self.pub.start()
        await wait_for(lambda: self.pub is not None and self.pub.state == "connected", 30, "connected")
        return self.pub

    def when(self, state: str) -> float:
        return next(t for t, s, _ in self.states if s == state)

    async def close(self) -> None:
        if self.pub is not None:
            await self.pub.stop()
        await self.ingest.stop()
        self._feeder.cancel()
        await asyncio.gather(self._feeder, return_exceptions=True)
        await self.video.close()


def test_a_first_picture_later_than_the_media_timeout_is_not_taken_for_a_silent_far_end() -> None:
    async def main() -> None:
        session = Session(_SlowFirstPicture)
        try:
            pub = await session.start()
            track = pub.video_track
            assert track is not None
            connected = session.when("connected")
            # past the first picture and the far end's first reports; the old clock ran out at MEDIA_TIMEOUT_S
            while time.monotonic() < connected + FIRST_PICTURE_LATE_S + MEDIA_TIMEOUT_S + 1.0:
                assert pub.state == "connected", session.states
                await asyncio.sleep(0.1)
            assert track.first_sent is not None and track.last_rtcp > track.first_sent
            print(
                f"\nfirst picture sent {track.first_sent - connected:.1f} s after connecting; "
                f"states: {[(s, d) for _, s, d in session.states]}"
            )
            assert track.first_sent - connected > MEDIA_TIMEOUT_S
            assert pub.connections == 1 and [s for _, s, _ in session.states] == ["connecting", "connected"]
        finally:
            await session.close()

    run_async(main())


def test_a_box_that_never_sends_a_picture_ends_the_session_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connector, "FIRST_PICTURE_S", 2.0, raising=False)  # (raising: the old code had none)

    async def main() -> None:
        session = Session(_NoKeyframes)
        try:
            pub = await session.start()
            await wait_for(lambda: pub.state == "retrying", 15, "retrying")
            after = session.when("retrying") - session.when("connected")
            print(f"\nreported {after:.1f} s after connecting: {pub.detail}")
            assert pub.detail.startswith("whip: no picture was sent within 2 s; next attempt in"), pub.detail
            assert 2.0 <= after <= 2.0 + 1.5
        finally:
            await session.close()

    run_async(main())


def test_a_far_end_that_never_reports_is_lost_the_media_timeout_after_the_first_picture() -> None:
    """The far end's receiver stays silent (its RTCP goes nowhere) from the start: reported MEDIA_TIMEOUT_S
    after the first picture went out, not later (a 10 s grace for the first report was too late)."""

    async def main() -> None:
        session = Session(_SlowFirstPicture)
        try:
            pub = await session.start()
            track = pub.video_track
            assert track is not None

            async def mute(*args: Any) -> None:
                pass

            for peer in session.ingest.peers:
                for transceiver in peer.getTransceivers():
                    receiver: Any = transceiver.receiver
                    receiver._send_rtcp = mute
            await wait_for(lambda: pub.state == "retrying", 20, "the loss reported")
            assert track.first_sent is not None and track.last_rtcp == 0.0
            after = session.when("retrying") - track.first_sent
            print(f"\nreported {after:.1f} s after the first picture: {pub.detail}")
            assert "whip: the far end went silent (no RTCP for" in pub.detail
            assert MEDIA_TIMEOUT_S <= after <= MEDIA_TIMEOUT_S + 1.5
        finally:
            await session.close()

    run_async(main())
