"""Encode once, fan out: one video encoder per codec in use, its packets handed to every connection.

The framed picture (:class:`~appliance.streaming.hub.LatestFrame`) is encoded once per codec, off the
event loop (a thread per codec), whatever the number of viewers, and packetized there once for all of them
(:class:`EncodedFrame`). Each connection gets an :class:`EncodedVideoTrack`, whose sender sends the shared
payloads (:mod:`appliance.streaming.fastrtp`; with aiortc's own loop, ``recv()`` gives the ``av.Packet``s and
aiortc packetizes them): no per-viewer encoding.

- Pacing: the next picture is queued in the codec's thread while the last one is encoding (``PIPELINE_PICTURES``),
  so a busy event loop does not leave the encoder idle (in ``roombox bench meeting``, the real box encoded
  22-23 of its 29-30 pictures/s without this, 27-28 with it); an encoder held up once catches up on the
  pictures it missed (``CATCH_UP_PICTURES``).

- Keyframes: any receiver's PLI/FIR (the sender's keyframe request is hooked) forces a keyframe in the
  shared encoder, at most one every ``KEYFRAME_MIN_GAP_S``; a new connection asks for one and forwards
  nothing until it arrives; periodic keyframes every ``[stream] keyframe_interval_s``.
- Bitrate: ``[stream] bitrate_kbps``, lowered to the lowest receiver estimate (REMB), never below
  ``min_bitrate_kbps``. Neither libvpx nor libx264 (through FFmpeg) takes a new bitrate on the fly, so a
  change reopens the encoder (one keyframe); it is done only for a change of more than a quarter, at most
  every ``BITRATE_MIN_GAP_S``.
- Latency: each connection's sender writes the RTP playout-delay extension (``[stream] playout_delay``,
  :mod:`appliance.streaming.playout`) so that Chromium shows frames without holding them in its jitter
  buffer; pictures are converted to yuv420p with OpenCV (a quarter of swscale's CPU). ``EncodedVideo.trace``
  stamps each picture along the way (``roombox bench latency`` reports the steps).
- Codec: the connection's negotiated codec (the first of the answer's, which follows the offer's order)
  picks the encoder: ``VP8`` (libvpx, realtime) or ``H264`` (libx264, zerolatency, constrained baseline).

:class:`VideoEncoder` is the interface an AV1 or hardware encoder would implement next to
:class:`PyAvVideoEncoder`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from appliance.config import StreamConfig
from appliance.streaming import fastrtp
from appliance.streaming.hub import LatestFrame
from appliance.streaming.playout import offer_playout_delay, send_playout_delay

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Packet = av.Packet[Any]  # what an encoder gives: no container stream
else:
    Packet = av.Packet

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
CODECS = ("VP8", "H264")
KEYFRAME_MIN_GAP_S = 0.25  # requests closer than this (many viewers, repeated PLIs) share one keyframe
BITRATE_MIN_GAP_S = 3.0
QUEUE_PACKETS = 10  # per connection; a sender this far behind skips to the next keyframe
_MAX_PTS_STEP_S = 5.0
# an encoder that kept up and was then held up once (one slow encode, a busy machine) encodes the pictures it
# missed in turn when it is at most this many behind the newest (costing a frame's latency, not the picture);
# one that is behind already, or further behind, skips to the newest (a starved encoder: latency stays bounded)
CATCH_UP_PICTURES = 2
PIPELINE_PICTURES = 2  # pictures in the codec's thread at once: the one encoding, the next one queued


class VideoEncoder(ABC):
    """Pictures in (RGB uint8 (h, w, 3), a 90 kHz pts), encoded ``av.Packet``s out (pts in 90 kHz).

    Called from one thread at a time (the codec's encoding thread); need not be thread-safe.
    """

    codec: str  # the RTP codec name: "VP8", "H264"

    @abstractmethod
    def encode(self, image: np.ndarray, pts: int, keyframe: bool = False) -> list[Packet]:
        """Encode one picture; ``keyframe`` forces a complete picture. Returns zero or more packets."""

    @property
    @abstractmethod
    def bitrate(self) -> int:
        """Target bitrate in bits/s."""

    @bitrate.setter
    @abstractmethod
    def bitrate(self, bps: int) -> None: ...


class PyAvVideoEncoder(VideoEncoder):
    """libvpx (VP8, realtime, no lag) or libx264 (H.264 constrained baseline, zerolatency) through PyAV."""

    LIBRARIES = {"VP8": "libvpx", "H264": "libx264"}

    def __init__(self, codec: str, stream: StreamConfig, threads: int = 2) -> None:
        if codec not in self.LIBRARIES:
            raise ValueError(f"no encoder for codec {codec!r}: choose from {', '.join(self.LIBRARIES)}")
        self.codec = codec
        self._stream = stream
        self._threads = threads
        self._bitrate = stream.bitrate_kbps * 1000
        self._ctx: Any = None
        self._size = (0, 0)

    @property
    def bitrate(self) -> int:
        return self._bitrate

    @bitrate.setter
    def bitrate(self, bps: int) -> None:
        if bps != self._bitrate:
            self._bitrate = int(bps)
            self._ctx = None  # reopened (with a keyframe) at the next picture

    def _open(self, width: int, height: int) -> Any:
        s = self._stream
        ctx: Any = av.CodecContext.create(self.LIBRARIES[self.codec], "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = Fraction(s.fps).limit_denominator(1001)
        ctx.bit_rate = self._bitrate
        ctx.gop_size = max(1, round(s.keyframe_interval_s * s.fps))
        # libvpx's VP8 threads busy-wait for each other: on a shared 2-core machine two threads cost 3-7x
        # the CPU of one (measured); x264's sliced threads do not
        ctx.thread_count = 1 if self.codec == "VP8" else self._threads
        if self.codec == "VP8":
            ctx.qmin, ctx.qmax = 4, 56
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": str(s.vp8_cpu_used),
                "lag-in-frames": "0",
                "static-thresh": "1",
                "undershoot-pct": "95",
                "overshoot-pct": "15",
                "bufsize": str(self._bitrate),
                "error-resilient": "1",
                "auto-alt-ref": "0",
            }
        else:
            ctx.profile = "Constrained Baseline"
            ctx.options = {
                "preset": s.x264_preset,
                "tune": "zerolatency",
                "forced-idr": "1",
                "level": "31" if width * height <= 1280 * 720 else "40",
                "maxrate": str(self._bitrate),
                "bufsize": str(self._bitrate),
            }
        self._size = (width, height)
        return ctx

    @staticmethod
    def to_frame(image: np.ndarray) -> av.VideoFrame:
        """RGB (even width and height) to a yuv420p frame (BT.601, limited range, as FFmpeg's swscale
        converts it): OpenCV's conversion takes a quarter of swscale's CPU (2.1 against 7.8 ms at 720p,
        measured), time that every picture spends before the encoder."""
        yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), dtype=np.uint8)
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")

    def encode(self, image: np.ndarray, pts: int, keyframe: bool = False) -> list[Packet]:
        h, w = image.shape[:2]
        if self._ctx is None or self._size != (w, h):
            self._ctx = self._open(w, h)
            keyframe = True
        frame = self.to_frame(image)
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets: list[Packet] = list(self._ctx.encode(frame))
        for p in packets:
            p.time_base = VIDEO_TIME_BASE
        return packets


class EncodedFrame:
    """One encoded picture as every connection sends it: the packet, its RTP payloads (packetized once, for all
    connections) and its RTP timestamp (90 kHz, before each connection's random offset)."""

    __slots__ = ("packet", "payloads", "timestamp")

    def __init__(self, packet: Packet, payloads: list[bytes], timestamp: int) -> None:
        self.packet = packet
        self.payloads = payloads
        self.timestamp = timestamp


def packetizer(codec: str) -> Any:
    """aiortc's RTP packetizer of ``codec`` (its encoder class; only ``pack`` is used: nothing is encoded)."""
    if codec == "VP8":
        from aiortc.codecs.vpx import Vp8Encoder

        return Vp8Encoder()
    from aiortc.codecs.h264 import H264Encoder

    return H264Encoder()


EncoderFactory = Callable[[str, StreamConfig], VideoEncoder]
Tracer = Callable[[str, int, float], None]
"""``(stage, pts, t)``: a picture (by its 90 kHz pts) reached a stage of the path, at ``time.time()`` ``t``;
see :attr:`EncodedVideo.trace`."""


def negotiated_codec(transceiver: RTCRtpTransceiver) -> str:
    """The codec a transceiver's sender sends with: the first non-RTX one of the negotiated list.

    aiortc's sender uses ``parameters.codecs[0]``, which is ``transceiver._codecs[0]`` (no public API).
    """
    for c in transceiver._codecs:
        if not is_rtx(c):
            return str(c.mimeType.split("/", 1)[1]).upper()
    raise ValueError("no video codec was negotiated")


class _CodecLine:
    """One codec's shared encoder, its thread and its subscribers (the connections' tracks)."""

    def __init__(self, fanout: EncodedVideo, codec: str) -> None:
        self.fanout = fanout
        self.codec = codec
        self.encoder = fanout.make_encoder(codec, fanout.stream)
        self._bitrate = self.encoder.bitrate  # as the loop last asked for (the thread applies it)
        self.packer = packetizer(codec)  # the RTP payloads, made once for all connections
        self.subscribers: set[EncodedVideoTrack] = set()
        self.task: asyncio.Task[None] | None = None
        # one thread for the codec's life: a cancelled run's last encode finishes before the next run's first
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.keyframe_wanted = True
        self.last_keyframe = -1e9
        self.last_bitrate_change = -1e9
        self.frames_encoded = 0
        self.keyframes = 0
        self.resent = 0
        self.skipped_pictures = 0  # pictures of the source never encoded (the encoder too far behind)
        self.failures = 0  # encodes that raised (each ended the connections of the time)
        self.bytes = 0
        self.encode_s = 0.0
        self._seq = 0
        self._t0: float | None = None
        self._last_pts: int | None = None

    def request_keyframe(self) -> None:
        self.keyframe_wanted = True

    def _take_keyframe(self, now: float) -> bool:
        due = now - self.last_keyframe >= self.fanout.stream.keyframe_interval_s
        if due or (self.keyframe_wanted and now - self.last_keyframe >= KEYFRAME_MIN_GAP_S):
            self.keyframe_wanted = False
            return True
        return False

    def _pts_for(self, t: float) -> int:
        """The 90 kHz pts of a picture taken at ``t``: strictly after the last one encoded (libvpx refuses a
        pts before its first, and a reopened encoder's first may be a keep-alive's)."""
        ticks = max(1, round(VIDEO_CLOCK / self.fanout.stream.fps))
        if self._last_pts is None:
            self._t0 = t
            return 0
        if self._t0 is not None:
            pts = round((t - self._t0) * VIDEO_CLOCK)
            if 0 < pts - self._last_pts <= _MAX_PTS_STEP_S * VIDEO_CLOCK:
                return pts
        # the first picture after keep-alives, or the producer's clock jumped (or went back): re-anchor
        pts = self._last_pts + ticks
        self._t0 = t - pts / VIDEO_CLOCK
        return pts

    def _bitrate_change(self, now: float) -> int | None:
        """The new bitrate (bits/s) the encoder should take with the next picture, or None: no change."""
        s = self.fanout.stream
        estimates = [t.estimate_bps for t in self.subscribers if t.estimate_bps is not None]
        target = s.bitrate_kbps * 1000
        if estimates:
            target = max(s.min_bitrate_kbps * 1000, min(target, min(estimates)))
        current = self._bitrate
        if abs(target - current) > 0.25 * current and now - self.last_bitrate_change >= self.fanout.bitrate_min_gap_s:
            # debug: it follows the viewers' estimates every few seconds while they come and go (a soak: every 4 s
            # in the journal); /metrics has roombox_stream_bitrate_bps
            log.debug("%s encoder: bitrate %d -> %d kbit/s", self.codec, current // 1000, target // 1000)
            self._bitrate = target
            self.last_bitrate_change = now
            return target
        return None

    def _encode(
        self, image: np.ndarray, pts: int, keyframe: bool, bitrate: int | None
    ) -> tuple[list[EncodedFrame], float]:
        """In the codec's thread: encode and packetize one picture; returns the frames and the seconds it took."""
        started = time.perf_counter()
        if bitrate is not None:
            self.encoder.bitrate = bitrate
        packets = self.encoder.encode(image, pts, keyframe)
        out = [EncodedFrame(p, *self.packer.pack(p)) for p in packets]
        return out, time.perf_counter() - started

    def _encoded(self, pts: int, now: float, done: asyncio.Future[tuple[list[EncodedFrame], float]]) -> None:
        """On the loop, when a picture is encoded: hand its frames to every connection."""
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:  # its connections end (their connectors reconnect); the next one gets a new encoder
            log.error("%s encoder failed: %s", self.codec, error, exc_info=error)
            self.failures += 1
            self.encoder = self.fanout.make_encoder(self.codec, self.fanout.stream)
            self._bitrate = self.encoder.bitrate
            self.keyframe_wanted = True
            for track in list(self.subscribers):
                track.stop()
            return
        frames, seconds = done.result()
        self.encode_s += seconds
        self.frames_encoded += 1
        if self.fanout.trace is not None:
            self.fanout.trace("encoded", pts, time.time())
        for frame in frames:
            self.bytes += frame.packet.size
            if frame.packet.is_keyframe:
                self.keyframes += 1
                self.last_keyframe = max(self.last_keyframe, now)
            for track in list(self.subscribers):
                track._deliver(frame)

    def start(self) -> None:
        if self.executor is None:
            self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"roombox-encode-{self.codec}")
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"encode-{self.codec}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        frames, stream = self.fanout.frames, self.fanout.stream
        keepalive = max(2.0 / stream.fps, 0.25)
        executor = self.executor
        first = current = True
        # encoding is pipelined: the next picture is queued in the codec's thread while the last one is still
        # encoding, so the thread never waits for this loop to come round (a busy loop would cost pictures);
        # the frames are handed out (``_encoded``) as each encode finishes
        inflight: list[asyncio.Future[tuple[list[EncodedFrame], float]]] = []
        try:
            while self.subscribers:
                try:
                    behind = CATCH_UP_PICTURES if current else 0
                    seq, image, t = await asyncio.wait_for(frames.get_next(self._seq, behind), keepalive)
                    current = seq == frames.seq
                    if first:  # this run's first picture: what came before it was nobody's
                        first = False
                    else:
                        self.skipped_pictures += seq - self._seq - 1
                    self._seq = seq
                    pts = self._pts_for(t)
                    if self.fanout.trace is not None:
                        self.fanout.trace("picked", pts, t)
                except TimeoutError:  # the source stalls: send the last picture again, so the stream lives
                    latest = frames.latest()
                    image = latest[1] if latest else np.zeros((stream.height, stream.width, 3), np.uint8)
                    pts = 0 if self._last_pts is None else self._last_pts + max(1, round(VIDEO_CLOCK / stream.fps))
                    self.resent += 1
                self._last_pts = pts
                now = time.monotonic()
                bitrate = self._bitrate_change(now)
                keyframe = self._take_keyframe(now)
                if keyframe:
                    self.last_keyframe = now
                while len(inflight) >= PIPELINE_PICTURES:
                    await asyncio.wait(inflight[:1])
                job = loop.run_in_executor(executor, self._encode, image, pts, keyframe, bitrate)
                job.add_done_callback(functools.partial(self._encoded, pts, now))
                job.add_done_callback(inflight.remove)
                inflight.append(job)
        except Exception:
            log.exception("%s encoder failed", self.codec)
            for track in list(self.subscribers):
                track.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "viewers": len(self.subscribers),
            "frames_encoded": self.frames_encoded,
            "keyframes": self.keyframes,
            "resent": self.resent,
            "skipped_pictures": self.skipped_pictures,
            "failures": self.failures,
            "bytes": self.bytes,
            "bitrate_kbps": self.encoder.bitrate // 1000,
            "encode_ms_mean": 1000 * self.encode_s / self.frames_encoded if self.frames_encoded else None,
        }


class EncodedVideo:
    """The framed picture encoded once per codec in use, handed to every connection's track.

    Lives on the box's event loop. ``track()`` makes a connection's track; ``add_to(pc)`` adds one to an
    aiortc peer connection with its keyframe and bitrate hooks. An encoder runs only while some
    connection uses its codec. ``close()`` stops everything.
    """

    def __init__(
        self,
        frames: LatestFrame,
        stream: StreamConfig,
        make_encoder: EncoderFactory = PyAvVideoEncoder,
        bitrate_min_gap_s: float = BITRATE_MIN_GAP_S,
    ) -> None:
        self.frames = frames
        self.stream = stream
        self.make_encoder = make_encoder
        self.bitrate_min_gap_s = bitrate_min_gap_s
        self._lines: dict[str, _CodecLine] = {}
        # where the time goes (``roombox bench stream``): called with ("picked", pts, the picture's own t) when
        # an encoder takes a picture, then ("encoded" | "handed" | "sent", pts, time.time()) when it is
        # encoded, taken by a connection's sender, and sent (the sender asks for the next one)
        self.trace: Tracer | None = None
        if stream.playout_delay:
            offer_playout_delay()  # before any offer or answer is made

    def line(self, codec: str) -> _CodecLine:
        codec = codec.upper()
        if codec not in CODECS:
            raise ValueError(f"unsupported video codec {codec!r}: the box encodes {', '.join(CODECS)}")
        if codec not in self._lines:
            self._lines[codec] = _CodecLine(self, codec)
        return self._lines[codec]

    def track(self, codec: str | None = None) -> EncodedVideoTrack:
        """A track for one connection; ``codec`` None: the one negotiated (see :meth:`EncodedVideoTrack.attach`)."""
        return EncodedVideoTrack(self, codec)

    def add_to(self, pc: Any, direction: str | None = None) -> EncodedVideoTrack:
        """Add a shared-encoder video track to ``pc`` (an ``RTCPeerConnection``) and hook its sender.

        Answering: call after ``setRemoteDescription`` (the offer's video transceiver takes the track).
        Offering: call before ``createOffer`` with ``direction="sendonly"`` (a new transceiver whose codec
        preferences are ``[stream] codecs``).
        """
        track = self.track()
        if direction is None:
            sender = pc.addTrack(track)
            transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        else:
            transceiver = pc.addTransceiver(track, direction=direction)
            caps = RTCRtpSender.getCapabilities("video").codecs
            prefs = [c for name in self.stream.codecs for c in caps if c.mimeType.upper() == f"VIDEO/{name}"]
            transceiver.setCodecPreferences(prefs + [c for c in caps if is_rtx(c)])
        track.attach(transceiver)
        return track

    def stats(self) -> dict[str, dict[str, Any]]:
        return {codec: line.stats() for codec, line in self._lines.items()}

    @property
    def connections(self) -> int:
        return sum(len(line.subscribers) for line in self._lines.values())

    async def close(self) -> None:
        """Stop every connection's track and every encoder."""
        for line in self._lines.values():
            for track in list(line.subscribers):
                track.stop()
        tasks = [line.task for line in self._lines.values() if line.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for line in self._lines.values():
            if line.executor is not None:
                line.executor.shutdown(wait=False)
                line.executor = None


class EncodedVideoTrack(MediaStreamTrack):
    """One connection's video: the shared encoder's packets (``av.Packet``, 90 kHz pts) for its codec.

    Starts forwarding at a keyframe (asked for when the track first pulls). A connection that falls
    ``QUEUE_PACKETS`` behind loses its queue and waits for the next keyframe (counted in ``skipped``).
    """

    kind = "video"

    def __init__(self, fanout: EncodedVideo, codec: str | None = None) -> None:
        super().__init__()
        self._fanout = fanout
        self._codec = codec
        self._transceiver: RTCRtpTransceiver | None = None
        self._line: _CodecLine | None = None
        self._queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue()
        self._waiting_for_keyframe = True
        self.estimate_bps: int | None = None
        self.last_rtcp = 0.0  # time.monotonic() of the last RTCP from this connection's receiver
        self.first_sent: float | None = None  # time.monotonic() when the first packet was handed to the sender
        self.sent = 0
        self.skipped = 0
        self.keyframe_requests = 0
        self.fast_rtp = False  # whether the sender sends the shared payloads (fastrtp), or aiortc packetizes
        self._last_pts: int | None = None  # traced only

    @property
    def codec(self) -> str | None:
        return self._line.codec if self._line is not None else self._codec

    def attach(self, transceiver: RTCRtpTransceiver) -> None:
        """Hook the transceiver's sender: its receiver's PLI/FIR and REMB reach the shared encoder."""
        self._transceiver = transceiver
        sender: Any = transceiver.sender
        original = sender._handle_rtcp_packet

        async def handle_rtcp(packet: Any) -> None:
            self.last_rtcp = time.monotonic()
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    pass
                else:
                    if sender._ssrc in ssrcs:
                        self.estimate_bps = int(bitrate)
            await original(packet)

        sender._handle_rtcp_packet = handle_rtcp
        sender._send_keyframe = self.request_keyframe  # called on PLI and FIR
        self.fast_rtp = fastrtp.install(sender, self)  # the shared payloads, less work per packet
        stream = self._fanout.stream
        if stream.playout_delay:
            send_playout_delay(sender, 0, stream.playout_delay_max_ms)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        if self._line is not None:
            self._line.request_keyframe()

    def _subscribe(self) -> _CodecLine:
        codec = self._codec
        if codec is None:
            if self._transceiver is None:
                raise MediaStreamError("no codec: give one, or attach() the track to a transceiver")
            codec = negotiated_codec(self._transceiver)
        line = self._fanout.line(codec)
        line.subscribers.add(self)
        line.request_keyframe()
        line.start()
        return line

    def _deliver(self, frame: EncodedFrame) -> None:
        keyframe = frame.packet.is_keyframe
        if self._waiting_for_keyframe:
            if not keyframe:
                return
            self._waiting_for_keyframe = False
        if self._queue.qsize() >= QUEUE_PACKETS:
            while not self._queue.empty():
                self._queue.get_nowait()
            self.skipped += 1
            self._waiting_for_keyframe = True
            if self._line is not None:
                self._line.request_keyframe()
            if not keyframe:
                return
            self._waiting_for_keyframe = False
        self._queue.put_nowait(frame)

    async def recv(self) -> Packet:
        """The next encoded packet for this connection (aiortc's sender packetizes it)."""
        return (await self.next_frame()).packet

    async def next_frame(self) -> EncodedFrame:
        """The next encoded frame for this connection, with its shared RTP payloads (:mod:`fastrtp`)."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._line is None:
            self._line = self._subscribe()
        trace = self._fanout.trace
        if trace is not None and self._last_pts is not None:
            trace("sent", self._last_pts, time.time())
        frame = await self._queue.get()
        if frame is None or self.readyState != "live":
            raise MediaStreamError
        if self.first_sent is None:
            self.first_sent = time.monotonic()
        self.sent += 1
        pts = frame.packet.pts
        if trace is not None and pts is not None:
            self._last_pts = pts
            trace("handed", pts, time.time())
        return frame

    def stop(self) -> None:
        super().stop()
        if self._line is not None:
            self._line.subscribers.discard(self)
            if not self._line.subscribers and self._line.task is not None:
                self._line.task.cancel()
        self._queue.put_nowait(None)
