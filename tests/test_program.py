"""The program picture: with a PTZ camera following the director, the meeting sees the PTZ camera's picture,
and the wide camera's crop while the PTZ camera (or its head) is away.

The end-to-end test runs the box on a virtual clock over real file sources, with the VISCA camera simulator
as the PTZ camera: the follower moves it over UDP on 127.0.0.1, and its virtual view over the same wide
picture is the program source. Each picture put to the stream hub is recognised as the simulator's view at
its position then, or as the director's crop of the wide picture."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from appliance.box import RoomBox
from appliance.config import Config, parse_config
from appliance.framing import render_shot
from appliance.messages import DeviceStatus, Message, Shot, Stats
from appliance.perception.faces import FaceDetector
from appliance.program import ProgramCamera, centre_box, fill, program_from_config
from appliance.ptz_follow import follower_from_config, view_error_deg
from appliance.streaming.hub import EventBus, LatestFrame
from common.clock import VirtualClock
from common.errors import RoomboxError
from drivers.base import Frame
from drivers.files import FileCamera, VideoFileWriter, WavMicArray, iter_video_frames
from drivers.ptz.simulator import ViscaCameraSim
from tests.test_box import write_noise

WIDE = (960, 540)  # the wide camera's picture
STREAM = (640, 360)  # [stream]
SIM_OUT = (960, 720)  # the PTZ camera's picture: 4:3, so the program is its centre crop
FPS = 10.0


def texture(seed: int = 0) -> np.ndarray:
    """A still picture with detail at every place (blobs of ~12 px), so that two views a few pixels apart
    differ, and smooth enough that H.264 keeps it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (WIDE[1] // 12 + 1, WIDE[0] // 12 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (small.shape[1] * 12, small.shape[0] * 12), interpolation=cv2.INTER_CUBIC)[
        : WIDE[1], : WIDE[0]
    ]


def write_still(path: Path, seconds: float, image: np.ndarray) -> None:
    with VideoFileWriter(path, image.shape[1], image.shape[0], FPS, crf=0, preset="ultrafast") as w:
        for _ in range(round(seconds * FPS)):
            w.write(image)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


# --- the pieces ------------------------------------------------------------------------------------------------


def test_the_program_picture_is_the_centre_at_the_streams_aspect() -> None:
    assert centre_box(960, 720, 640, 360) == (0, 90, 960, 540)  # 4:3 into 16:9: top and bottom cut
    assert centre_box(1920, 1080, 640, 360) == (0, 0, 1920, 1080)
    assert centre_box(1000, 360, 640, 360) == (180, 0, 640, 360)  # wider: the sides cut
    img = np.zeros((720, 960, 3), np.uint8)
    img[90:630] = 200  # the centre 16:9 band
    out = fill(img, 640, 360)
    assert out.shape == (360, 640, 3) and out.min() == 200


def test_the_ptz_picture_goes_out_while_it_is_fresh_and_the_head_answers() -> None:
    clock = VirtualClock(10.0)
    hub = LatestFrame()
    head = [True]
    p = ProgramCamera(FileCamera("none.mp4"), hub, 640, 360, clock, timeout_s=0.5, head=lambda: head[0])
    assert not p.live()  # nothing yet
    img = np.full((720, 1280, 3), 7, np.uint8)
    p.take(Frame(10.0, img))
    assert p.live() and hub.published == 1 and p.shown == 1
    clock.advance(0.4)
    assert p.live()
    clock.advance(0.2)  # 0.6 s without a picture: stalled
    assert not p.live()
    p.take(Frame(10.6, img))
    assert p.live() and hub.published == 2
    head[0] = False  # the head is lost: the picture is not where the director wants it
    p.take(Frame(10.7, img))
    assert not p.live() and hub.published == 2 and p.received == 3
    head[0] = True
    assert p.live()
    p.gone()  # the source is lost
    assert not p.live()


def test_config(tmp_path: Path) -> None:
    head = {"type": "visca-ip", "host": "127.0.0.1", "camera": "ptzcam"}
    cams = {"main": {"type": "file", "path": "x.mp4"}, "ptzcam": {"type": "file", "path": str(tmp_path / "y.mp4")}}
    with pytest.raises(RoomboxError, match=r"\[ptz.head\] camera = 'nope': no \[cameras.nope\] \(have: main, ptzcam\)"):
        parse_config({"cameras": cams, "ptz": {"head": {**head, "camera": "nope"}}})
    with pytest.raises(RoomboxError, match="program_timeout_s"):
        parse_config({"ptz_follow": {"program_timeout_s": 0.0}})
    cfg = parse_config({"cameras": cams, "ptz": {"head": head}, "ptz_follow": {"enabled": True}})
    p = program_from_config(cfg, LatestFrame())  # the head's camera, through the registry
    assert p is not None and isinstance(p.source, FileCamera) and p.source.name == "ptzcam"
    assert (p.width, p.height, p.timeout_s) == (1280, 720, 1.0)
    off = cfg.model_copy(update={"ptz_follow": cfg.ptz_follow.model_copy(update={"enabled": False})})
    assert program_from_config(off, LatestFrame()) is None
    no_camera = parse_config(
        {"cameras": cams, "ptz": {"head": {**head, "camera": None}}, "ptz_follow": {"enabled": True}}
    )
    assert program_from_config(no_camera, LatestFrame()) is None


# --- the box, end to end -----------------------------------------------------------------------------------------

Entry = tuple[str, ...]


@dataclass
class Watch:
    """The stream hub and the event bus seen from the test: every picture put is classified, every status and
    stats message logged, all in the order they happened."""

    wide: np.ndarray  # the wide picture as decoded (all frames of the still are this)
    sim: ViscaCameraSim
    hub: LatestFrame = field(default_factory=LatestFrame)
    bus: EventBus = field(default_factory=lambda: EventBus(queue_size=100_000))
    log: list[Entry] = field(default_factory=list)
    shot: Shot | None = None
    worst: dict[str, float] = field(default_factory=lambda: {"ptz": 0.0, "crop": 0.0, "margin": math.inf})
    right: int = 0  # PTZ pictures of the head turned right (after the manual framing)

    def publish(self, m: Message) -> None:  # the box's EventSink
        if isinstance(m, Shot):
            self.shot = m
        elif isinstance(m, DeviceStatus):
            self.log.append(("device", m.name, m.state, m.detail))
        elif isinstance(m, Stats):
            self.log.append(("stats", m.program))
        self.bus.publish(m)

    def put(self, image: np.ndarray, t: float, framed: bool = True) -> None:  # the box's FrameSink
        assert image.shape == (STREAM[1], STREAM[0], 3)
        self.hub.put(image, t)
        pos = self.sim.position(t)
        x, y, w, h = self.sim.crop_box(WIDE[0], WIDE[1], pos)
        # the simulator's view is (x, y, w, h) at 4:3; the program is its centre 16:9
        ptz = cv2.resize(self.wide[y + h // 8 : y + h - h // 8, x : x + w], STREAM, interpolation=cv2.INTER_AREA)
        crop = np.zeros_like(image) if self.shot is None else render_shot(self.wide, self.shot, *STREAM)
        d_ptz, d_crop = mad(image, ptz), mad(image, crop)
        kind = "ptz" if d_ptz < d_crop else "crop"
        self.worst[kind] = max(self.worst[kind], min(d_ptz, d_crop))
        self.worst["margin"] = min(self.worst["margin"], abs(d_ptz - d_crop))
        if kind == "ptz" and pos.pan_deg > 10:
            self.right += 1
        self.log.append(("frame", kind))

    def frames(self, start: int = 0, end: int | None = None) -> list[str]:
        """The kinds of the pictures put between log entries ``start`` and ``end``."""
        return [e[1] for e in self.log[start:end] if e[0] == "frame"]

    def cycle(self, device: str, after: int = 0) -> tuple[int, int] | None:
        """Where ``device`` was first reported lost (from ``after`` on) and then running again, if it was."""
        lost = self.index("device", device, "lost", after=after)
        back = self.index("device", device, "running", after=lost) if lost >= 0 else -1
        return (lost, back) if back >= 0 else None

    def while_up(self, start: int) -> list[str]:
        """The kinds of the pictures put from log entry ``start`` until the PTZ camera or its head is lost."""
        ends = [i for d in ("program_camera", "ptz") if (i := self.index("device", d, "lost", after=start)) >= 0]
        return self.frames(start, min(ends, default=None))

    def state(self, device: str, at: int) -> str:
        """The state ``device`` was last reported in before log entry ``at``."""
        return next((e[2] for e in reversed(self.log[:at]) if e[:2] == ("device", device)), "")

    def index(self, *entry: str, after: int = 0) -> int:
        """Where the first log entry from ``after`` on begins with ``entry`` (-1: none)."""
        return next((i for i in range(after, len(self.log)) if self.log[i][: len(entry)] == entry), -1)


async def until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def test_the_meeting_sees_the_ptz_camera_and_the_crop_while_it_is_away(tmp_path: Path) -> None:
    still = texture()
    write_still(tmp_path / "wide.mp4", 20.0, still)
    write_still(tmp_path / "ptz.mp4", 2.0, still)  # the PTZ camera's picture source: it ends every 2 s
    write_noise(tmp_path / "a.wav", 20.0, 3)
    wide = next(iter_video_frames(tmp_path / "wide.mp4")).image
    asyncio.run(_meeting(tmp_path, wide))


async def _meeting(tmp_path: Path, wide: np.ndarray) -> None:
    clock = VirtualClock(1000.0, tick_s=0.002)
    sim = ViscaCameraSim(
        FileCamera(tmp_path / "ptz.mp4", realtime=True, name="ptzcam", clock=clock),
        clock=clock,
        source_hfov_deg=90.0,
        hfov_wide_deg=60.0,
        optical_zoom=12.0,
        max_pan_deg_s=400.0,
        zoom_full_s=0.2,
        out_size=SIM_OUT,
    )
    tasks: list[asyncio.Task[Any]] = []
    try:
        port = await sim.serve_udp()  # 127.0.0.1
        cams = {
            "main": {"type": "file", "path": str(tmp_path / "wide.mp4"), "width": WIDE[0], "height": WIDE[1]},
            "ptzcam": {"type": "file", "path": str(tmp_path / "ptz.mp4"), "width": SIM_OUT[0], "height": SIM_OUT[1]},
        }
        head = {"type": "visca-ip", "host": "127.0.0.1", "port": port, "timeout_s": 2.0, "camera": "ptzcam"}
        cfg: Config = parse_config(
            {
                "cameras": cams,
                "ptz": {"head": {**head, "hfov_wide_deg": 60.0, "optical_zoom": 12.0}},
                "ptz_follow": {"enabled": True, "retry_s": 0.2, "program_timeout_s": 0.5},
                "stream": {"width": STREAM[0], "height": STREAM[1]},
                "detector": {"type": "blazeface", "tiles": [1, 1]},
            }
        )
        w = Watch(wide, sim)
        follower = follower_from_config(cfg, w.bus, clock=clock)
        assert follower is not None
        follower.report = w.publish
        program = ProgramCamera(sim, w, STREAM[0], STREAM[1], clock, 0.5, head=lambda: follower.connected)
        with FaceDetector(cfg=cfg.detector) as detector:
            box = RoomBox(
                cfg,
                FileCamera(tmp_path / "wide.mp4", realtime=True, clock=clock),
                WavMicArray(tmp_path / "a.wav", realtime=True, clock=clock),
                detector,
                w,
                None,
                w,
                clock=clock,
                retry_s=0.5,
                stats_every_s=0.05,  # (the virtual clock moves by this while the sources open)
                program=program,
            )
            tasks += [asyncio.create_task(box.run()), asyncio.create_task(follower.serve(w.bus))]
            try:
                await until(lambda: w.frames()[-5:] == ["ptz"] * 5, "the PTZ camera's picture goes out")
                assert w.index("stats", "ptz") >= 0

                # manual framing on the panel, right of the centre: the head turns, the program shows its view
                box.command({"cmd": "ptz", "pan": 0.7, "tilt": 0.0, "zoom": 2.5})
                await until(lambda: w.right >= 5, "the head's view to the right goes out")
                target = follower.planner.commanded
                assert target is not None and target.pan_deg > 20
                assert view_error_deg(sim.position(), target) < 1.0

                # the PTZ camera's source ends (SourceLost): the crop at once, the PTZ picture when it is back
                await until(
                    lambda: (c := w.cycle("program_camera")) is not None and len(w.frames(c[1])) >= 3, "lost, back"
                )
                lost, back = w.cycle("program_camera") or (0, 0)
                assert "end of file" in w.log[lost][3]
                assert w.frames(lost, back) and set(w.frames(lost, back)) == {"crop"}
                assert set(w.while_up(back)) == {"ptz"}
                last_ptz = max(i for i in range(lost) if w.log[i] == ("frame", "ptz"))
                assert 0 <= w.index("stats", "crop", after=last_ptz) < back  # said at once
                assert w.index("stats", "ptz", after=back) >= 0

                # the head stops answering (found out at the next cut): the crop, until it is back
                mark = len(w.log)
                sim.behaviour = "silent"
                box.command({"cmd": "ptz", "pan": -0.5, "tilt": 0.0, "zoom": 2.0})
                await until(lambda: w.index("device", "ptz", "lost", after=mark) >= 0, "the head reported lost")
                await until(
                    lambda: len(w.frames(w.index("device", "ptz", "lost", after=mark))) >= 3, "the crop meanwhile"
                )
                sim.behaviour = "ok"
                await until(lambda: w.cycle("ptz", mark) is not None, "the head back", 40.0)
                gone, returned = w.cycle("ptz", mark) or (0, 0)
                assert w.frames(gone, returned) and set(w.frames(gone, returned)) == {"crop"}

                # the PTZ picture from the head's return (or the PTZ camera's, if it was away then). Its source
                # ends every 2 s: on a loaded machine it may be lost again before a picture goes out, so the
                # first stretch from there in which both are up and pictures went out is the one looked at
                def camera_back(at: int) -> Callable[[], bool]:
                    return lambda: w.index("device", "program_camera", "running", after=at) >= 0

                def pictures_from(at: int) -> Callable[[], bool]:
                    return lambda: len(w.frames(at)) >= 3

                for _ in range(5):
                    if w.state("program_camera", returned) != "running":
                        await until(camera_back(returned), "camera")
                        returned = w.index("device", "program_camera", "running", after=returned)
                    await until(pictures_from(returned), "pictures after the head's return")
                    if "ptz" in w.while_up(returned):
                        break
                    returned = w.index("device", "program_camera", "lost", after=returned) + 1  # from its loss on
                # the crop may go on until the camera's first picture after the return; from then on, the PTZ
                # picture only, as long as both are up
                kinds = w.while_up(returned)
                assert "ptz" in kinds and set(kinds[kinds.index("ptz") :]) == {"ptz"}, kinds
                assert w.hub.published == len(w.frames())
            finally:  # the box stops (and its detection in flight ends) before the detector is closed
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        assert w.worst["ptz"] < 4.0 and w.worst["crop"] < 4.0 and w.worst["margin"] > 8.0, w.worst
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sim.close()
