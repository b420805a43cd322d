"""The live box: pulls the camera and the mic array, runs perception, directs, frames and hands the picture on.

Devices are supervised tasks (:mod:`appliance.supervisor`); the per-frame decisions are the same
:class:`appliance.step.FrameStep` as the offline run's; face detection runs on a worker thread so the event
loop keeps framing at the camera's rate. What comes out goes through the small interfaces of
:mod:`appliance.ports`: framed pictures to a :class:`FrameSink`, the room's sound to an :class:`AudioSink`,
messages to an :class:`EventSink`. The composition (which devices, which hubs, the panel) is
:mod:`appliance.app`'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from appliance.config import Config
from appliance.framing import render_card, render_shot
from appliance.messages import CameraInfo, Decisions, DeviceStatus, Doa, Faces, Shot, Stats
from appliance.perception.hearing import make_ears
from appliance.ports import AudioSink, Detector, EventSink, FrameSink
from appliance.step import FrameStep, gain_of
from appliance.supervisor import Wake, stop_task, supervise
from common.clock import SYSTEM_CLOCK, Clock
from drivers.base import AudioBlock, AudioSource, Frame, VideoSource
from drivers.hotplug import Watch, signature, watches_of

if TYPE_CHECKING:
    from appliance.calibrator import Calibrator
    from appliance.program import ProgramCamera
    from appliance.streaming.playback import Playback

log = logging.getLogger(__name__)
CARD_AFTER_S = 2.0  # the camera lost this long: a card goes out in its place
CARD_LINES = ("Camera unavailable", "the room's box is trying to get it back")


@dataclass
class Counters:
    """The box's running counts, published as :class:`Stats`."""

    frames: int = 0
    detections: int = 0
    detection_ms: float = 0.0  # smoothed
    audio_blocks: int = 0
    doa_blocks: int = 0


class Timings(Protocol):
    """Where the box reports how long its work took (:class:`appliance.control.metrics.Metrics`)."""

    def observe_detection(self, seconds: float) -> None: ...
    def observe_doa(self, seconds: float) -> None: ...


class RoomBox:
    """Wires sources -> perception -> step -> framed output. Construct, then ``await run()``."""

    def __init__(
        self,
        cfg: Config,
        camera: VideoSource,
        mics: AudioSource,
        detector: Detector,
        frames: FrameSink,
        audio_out: AudioSink | None,
        events: EventSink,
        clock: Clock = SYSTEM_CLOCK,
        retry_s: float = 2.0,
        stats_every_s: float = 1.0,
        playback: Playback | None = None,
        program: ProgramCamera | None = None,
    ) -> None:
        self.cfg = cfg
        self._devices = (cfg.cameras, cfg.mic_arrays)  # as opened: a config change to them waits for a restart
        self.camera, self.mics, self.detector = camera, mics, detector
        self.frames, self.audio_out, self.events = frames, audio_out, events
        self.clock, self.retry_s, self.stats_every_s = clock, retry_s, stats_every_s
        self.playback = playback  # the far end on the room's speaker: its reference goes to the hearing
        self.program = program  # the PTZ camera's picture, what the meeting sees while it is live (or None)
        self._program_live = False
        self._camera_down: float | None = None  # since when the camera is lost (its supervisor says)
        self.hearing = make_ears(cfg.mic_array, cfg.doa, cfg.tracker, gain_of(cfg))
        self.step = FrameStep(cfg)
        self.counters = Counters()
        self.decisions: deque[Shot] = deque(maxlen=20)  # the latest cuts, newest first
        self._detecting: asyncio.Future[tuple[Faces, float]] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="detect")
        self._switch: dict[str, asyncio.Event] = {}  # set to swap a running device (use_source)
        # set to end the supervisor's pause after a failed device when another is put in its place
        self._wake = {"camera": Wake(), "mic_array": Wake(), "speaker": Wake()}
        self.calibrator: Calibrator | None = None  # the guided mic-array calibration, fed while it captures
        # told how long each face detection and each audio block's hearing took (``/metrics``' histograms)
        self.timings: Timings | None = None

    # -- devices ---------------------------------------------------------------------------------
    async def _camera_loop(self, started: Callable[[], None]) -> None:
        def fresh_start() -> None:  # a detection still running belongs to the previous start: not handed on
            self._detecting = None
            self.step.restart()

        await self._until_switched("camera", lambda: _pump(self.camera, self._on_frame, started, fresh_start))

    async def _program_loop(self, started: Callable[[], None]) -> None:
        assert self.program is not None
        await _pump(self.program.source, self.program.take, started, on_end=self.program.gone)

    async def _mic_loop(self, started: Callable[[], None]) -> None:
        self.hearing.reset()
        try:
            await self._until_switched("mic_array", lambda: _pump(self.mics, self._on_audio, started))
        finally:  # lost or stopped: nothing is heard now (the panel and /api/state kept the last talker's
            self.events.publish(Doa(self.clock.now(), None, False))  # direction while the array was lost)

    async def _until_switched(self, kind: str, pump: Callable[[], Awaitable[None]]) -> None:
        """Run a device's pump; when :meth:`use_source` swaps the device, stop the old one and pump the new."""
        while True:
            switched = self._switch[kind] = asyncio.Event()
            running = asyncio.ensure_future(pump())
            waiting = asyncio.ensure_future(switched.wait())
            try:
                await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                if not running.done():
                    await stop_task(running)
            if not switched.is_set():
                running.result()  # the device stopped or failed: the supervisor reports it and retries
                return

    async def try_source(self, kind: str, name: str, source: Any, cfg: Config, timeout_s: float = 10.0) -> None:
        """:meth:`use_source`, once ``source`` has been started and has delivered (then stopped, for the box
        to start it again as its own). A device that cannot be opened, or that delivers nothing within
        ``timeout_s``, raises ValueError with the reason; the running device is kept."""
        try:
            await asyncio.wait_for(_probe(source), timeout_s)
        except TimeoutError:
            raise ValueError(f"{kind} {name!r} delivered nothing within {timeout_s:g} s: not switched") from None
        except Exception as e:
            reason = str(e) or type(e).__name__
            raise ValueError(f"{kind} {name!r} cannot be used: {reason}") from None
        self.use_source(kind, name, source, cfg)

    def use_source(self, kind: str, name: str, source: Any, cfg: Config) -> None:
        """Swap the running camera (``kind`` "camera") or mic array ("mic_array") for ``source`` (opened, not
        started) while the box runs; ``cfg`` is the config with that device first. The old device is
        stopped, the new one started; framing and hearing take the new geometry."""
        if kind not in ("camera", "mic_array"):
            raise ValueError(f"use_source wants kind camera or mic_array, not {kind!r}")
        self._devices = (cfg.cameras, cfg.mic_arrays)  # opened now: its geometry applies
        self.on_config(cfg)
        if kind == "camera":
            self.camera = source
            c = cfg.camera
            if hasattr(self.detector, "hfov_deg"):
                self.detector.hfov_deg = c.hfov_deg  # the face tracks' directions
            self.events.publish(CameraInfo(name, c.hfov_deg, c.width, c.height))
        else:
            self.mics = source
        switched = self._switch.get(kind)
        if switched is not None:
            switched.set()
        # the device had failed: its supervisor starts the new one now
        self._wake[kind].set_for("another device was chosen")

    def _on_audio(self, block: AudioBlock) -> None:
        # the playback reference: the array's own playback channel where it has one, else what the box played
        reference = block.reference
        if reference is None and self.playback is not None:
            reference = self.playback.reference.reference_for(block.t, block.samples.shape[0])
        began = time.perf_counter()
        doas = self.hearing.feed(block.samples, block.t, reference=reference)
        if self.timings is not None:
            self.timings.observe_doa(time.perf_counter() - began)
        self.counters.audio_blocks += 1
        self.counters.doa_blocks += len(doas)
        if self.calibrator is not None:
            self.calibrator.feed_doas(doas)  # as the array hears them
        for d in self.step.add_doas(doas):  # in the camera's frame, as the director sees them
            self.events.publish(d)
        if self.audio_out is not None:
            room = block.samples.mean(axis=1).astype(np.float32)
            if self.step.muted:  # microphones muted from the panel: the far end hears silence
                room = np.zeros_like(room)
            self.audio_out.put(room, block.sample_rate, block.t)

    # -- per frame -------------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        self.counters.frames += 1
        faces: Faces | None = None
        if self._detecting is not None and self._detecting.done():
            faces = self._detection_result(self._detecting)
            self._detecting = None
        if self._detecting is None and self.step.detection_due(frame.t):
            self._detecting = asyncio.get_running_loop().run_in_executor(self._pool, self._detect, frame)
        shot = self.step.step(frame.t, frame.width, frame.height, faces, image=frame.image)
        self.events.publish(shot)
        if shot.cut:
            self.decisions.appendleft(shot)
            self.events.publish(Decisions(tuple(self.decisions)))
        live = self.program is not None and self.program.live()
        if live != self._program_live:  # the PTZ camera's picture came or went: say which goes out, now
            self._program_live = live
            log.info("program: %s", "the PTZ camera's picture" if live else "the wide camera's crop")
            self.events.publish(self.stats())
        if not live:  # else the program camera puts its own pictures
            s = self.cfg.stream
            self.frames.put(render_shot(frame.image, shot, s.width, s.height), frame.t)

    def _detection_result(self, done: asyncio.Future[tuple[Faces, float]]) -> Faces | None:
        try:
            faces, ms = done.result()
        except Exception as e:
            log.warning("face detection failed: %s", e)
            return None
        c = self.counters
        c.detections += 1
        c.detection_ms = ms if c.detections == 1 else 0.8 * c.detection_ms + 0.2 * ms
        if self.timings is not None:
            self.timings.observe_detection(ms / 1000.0)
        self.events.publish(faces)
        if self.calibrator is not None:
            self.calibrator.feed_faces(faces)
        return faces

    def _detect(self, frame: Frame) -> tuple[Faces, float]:
        """On the worker thread: the faces, and how long finding them took (ms)."""
        began = time.perf_counter()
        faces = self.detector.detect(frame.image, frame.t)
        return Faces(faces.t, faces.faces, frame.width, frame.height), 1000 * (time.perf_counter() - began)

    # sections a running box takes over at once; the others (devices, the face detector, stream, panel) need
    # a restart
    LIVE_SECTIONS = ("doa", "tracker", "director", "access", "calibration")

    def on_config(self, new: Config) -> list[str]:
        """Apply a changed config: the director, detection and hearing take it at once (the framing mode
        chosen on the panel stays); returns the changed sections that need a restart."""
        changed = [k for k in type(new).model_fields if getattr(new, k) != getattr(self.cfg, k)]
        if "mqtt" in changed and new.mqtt.enabled:  # a fleet link that could not start would stop the next start
            from appliance.control.mqtt_link import read_password, tls_context

            read_password(new.mqtt)
            tls_context(new.mqtt)
        # the devices as opened: framing and hearing keep their geometry (a mic array's positions, a camera's
        # field of view) until the device is opened anew, at a restart or through use_source
        new = new.model_copy(update={"cameras": self._devices[0], "mic_arrays": self._devices[1]})
        old = self.cfg
        if (
            any(k in changed for k in ("doa", "tracker"))
            or new.mic_array != old.mic_array
            or gain_of(new) != gain_of(old)
        ):
            self.hearing = make_ears(new.mic_array, new.doa, new.tracker, gain_of(new))
        self.cfg = new
        self.step.reconfigure(new)
        return [k for k in changed if k not in self.LIVE_SECTIONS]

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """A command from the panel: ``{"cmd": "set_mode", "mode": M}`` (speaker, group, gallery, off, manual)
        or ``{"cmd": "ptz", "pan": P, "tilt": T, "zoom": Z}`` (manual framing; pan and tilt in [-1, 1],
        zoom >= 1) or ``{"cmd": "set_mute", "muted": true|false}`` (the microphones: the far end hears
        silence, the director shows the group, every shot says ``muted``). Returns the framing mode and the
        mute now; a ValueError names what is wrong."""
        name = cmd.get("cmd")
        now = self.clock.now()
        if name == "set_mode":
            self.step.set_mode(cmd.get("mode"), now)  # type: ignore[arg-type]  # checked by set_mode
        elif name == "ptz":
            values = [cmd.get(k, d) for k, d in (("pan", 0.0), ("tilt", 0.0), ("zoom", 1.0))]
            try:  # numbers only, as set_volume takes them: not "0.5", not true
                if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
                    raise TypeError
                pan, tilt, zoom = (float(v) for v in values)
            except (TypeError, OverflowError):
                raise ValueError("ptz wants numbers: pan and tilt in [-1, 1], zoom >= 1") from None
            self.step.manual_view(pan, tilt, zoom, now)
        elif name == "set_mute":
            muted = cmd.get("muted")
            if not isinstance(muted, bool):
                raise ValueError(f"set_mute wants muted: true or false, got {muted!r}")
            self.step.set_muted(muted, now)
        else:
            raise ValueError(f"unknown command {name!r}: set_mode, ptz or set_mute")
        return {"mode": self.step.policy, "muted": self.step.muted}

    @property
    def muted(self) -> bool:
        """Microphones muted on the panel: the room's sound is not sent (hearing goes on)."""
        return self.step.muted

    def stats(self) -> Stats:
        """The counters now, as a message."""
        c = self.counters
        mics = getattr(self.mics, "counters", None)  # a sound card's (drivers.audio.capture): a dict
        mics = mics if isinstance(mics, dict) else {}
        return Stats(
            self.clock.now(),
            c.frames,
            c.detections,
            c.detection_ms,
            c.audio_blocks,
            c.doa_blocks,
            int(getattr(self.camera, "dropped", 0)),
            "ptz" if self._program_live else "crop",
            int(mics.get("overflows", 0)),
            int(mics.get("dropped_blocks", 0)),
            int(mics.get("gaps", 0)),
        )

    async def _card_loop(self, every_s: float = 0.5) -> None:
        """While the camera has been lost for ``CARD_AFTER_S`` (and no PTZ camera's picture goes out), a card
        saying so goes out in its place, a few times a second: the far end and the room's display saw the
        last picture frozen, as if the room had stopped moving."""
        card: np.ndarray | None = None
        while True:
            await self.clock.sleep_until(self.clock.now() + every_s)
            down = self._camera_down
            live = self.program is not None and self.program.live()  # the PTZ camera's picture goes out
            if down is None or self.clock.now() - down < CARD_AFTER_S or live:
                continue
            s = self.cfg.stream
            if card is None or card.shape[:2] != (s.height, s.width):
                card = render_card(CARD_LINES, s.width, s.height)
            self.frames.put(card, self.clock.now(), framed=False)

    async def _stats_loop(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now() + self.stats_every_s)
            self.events.publish(self.stats())

    def _watched(self) -> dict[str, list[Watch]]:
        speaker = None if self.playback is None else self.playback.speaker
        devices = {"camera": self.camera, "mic_array": self.mics, "speaker": speaker}
        return {kind: watches_of(source) for kind, source in devices.items() if source is not None}

    async def _watch_devices(self, every_s: float = 1.0) -> None:
        """A device plugged in (or a file put in place) is tried at once, not at the end of its back-off: a
        change where a device's driver says its coming shows ends that device's pause (a lost device only;
        a running one does not notice)."""
        seen = {kind: signature(w) for kind, w in self._watched().items()}
        while True:
            await self.clock.sleep_until(self.clock.now() + every_s)
            for kind, w in self._watched().items():  # a swapped source's watches are new: no change
                now = signature(w)
                before = seen.get(kind)
                if before is not None and [k for k, _ in before] == [k for k, _ in now] and before != now:
                    self._wake[kind].set_for("a device was plugged in or removed")
                seen[kind] = now

    async def run(self) -> None:
        """Run until cancelled."""
        c = self.cfg.camera
        self.events.publish(CameraInfo(self.camera.name, c.hfov_deg, c.width, c.height))

        def publish(status: DeviceStatus) -> None:
            if status.name == "camera":  # lost since (not merely starting): the card goes out in its place
                if status.state == "running":
                    self._camera_down = None
                elif status.state == "lost" and self._camera_down is None:
                    self._camera_down = self.clock.now()
            self.events.publish(status)

        try:
            async with asyncio.TaskGroup() as tg:
                for kind, loop in (("camera", self._camera_loop), ("mic_array", self._mic_loop)):
                    tg.create_task(supervise(kind, loop, publish, self.clock, self.retry_s, wake=self._wake[kind]))
                tg.create_task(self._stats_loop())
                tg.create_task(self._card_loop())
                tg.create_task(self._watch_devices())
                if self.program is not None:
                    tg.create_task(supervise("program_camera", self._program_loop, publish, self.clock, self.retry_s))
                if self.playback is not None:
                    play, wake = self.playback.run, self._wake["speaker"]
                    tg.create_task(supervise("speaker", play, publish, self.clock, self.retry_s, wake=wake))
        finally:
            # wait for a detection in flight: the detector may be closed right after this returns
            self._pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True))


async def _probe(source: Any) -> None:
    """Start ``source``, take one item, stop it (whatever happens)."""
    try:
        await source.start()
        await source.recv()
    finally:
        with contextlib.suppress(Exception):
            await source.stop()


async def _pump(
    source: Any,
    handle: Callable[[Any], None],
    started: Callable[[], None],
    on_start: Callable[[], None] | None = None,
    on_end: Callable[[], None] | None = None,
) -> None:
    """Start ``source``, hand each item it delivers to ``handle`` (``started()`` after the first), stop it
    whatever happens (``on_end()`` first)."""
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
        if on_end is not None:
            on_end()
        await source.stop()
