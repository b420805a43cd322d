"""The live box: pulls the camera and the mic array, runs perception, directs, frames and streams.

Devices are supervised tasks; face detection runs in a worker thread so the event loop keeps framing at
the camera's rate; the framed picture goes to ``LatestFrame`` (a slow viewer drops stale frames, counted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config
from appliance.director import Director
from appliance.framing import render_crop
from appliance.messages import Doa, Faces
from appliance.supervisor import supervise
from common.geometry import PinholeCamera
from drivers.base import AudioBlock, AudioSource, VideoSource

log = logging.getLogger(__name__)


@dataclass
class Counters:
    frames: int = 0
    detections: int = 0
    detection_ms: float = 0.0
    audio_blocks: int = 0
    doa_blocks: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "detections": self.detections,
                "detection_ms": round(self.detection_ms, 1), "audio_blocks": self.audio_blocks,
                "doa_blocks": self.doa_blocks}


class RoomBox:
    """Wires sources -> perception -> director -> framed output. Construct, then ``await run()``."""

    def __init__(self, cfg: Config, camera: VideoSource, mics: AudioSource, detector: Any,
                 frames: Any, audio_out: Any, events: Any, clock: Callable[[], float] = time.monotonic,
                 retry_s: float = 2.0) -> None:
        from appliance.perception.hearing import Hearing

        self.cfg = cfg
        self.camera, self.mics, self.detector = camera, mics, detector
        self.frames, self.audio_out, self.events = frames, audio_out, events
        self.clock, self.retry_s = clock, retry_s
        self.hearing = Hearing(cfg.mic_array, cfg.doa)
        self.director: Director | None = None
        self.counters = Counters()
        self._doas: list[Doa] = []
        self._faces: Faces | None = None
        self._detecting: asyncio.Future[tuple[Faces, float]] | None = None
        self._next_detect = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="detect")

    # -- devices ---------------------------------------------------------------------------------
    async def _camera_loop(self, started: Callable[[], None]) -> None:
        def fresh_timeline() -> None:  # a restarted device starts over: so do detection and the director
            self.director, self._faces, self._next_detect = None, None, -math.inf

        await _pump(self.camera, lambda f: self._on_frame(f.image, f.t), started, fresh_timeline)

    async def _mic_loop(self, started: Callable[[], None]) -> None:
        self.hearing.reset()
        await _pump(self.mics, self._on_audio, started)

    def _on_audio(self, block: AudioBlock) -> None:
        self.counters.audio_blocks += 1
        for d in self.hearing.feed(block.samples, block.t):
            self._doas.append(d)
            self.counters.doa_blocks += 1
            self.events.publish("doa", d.to_json())
        if self.audio_out is not None:
            self.audio_out.put(block.samples.mean(axis=1).astype(np.float32), block.sample_rate, block.t)

    # -- per frame -------------------------------------------------------------------------------
    def _on_frame(self, image: np.ndarray, t: float) -> None:
        if self.director is None:
            cam = PinholeCamera(image.shape[1], image.shape[0], self.cfg.camera.hfov_deg)
            self.director = Director(cam, self.cfg.director, self.cfg.stream.width / self.cfg.stream.height)
        self.counters.frames += 1
        faces: Faces | None = None
        if self._detecting is not None and self._detecting.done():
            try:
                faces, ms = self._detecting.result()
                self._faces = faces
                c = self.counters
                c.detections += 1
                c.detection_ms = ms if c.detections == 1 else 0.8 * c.detection_ms + 0.2 * ms
                self.events.publish("faces", {**faces.to_json(), "width": faces.width, "height": faces.height})
            except Exception as e:  # noqa: BLE001 - a failed detection is logged, the next one retried
                log.warning("face detection failed: %s", e)
            self._detecting = None
        if self._detecting is None and t >= self._next_detect:
            self._next_detect = t + self.cfg.detector.interval_s
            self._detecting = asyncio.get_running_loop().run_in_executor(self._pool, self._detect, image, t)
        doas, self._doas = self._doas, []
        shot = self.director.step(faces, doas, t)
        self.events.publish("shot", shot.to_json())
        s = self.cfg.stream
        self.frames.put(render_crop(image, shot.crop, s.width, s.height), t)

    def _detect(self, image: np.ndarray, t: float) -> tuple[Faces, float]:
        """On the worker thread: the faces, and how long finding them took (ms)."""
        began = time.perf_counter()
        faces: Faces = self.detector.detect(image, t)
        return faces, 1000 * (time.perf_counter() - began)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.events.publish("stats", self.counters.to_json())

    async def run(self) -> None:
        """Run until cancelled."""
        def report(status: Any) -> None:
            self.events.publish(f"device:{status.name}", status.to_json())

        c = self.cfg.camera
        self.events.publish("camera", {"hfov_deg": c.hfov_deg, "width": c.width, "height": c.height})
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(supervise("camera", self._camera_loop, report, self.clock, self.retry_s))
                tg.create_task(supervise("mic_array", self._mic_loop, report, self.clock, self.retry_s))
                tg.create_task(self._stats_loop())
        finally:
            # wait for a detection in flight: the detector may be closed right after this returns
            self._pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True))


async def _pump(source: Any, handle: Callable[[Any], None], started: Callable[[], None],
                on_start: Callable[[], None] | None = None) -> None:
    """Start ``source``, hand each item it delivers to ``handle`` (``started()`` after the first), stop it
    whatever happens."""
    await source.start()
    if on_start is not None:
        on_start()
    try:
        item = await source.recv()
        started()
        while True:
            handle(item)
            item = await source.recv()
    finally:
        await source.stop()


def run_demo(scenario: Path, cfg: Config) -> int:
    """``roombox demo``: the box on the simulated room, with the panel served at cfg.panel.

    The camera and the mic array are the scenario's (they describe the simulated devices); every other
    section comes from ``cfg``.
    """
    return asyncio.run(_demo(scenario, cfg))


async def _demo(scenario_path: Path, cfg: Config) -> int:
    from appliance.perception.faces import FaceDetector
    from appliance.streaming.hub import AudioHub, EventBus, LatestFrame
    from appliance.streaming.server import create_app, run_server
    from drivers.registry import DriverContext, open_device
    from drivers.simroom.devices import sections_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cam, mics = sections_for(str(scenario_path))
    cfg = cfg.model_copy(update={"cameras": {"main": cam}, "mic_arrays": {"main": mics}})
    ctx = DriverContext()
    camera, mic_array = open_device("camera", "main", cam, ctx), open_device("mic_array", "main", mics, ctx)
    log.info("rendering the simulated room from %s", scenario_path)
    await asyncio.to_thread(mic_array.room.audio)
    frames, audio, events = LatestFrame(), AudioHub(), EventBus()
    detector = FaceDetector(cfg=cfg.detector)
    box = RoomBox(cfg, camera, mic_array, detector, frames, audio, events)
    app = create_app(frames, audio, events, cfg.stream)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_server(app, cfg.panel.host, cfg.panel.port):
        print(f"roombox: panel at http://{cfg.panel.host}:{cfg.panel.port}/", flush=True)
        task = asyncio.create_task(box.run())
        await stop.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    detector.close()
    return 0
