"""``roombox bench stream``: what encoding and fanning out the framed room costs.

- **encode**: frames encoded per second (one thread, as fast as it goes) and CPU per 30 frames/s stream,
  for each codec at 1280x720 and 1920x1080, on pictures of the simulated room. Peer: aiortc's own
  encoder (what each viewer used to cost) on the same pictures, in the same run.
- **viewers**: the CPU of a box process (panel server, shared encoder, a 720p30 feed of the simulated
  room's pictures, pre-rendered) with 1, 4 and 10 aiortc viewers on 127.0.0.1 (in this process, not
  decoding: they only count what arrives). Peer: the same box with aiortc encoding per viewer.
- **Chromium** (without ``--quick``; alone: ``roombox bench latency``): one headless Chromium viewer of the
  720p30 panel stream: frames decoded per second (``getStats()`` framesDecoded over the window, and
  framesPerSecond), and glass-to-glass latency: the box draws its clock into each picture as a bar code,
  the page reads it back from each presented video frame (``requestVideoFrameCallback``) and compares
  with the same clock (the page's ``performance.timeOrigin + expectedDisplayTime``, wall clock in ms).
  Where the time goes: the box traces each picture (``EncodedVideo.trace``: taken by the encoder,
  encoded, taken by the sender, sent), Chromium gives each frame's receive time and processing
  duration, and its jitter-buffer and decode totals; the median of each step is a row. Peer: the same
  box with the settings before the latency work (``BEFORE``), in the same run. The machine's load
  average is a row: it is shared, and a starved encoder shows as a long encode step.

The box runs as a child process, ``python -m appliance.bench.stream --box MODE CODEC W H FPS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from appliance.config import AccessConfig, StreamConfig
from common.errors import RoomboxError

Row = tuple[str, float, str]
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 30.0


def room_pictures(n: int, width: int, height: int) -> list[np.ndarray]:
    """``n`` consecutive pictures (30 frames/s) of the simulated room's default scenario, scaled to size."""
    from drivers.simroom.scenario import builtin_scenario, load_scenario
    from drivers.simroom.video import RoomRenderer

    renderer = RoomRenderer(load_scenario(builtin_scenario("default")))
    out = []
    for i in range(n):
        image = renderer.render_frame(5.0 + i / FPS)
        if image.shape[:2] != (height, width):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            image = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
        out.append(np.ascontiguousarray(image))
    return out


# ---------- encode speed ----------


def _encode_figures(
    codec: str, size: str, pictures: list[np.ndarray], encode: Callable[[np.ndarray, int], Any], who: str
) -> list[Row]:
    encode(pictures[0], 0)  # open and a keyframe
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, image in enumerate(pictures[1:], 1):
        encode(image, i * 3000)
    n = len(pictures) - 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return [
        (f"{who} {codec} {size}: frames encoded per second", n / wall, "frames/s"),
        (f"{who} {codec} {size}: CPU of a 30 frames/s stream", cpu / n * FPS, "cores"),
    ]


def bench_encode(quick: bool) -> list[Row]:
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.codecs.vpx import Vp8Encoder

    from appliance.streaming.encoder import VIDEO_TIME_BASE, PyAvVideoEncoder

    rows: list[Row] = []
    n = 31 if quick else 91
    for size, (w, h) in SIZES.items():
        pictures = room_pictures(n, w, h)
        stream = StreamConfig(width=w, height=h, fps=FPS)
        for codec in ("VP8", "H264"):
            ours = PyAvVideoEncoder(codec, stream)
            rows += _encode_figures(codec, size, pictures, ours.encode, "shared encoder")
            peer: Any = Vp8Encoder() if codec == "VP8" else H264Encoder()
            peer.target_bitrate = stream.bitrate_kbps * 1000

            def peer_encode(image: np.ndarray, pts: int, peer: Any = peer) -> Any:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
                return peer.encode(frame)

            rows += _encode_figures(codec, size, pictures, peer_encode, "peer: aiortc's")
    return rows


# ---------- the box as a child process, and viewers ----------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _serve_box(mode: str, codec: str, width: int, height: int, fps: float) -> None:
    """The child: a panel server on 127.0.0.1 fed the room at ``fps``; prints its port; runs until stdin closes,
    then prints where each picture's time went (``{"trace": [[code, stage, wall s], ...]}``).

    ``mode`` "shared": the box's encoders; "before": the same with the settings before the latency work
    (``BEFORE``); "per-viewer": aiortc encodes for each viewer (the old way).
    Each picture carries a bar code of the wall clock (ms) in its top rows, for the latency reading.
    """
    from appliance.control import Auth, Control
    from appliance.streaming.encoder import EncodedVideo, EncodedVideoTrack, PyAvVideoEncoder
    from appliance.streaming.hub import EventBus, LatestFrame
    from appliance.streaming.server import create_app, run_server
    from appliance.streaming.tracks import FramedVideoTrack

    before = BEFORE if mode == "before" else {}
    stream = StreamConfig(width=width, height=height, fps=fps, codecs=(codec,), **before)
    frames = LatestFrame()

    class PerViewer(EncodedVideo):
        def add_to(self, pc: Any, direction: str | None = None) -> EncodedVideoTrack:
            pc.addTrack(FramedVideoTrack(frames, stream))
            return EncodedVideoTrack(self, codec)  # unused: aiortc encodes this connection's frames itself

    class BeforeEncoder(PyAvVideoEncoder):
        @staticmethod
        def to_frame(image: np.ndarray) -> av.VideoFrame:  # swscale's conversion, as before
            return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")

    if mode == "per-viewer":
        video: EncodedVideo = PerViewer(frames, stream)
    else:
        video = EncodedVideo(frames, stream, BeforeEncoder if mode == "before" else PyAvVideoEncoder)
    room = CodedRoom(frames, width, height, fps)
    video.trace = room.on_stage
    control = Control(Auth.in_memory(), AccessConfig(max_viewers=16))  # the bench connects 10
    token = control.auth.tokens.create("read", "bench viewers", allowed_from=["127.0.0.1"])[1]
    app = create_app(frames, None, EventBus(), stream, video=video, control=control)
    server = await run_server(app, "127.0.0.1", 0)
    print(json.dumps({"port": server.port, "token": token}), flush=True)
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    feeding = asyncio.create_task(room.feed())
    await stdin_closed
    feeding.cancel()
    await asyncio.gather(feeding, return_exceptions=True)
    await server.stop()
    await video.close()
    print(json.dumps({"trace": room.trace}), flush=True)


# the [stream] settings before the latency work (issue 14), measured as a peer of today's defaults (with
# swscale's colour conversion in the encoder)
BEFORE: dict[str, Any] = {"playout_delay": False}


class CodedRoom:
    """The simulated room's pictures fed into ``frames`` at ``fps``, each with the wall clock drawn as a bar code,
    and the trace of each picture along the box's path (:attr:`EncodedVideo.trace` = :meth:`on_stage`):
    ``trace`` is ``[(code, stage, wall s)]`` with stages captured, picked, encoded, handed, sent."""

    def __init__(self, frames: Any, width: int, height: int, fps: float = FPS) -> None:
        self.frames, self.fps = frames, fps
        self.pictures = room_pictures(30, width, height)
        self.trace: list[tuple[int, str, float]] = []
        self._code_of_t: dict[float, int] = {}
        self._code_of_pts: dict[int, int] = {}

    def on_stage(self, stage: str, pts: int, t: float) -> None:
        if stage == "picked":
            code = self._code_of_t.pop(t, None)
            if code is None:
                return
            self._code_of_pts[pts] = code
            t = time.time()
        elif pts not in self._code_of_pts:
            return
        self.trace.append((self._code_of_pts[pts], stage, t))

    async def feed(self) -> None:
        loop = asyncio.get_running_loop()
        t0, i = loop.time(), 0
        while True:
            image = self.pictures[i % len(self.pictures)].copy()
            wall = time.time()
            code = draw_code(image, wall)
            t = t0 + i / self.fps
            self._code_of_t[t] = code
            self.trace.append((code, "captured", wall))
            self.frames.put(image, t)
            i += 1
            await asyncio.sleep(max(0.0, t0 + i / self.fps - loop.time()))


CODE_BITS = 40
CODE_ROWS = 24


def draw_code(image: np.ndarray, wall_s: float) -> int:
    """The wall clock in ms, 40 bits, as black/white cells across the top ``CODE_ROWS`` rows (MSB left).
    Returns the value drawn."""
    value = int(wall_s * 1000) & ((1 << CODE_BITS) - 1)
    cell = image.shape[1] // CODE_BITS
    for b in range(CODE_BITS):
        bit = (value >> (CODE_BITS - 1 - b)) & 1
        image[:CODE_ROWS, b * cell : (b + 1) * cell] = 255 if bit else 0
    return value


class _Box:
    def __init__(self, mode: str, codec: str, width: int, height: int, fps: float = FPS) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.bench.stream", "--box", mode, codec, str(width), str(height), str(fps)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the bench box did not start")
        hello = json.loads(line)
        self.port = int(hello["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {hello['token']}"}

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def close(self) -> dict[str, Any]:
        """Stop the box; returns what it printed last (its trace), or {}."""
        try:
            out = self.proc.communicate(timeout=15)[0] or ""  # closes its stdin: it stops
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = self.proc.communicate()[0] or ""
        lines = out.strip().splitlines()
        try:
            return dict(json.loads(lines[-1])) if lines else {}
        except ValueError:
            return {}


class _CountingDecoder:
    """Stands in for aiortc's decoder in the bench's viewers: counts encoded frames, decodes nothing."""

    frames = 0

    def decode(self, encoded_frame: Any) -> list[Any]:
        _CountingDecoder.frames += 1
        return []


async def _published(session: Any, box: _Box) -> int:
    async with session.get(box.url + "/api/state", headers=box.headers) as r:
        return int((await r.json())["stream"]["frames_published"])


async def _measure_viewers(
    box: _Box,
    codec: str,
    n: int,
    window_s: float,
    probe: Callable[[], Any] | None = None,
    probed: list[Any] | None = None,
) -> tuple[float, float, float]:
    """Connect ``n`` aiortc viewers, let them settle, then (box CPU in cores, frames/s per viewer, box CPU
    ms per picture fed: a figure that still compares when a loaded machine starves the box). ``probe()``, if
    given, is called at the window's start and end (in a thread), its results appended to ``probed``."""
    import aiohttp
    import aiortc.rtcrtpreceiver
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

    from appliance.streaming.ice import offer_loopback

    offer_loopback()
    receiver_module: Any = aiortc.rtcrtpreceiver
    original = receiver_module.get_decoder
    receiver_module.get_decoder = lambda codec: _CountingDecoder()
    pcs: list[RTCPeerConnection] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(n):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)
                tr = pc.addTransceiver("video", direction="recvonly")
                caps: Any = RTCRtpReceiver.getCapabilities("video")
                caps = caps.codecs
                tr.setCodecPreferences([c for c in caps if c.mimeType == f"video/{codec}"])
                await pc.setLocalDescription(await pc.createOffer())
                async with session.post(
                    box.url + "/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}, headers=box.headers
                ) as r:
                    answer = await r.json()
                if "error" in answer:
                    raise RuntimeError(f"the bench box refused viewer {len(pcs)}: {answer['error']}")
                await pc.setRemoteDescription(RTCSessionDescription(**answer))
            deadline = time.monotonic() + 20
            while any(pc.connectionState != "connected" for pc in pcs):
                if time.monotonic() > deadline:
                    raise RuntimeError("bench viewers did not connect")
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # settle: keyframes, bitrate
            pub0 = await _published(session, box)
            if probe is not None and probed is not None:
                probed.append(await asyncio.to_thread(probe))
            frames0, cpu0, wall0 = _CountingDecoder.frames, box.cpu(), time.monotonic()
            await asyncio.sleep(window_s)
            frames1, cpu1, wall1 = _CountingDecoder.frames, box.cpu(), time.monotonic()
            if probe is not None and probed is not None:
                probed.append(await asyncio.to_thread(probe))
            pub1 = await _published(session, box)
        dt = wall1 - wall0
        return (cpu1 - cpu0) / dt, (frames1 - frames0) / dt / n, 1000 * (cpu1 - cpu0) / max(1, pub1 - pub0)
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs))
        receiver_module.get_decoder = original


def bench_viewers(quick: bool) -> list[Row]:
    rows: list[Row] = []
    window = 3.0 if quick else 6.0
    w, h = SIZES["720p"]
    for mode, counts in (("shared", (1, 4, 10)), ("per-viewer", (1, 4))):
        cores: dict[int, float] = {}
        per_picture: dict[int, float] = {}
        for n in counts:
            box = _Box(mode, "VP8", w, h)
            try:
                time.sleep(1.0)  # let it pre-render its pictures
                cores[n], fps, per_picture[n] = asyncio.run(_measure_viewers(box, "VP8", n, window))
            finally:
                box.close()
            who = "box, shared encoder" if mode == "shared" else "peer: box, aiortc per viewer"
            rows.append((f"{who}, VP8 720p30, {n} viewers: CPU", cores[n], "cores"))
            rows.append((f"{who}, VP8 720p30, {n} viewers: CPU per picture", per_picture[n], "ms"))
            rows.append((f"{who}, VP8 720p30, {n} viewers: frames/s each", fps, "frames/s"))
            rows.append(
                (
                    f"{who}, VP8 720p30, {n} viewers: CPU per frame delivered to a viewer",
                    1000 * cores[n] / max(fps * n, 1e-9),
                    "ms",
                )
            )
        last = counts[-1]
        who = "shared" if mode == "shared" else "peer: per viewer"
        rows.append((f"{who}: CPU {last} viewers / 1 viewer", cores[last] / max(cores[1], 1e-9), "x"))
        rows.append(
            (f"{who}: CPU per picture {last} viewers / 1 viewer", per_picture[last] / max(per_picture[1], 1e-9), "x")
        )
    return rows


# ---------- Chromium ----------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]  # as tests/conftest.py

CHROMIUM_JS = """
async ([seconds, bits, rows, auth]) => {
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver("video", {direction: "recvonly"});
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === "complete") r();
                           else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  const res = await fetch("/offer", {method: "POST", headers: {"Content-Type": "application/json", ...auth},
                                     body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
  await pc.setRemoteDescription(await res.json());
  return await window.measureVideo(pc, video, seconds, bits, rows);
}
"""

MEASURE_JS = """
() => { window.measureVideo = async (pc, video, seconds, bits, rows) => {
  // per presented frame: its bar code (the box's wall clock in ms when it was captured), when its last packet
  // arrived, how long receiving to decoding took, when it is shown; and getStats() at both ends of the window
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  const T = (x) => performance.timeOrigin + x;
  const inbound = async () => {
    for (const r of (await pc.getStats()).values()) if (r.type === "inbound-rtp" && r.kind === "video") return r;
    return {};
  };
  const until = performance.now() + 20000;
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  while (!((await inbound()).framesDecoded > 0) && performance.now() < until) await sleep(200);
  await new Promise(r => setTimeout(r, 2000));
  const frames = []; const fpsSamples = [];
  const first = await inbound();
  const sample = async () => { const r = await inbound(); if (r.framesPerSecond) fpsSamples.push(r.framesPerSecond); };
  const sampler = setInterval(sample, 1000);
  const done = performance.now() + seconds * 1000;
  await new Promise(resolve => {
    const onFrame = (now, meta) => {
      const w = video.videoWidth;
      canvas.width = w; canvas.height = rows;
      ctx.drawImage(video, 0, 0, w, rows, 0, 0, w, rows);
      const cell = Math.floor(w / bits);
      const px = ctx.getImageData(0, 0, w, rows).data;
      let code = 0;
      for (let b = 0; b < bits; b++) {
        const i = (Math.floor(rows / 2) * w + b * cell + Math.floor(cell / 2)) * 4;
        code = code * 2 + (px[i] + px[i + 1] + px[i + 2] > 384 ? 1 : 0);
      }
      frames.push({code, received: meta.receiveTime ? T(meta.receiveTime) : null,
                   processing: meta.processingDuration === undefined ? null : 1000 * meta.processingDuration,
                   shown: T(meta.expectedDisplayTime), callback: T(now)});
      if (performance.now() < done) video.requestVideoFrameCallback(onFrame); else resolve();
    };
    video.requestVideoFrameCallback(onFrame);
  });
  clearInterval(sampler);
  const last = await inbound();
  pc.close();
  const d = (k) => (last[k] || 0) - (first[k] || 0);
  const emitted = d("jitterBufferEmittedCount"), decoded = d("framesDecoded");
  return {frames, fpsSamples, seconds: (last.timestamp - first.timestamp) / 1000, framesDecoded: decoded,
          framesDropped: d("framesDropped"), width: last.frameWidth, height: last.frameHeight,
          jitterBufferMs: emitted ? 1000 * d("jitterBufferDelay") / emitted : null,
          jitterTargetMs: emitted ? 1000 * d("jitterBufferTargetDelay") / emitted : null,
          decodeMs: decoded ? 1000 * d("totalDecodeTime") / decoded : null,
          processingMs: decoded ? 1000 * d("totalProcessingDelay") / decoded : null};
}; }
"""

MOD = 1 << CODE_BITS


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[int(0.95 * (len(xs) - 1))] if xs else float("nan")


def video_rows(who: str, r: dict[str, Any], trace: list[Any]) -> list[Row]:
    """Chromium's decoding rate and the glass-to-glass latency, with where the time went: the box's
    ``trace`` (per bar code: captured, picked, encoded, handed, sent, wall s) joined with Chromium's
    per-frame reading (``MEASURE_JS``) by bar code."""
    rows: list[Row] = []
    size = f"{r.get('width')}x{r.get('height')}"
    if r.get("seconds"):
        rows.append(
            (f"{who} {size}: frames decoded per second (framesDecoded)", r["framesDecoded"] / r["seconds"], "frames/s")
        )
    if r.get("fpsSamples"):
        rows.append((f"{who}: framesPerSecond, median of 1 s samples", _median(r["fpsSamples"]), "frames/s"))
    rows.append((f"{who}: frames dropped by Chromium", float(r.get("framesDropped") or 0), "frames"))
    lat = []
    for f in r["frames"]:
        ms = (round(f["shown"]) % MOD - f["code"]) % MOD
        if ms < 5000:
            lat.append(float(ms))
    if lat:
        rows.append((f"{who}: glass-to-glass latency, median", _median(lat), "ms"))
        rows.append((f"{who}: glass-to-glass latency, p95", _p95(lat), "ms"))
    shown = [f["callback"] / 1000 for f in r["frames"]]
    if len(shown) > 1 and trace:
        a, b = min(shown), max(shown)
        for stage, label in (("captured", "pictures fed to the box"), ("encoded", "pictures the box encoded")):
            n = sum(1 for _, st, t in trace if st == stage and a <= t <= b)
            rows.append((f"{who}: {label} per second (same window)", n / (b - a), "frames/s"))
    stages: dict[int, dict[str, float]] = {}
    for code, stage, t in trace:
        stages.setdefault(int(code), {}).setdefault(stage, float(t))
    steps: dict[str, list[float]] = {}
    order = ["captured", "picked", "encoded", "handed", "sent", "received", "decoded", "shown"]
    names = {
        "picked": "captured -> taken by the encoder",
        "encoded": "-> encoded (colour conversion + encode)",
        "handed": "-> taken by the connection's sender",
        "sent": "-> packetized, encrypted and sent",
        "received": "-> last packet received by Chromium",
        "decoded": "-> decoded (Chromium's processingDuration)",
        "shown": "-> shown (Chromium: held to its render time, the jitter buffer's delay, and the display)",
    }
    for f in r["frames"]:
        st = stages.get(int(f["code"]))
        if st is None or "captured" not in st:
            continue
        st = dict(st)
        if f.get("received") is not None:
            st["received"] = f["received"] / 1000
            if f.get("processing") is not None:
                # processingDuration runs from the first packet's arrival; the last one's is what we have
                st["decoded"] = st["received"] + f["processing"] / 1000
        st["shown"] = f["shown"] / 1000
        known = [s for s in order if s in st]
        for a, b in zip(known, known[1:], strict=False):
            steps.setdefault(b, []).append(1000 * (st[b] - st[a]))
    for stage in order[1:]:
        if steps.get(stage):
            rows.append((f"{who}: {names[stage]}, median", _median(steps[stage]), "ms"))
    for key, label in (
        ("jitterBufferMs", "Chromium jitter buffer delay per frame (getStats)"),
        ("jitterTargetMs", "Chromium jitter buffer target delay per frame (getStats)"),
        ("decodeMs", "Chromium decode time per frame (getStats)"),
        ("processingMs", "Chromium processing delay per frame, first packet to decoded (getStats)"),
    ):
        if r.get(key) is not None:
            rows.append((f"{who}: {label}", float(r[key]), "ms"))
    return rows


def bench_chromium(quick: bool, modes: tuple[str, ...] = ("shared",)) -> list[Row]:
    import playwright.sync_api as sync_api

    rows: list[Row] = [("load average (1 min) before the Chromium runs", os.getloadavg()[0], "runnable")]
    w, h = SIZES["720p"]
    for codec in ("VP8", "H264"):  # before and after side by side: the machine's load drifts
        for mode in modes:
            box = _Box(mode, codec, w, h)
            trace: dict[str, Any] = {}
            try:
                with sync_api.sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                    try:
                        page = browser.new_page()
                        page.goto(box.url + "/healthz")
                        page.evaluate(MEASURE_JS)
                        r = page.evaluate(CHROMIUM_JS, [4 if quick else 10, CODE_BITS, CODE_ROWS, box.headers])
                    finally:
                        browser.close()
            finally:
                trace = box.close()
            who = f"Chromium from the panel, {codec}" + ("" if mode == "shared" else f" ({mode})")
            rows += video_rows(who, r, trace.get("trace", []))
            rows.append((f"{who}: load average (1 min) after", os.getloadavg()[0], "runnable"))
    return rows


def bench_latency(quick: bool = False) -> list[Row]:
    """``roombox bench latency``: Chromium's view of the 720p30 panel stream alone (the part of ``bench stream``
    without ``--quick``): decoded frames per second, glass-to-glass latency and where it goes, today's settings
    beside the settings before the latency work (``BEFORE``), with the machine's load."""
    return bench_chromium(quick, modes=("before", "shared"))


# ---------- the box in a meeting ----------


class _DemoBox:
    """``roombox demo`` as a child process on 127.0.0.1 (the simulated room, its camera at ``camera_fps``),
    optionally publishing over WHIP; ``url``, ``headers`` (the kiosk token) and ``cpu()`` as :class:`_Box`."""

    def __init__(self, folder: str, camera_fps: float, whip: tuple[str, str] | None = None) -> None:
        from pathlib import Path

        from drivers.simroom.scenario import builtin_scenario

        scenario = Path(folder) / "room30.toml"
        default = builtin_scenario("default")
        text = default.read_text()
        if "fps = 15.0" not in text:
            raise RuntimeError(f"{default}: no camera 'fps = 15.0' to raise to {camera_fps}")
        scenario.write_text(text.replace("fps = 15.0", f"fps = {camera_fps}", 1))
        port = _free_port()
        cmd = [sys.executable, "-m", "appliance.cli", "demo", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--scenario", str(scenario)]
        if whip is not None:
            cmd += ["--whip", whip[0], "--whip-token", whip[1]]
        env = {**os.environ, "ROOMBOX_HOME": folder}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        token = ""
        while not token:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("roombox demo did not start")
            if "#token=" in line:
                token = line.strip().rsplit("#token=", 1)[1]
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def state(self) -> dict[str, Any]:
        import urllib.request

        req = urllib.request.Request(self.url + "/api/state", headers=self.headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            state: dict[str, Any] = json.loads(r.read())
            return state

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:  # a box that does not stop on SIGTERM
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_meeting(quick: bool = False) -> list[Row]:
    """The box on the simulated room (its camera at 30 frames/s), 1280x720 at 30 to one panel viewer and published
    over WHIP to a local Janus VideoRoom through Debian's simple-whip-server: the box process's CPU over the window
    (the issue's figure: at most 1 core), what the viewer gets and what Janus receives. Peer: the same box with
    nobody watching and no WHIP (the simulated room, perception and director alone), in the same run.
    Needs ``janus`` and simple-whip-server (``scripts/setup``); runs from a checkout (``tests/janus_fixture``)."""
    import tempfile

    try:
        from tests.janus_fixture import ROOM, Janus, SimpleWhipServer
    except ImportError as e:
        raise RoomboxError(f"bench meeting runs from a checkout with tests/janus_fixture.py: {e}") from None

    window = 8.0 if quick else 20.0
    rows: list[Row] = [("load average (1 min) before", os.getloadavg()[0], "runnable")]
    token = "bench-whip-token"
    with tempfile.TemporaryDirectory(prefix="roombox-bench-meeting-") as folder:
        with contextlib.ExitStack() as stack:
            try:
                janus = stack.enter_context(Janus.running())
                sws = stack.enter_context(SimpleWhipServer.running(janus))
            except RuntimeError as e:  # not installed, or did not start: say which
                raise RoomboxError(f"bench meeting: {e}") from None
            url = sws.endpoint("bench", ROOM, token)
            box = _DemoBox(folder, FPS, whip=(url, token))
            try:
                deadline = time.monotonic() + 60
                while box.state().get("meeting:whip", {}).get("state") != "connected":
                    if time.monotonic() > deadline:
                        raise RoomboxError(
                            f"bench meeting: the box did not join over WHIP: {box.state().get('meeting:whip')}"
                        )
                    time.sleep(0.5)
                time.sleep(2.0)

                def probe() -> tuple[Any, Any, float, Any]:
                    return janus.published("video"), janus.published("audio"), time.monotonic(), box.state()["stream"]

                probed: list[Any] = []
                cores, fps, _ = asyncio.run(_measure_viewers(box, "VP8", 1, window, probe, probed))  # type: ignore[arg-type]
                (video0, audio0, ta, stream0), (video1, audio1, tb, stream) = probed
            finally:
                box.close()
        who = "box on the simulated room (camera 30 frames/s), 720p30 to a panel viewer + WHIP to Janus"
        rows.append((f"{who}: CPU", cores, "cores"))
        rows.append((f"{who}: frames/s the panel viewer gets", fps, "frames/s"))
        for kind, before, after in (("video", video0, video1), ("audio", audio0, audio1)):
            if before and after:
                rate = (after[0]["packets"] - before[0]["packets"]) / (tb - ta)
                rows.append((f"{who}: {kind} packets/s Janus receives ({after[0]['codec']})", rate, "packets/s"))
            else:
                rows.append((f"{who}: {kind} packets/s Janus receives (none published)", 0.0, "packets/s"))
        rows.append(
            (
                f"{who}: framed pictures per second",
                (stream["frames_published"] - stream0["frames_published"]) / (tb - ta),
                "frames/s",
            )
        )
        for codec, enc in stream["encoders"].items():
            done = enc["frames_encoded"] - stream0["encoders"].get(codec, {}).get("frames_encoded", 0)
            rows.append(
                (
                    f"{who}: {codec} frames encoded per second ({enc['viewers']} connections)",
                    done / (tb - ta),
                    "frames/s",
                )
            )

        idle = _DemoBox(folder, FPS)
        try:
            time.sleep(4.0)
            cpu0, t0 = idle.cpu(), time.monotonic()
            time.sleep(window)
            idle_cores = (idle.cpu() - cpu0) / (time.monotonic() - t0)
        finally:
            idle.close()
        rows.append(("peer: the same box, no viewer and no WHIP: CPU", idle_cores, "cores"))
        rows.append(("streaming to the panel and WHIP adds (CPU)", cores - idle_cores, "cores"))
    rows.append(("load average (1 min) after", os.getloadavg()[0], "runnable"))
    return rows


def bench_stream(quick: bool = False) -> list[Row]:
    """Encode speed per codec and size, box CPU by viewer count, and (not quick) Chromium's view of it."""
    rows = bench_encode(quick)
    rows += bench_viewers(quick)
    rows += bench_meeting(quick)
    if not quick:
        rows += bench_latency(quick)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m appliance.bench.stream")
    p.add_argument("--box", nargs=5, metavar=("MODE", "CODEC", "W", "H", "FPS"), required=True)
    a = p.parse_args(argv)
    mode, codec, w, h, fps = a.box
    asyncio.run(_serve_box(mode, codec, int(w), int(h), float(fps)))


if __name__ == "__main__":
    main()
