"""aiortc tracks that viewers pull: the framed picture from :class:`LatestFrame` and the room's sound
from :class:`AudioHub`. Each connection gets its own audio track (Opus, encoded by aiortc per connection).
The video of the panel, WHIP and Janus goes through :mod:`appliance.streaming.encoder` (encoded once);
:class:`FramedVideoTrack` (raw frames, aiortc encodes per viewer) remains as the benchmark's peer.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from appliance.config import StreamConfig
from appliance.streaming.hub import AudioHub, LatestFrame
from common.clock import SYSTEM_CLOCK, Clock

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
AUDIO_RATE = 48_000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
_MAX_PTS_STEP_S = 5.0  # a bigger jump in the producer's t re-anchors the timeline


class FramedVideoTrack(MediaStreamTrack):
    """The newest framed picture, as ``av.VideoFrame`` (rgb24) with 90 kHz pts taken from the frame's ``t``.

    ``recv`` waits for a picture newer than the last one sent. If none comes within two frame
    intervals it sends the last picture again (black before the first) so the stream stays alive;
    such repeats are counted in ``resent``. Pictures the producer replaced before this track got to
    them are counted by the :class:`LatestFrame` (``dropped``), not here.
    """

    kind = "video"

    def __init__(self, frames: LatestFrame, stream: StreamConfig) -> None:
        super().__init__()
        self._frames = frames
        self._stream = stream
        self._interval = 1.0 / stream.fps
        self._ticks = max(1, round(self._interval * VIDEO_CLOCK))
        self._seq = 0
        self._t0: float | None = None
        self._last_pts: int | None = None
        self.sent = 0
        self.resent = 0

    def _pts_for(self, t: float) -> int:
        if self._last_pts is None:
            self._t0 = t
            return 0
        if self._t0 is not None:
            pts = round((t - self._t0) * VIDEO_CLOCK)
            if 0 < pts - self._last_pts <= _MAX_PTS_STEP_S * VIDEO_CLOCK:
                return pts
        # first real picture after black keep-alives, or the producer's clock jumped: re-anchor
        pts = self._last_pts + self._ticks
        self._t0 = t - pts / VIDEO_CLOCK
        return pts

    async def recv(self) -> av.VideoFrame:
        """The next frame to encode."""
        if self.readyState != "live":
            raise MediaStreamError
        try:
            seq, image, t = await asyncio.wait_for(self._frames.get_newer(self._seq), 2 * self._interval)
            self._seq = seq
            pts = self._pts_for(t)
        except TimeoutError:
            latest = self._frames.latest()
            if latest is None:
                image = np.zeros((self._stream.height, self._stream.width, 3), np.uint8)
            else:
                image = latest[1]
            pts = 0 if self._last_pts is None else self._last_pts + self._ticks
            self.resent += 1
        if self.readyState != "live":
            raise MediaStreamError
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        self._last_pts = pts
        self.sent += 1
        return frame


class RoomAudioTrack(MediaStreamTrack):
    """The room's sound as 20 ms ``av.AudioFrame``s, s16 mono at 48 kHz, resampled from the hub's rate.

    Paced by its own timestamps on ``clock`` (the box's capture clock), like aiortc's ``AudioStreamTrack``.
    A small jitter buffer (``prebuffer_ms``) is filled before sound starts; when it runs dry the track sends silence
    (counted in ``starved``) and fills it again. Sound beyond ``max_buffer_ms`` is thrown away,
    oldest first (samples counted in ``overflow_samples``), so latency stays bounded.
    """

    kind = "audio"

    def __init__(
        self, audio: AudioHub, prebuffer_ms: float = 60.0, max_buffer_ms: float = 200.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__()
        self._audio = audio
        self._clock = clock
        self._cursor = audio.seq  # start with what comes next, not the hub's backlog
        self._prebuffer = int(AUDIO_RATE * prebuffer_ms / 1000.0)
        self._max_buffer = max(self._prebuffer + AUDIO_SAMPLES, int(AUDIO_RATE * max_buffer_ms / 1000.0))
        self._buf = np.zeros(0, np.int16)
        self._playing = False
        self._resampler: av.AudioResampler | None = None
        self._resampler_rate = 0
        self._start = 0.0
        self._timestamp: int | None = None
        self.starved = 0
        self.overflow_samples = 0

    def _to_48k(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        if rate == AUDIO_RATE:
            return pcm
        if self._resampler is None or rate != self._resampler_rate:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
            self._resampler_rate = rate
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    def _pull(self) -> None:
        self._cursor, chunks = self._audio.read(self._cursor)
        parts = [self._buf] + [self._to_48k(c.samples, c.sample_rate) for c in chunks]
        self._buf = np.concatenate(parts) if len(parts) > 1 else self._buf
        if len(self._buf) > self._max_buffer:
            cut = len(self._buf) - self._prebuffer
            self.overflow_samples += cut
            self._buf = self._buf[cut:]

    def _next_block(self) -> np.ndarray:
        if not self._playing and len(self._buf) >= max(self._prebuffer, AUDIO_SAMPLES):
            self._playing = True
        if self._playing and len(self._buf) >= AUDIO_SAMPLES:
            block, self._buf = self._buf[:AUDIO_SAMPLES], self._buf[AUDIO_SAMPLES:]
            return block
        if self._playing:
            self.starved += 1
            self._playing = False
        return np.zeros(AUDIO_SAMPLES, np.int16)

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of sound (or silence)."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._timestamp is None:
            self._start = self._clock.now()
            self._timestamp = 0
        else:
            self._timestamp += AUDIO_SAMPLES
            await self._clock.sleep_until(self._start + self._timestamp / AUDIO_RATE)
        self._pull()
        block = self._next_block()
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._timestamp
        frame.time_base = AUDIO_TIME_BASE
        return frame
