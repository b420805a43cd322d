"""The guided mic-array calibration end to end: a simulated room whose array is turned 20 deg in the scene but
not in the config, the live box on its recording (file camera, WAV array, a virtual capture clock), the panel
server, and the calibration done through the real HTTP API (``/api/calibration``) while the people at the
table's ends talk. Before, the box hears the left talker ~20 deg off (no face there: no close shot); after
saving, the same talker is heard within a few degrees of their face and framed; the calibration is a config
revision on disk that a restarted box loads; a refused calibration keeps the saved one."""

from __future__ import annotations

import asyncio
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from appliance.box import RoomBox
from appliance.calibrator import Calibrator
from appliance.config import Config, load_config
from appliance.control.auth import Auth, PinStore, TokenStore
from appliance.control.guard import Control
from appliance.control.store import ConfigStore
from appliance.messages import Faces, Shot
from appliance.perception.watch import FaceWatcher
from appliance.step import calibration_of
from appliance.streaming.hub import EventBus, LatestFrame
from appliance.streaming.server import PanelServer, create_app
from common.clock import VirtualClock
from drivers.base import Frame
from drivers.files import FileCamera, WavMicArray

ROTATION_DEG = 20.0
RING = [(0.0463, -0.1, 0.0), (0.02315, -0.1, 0.040097), (-0.02315, -0.1, 0.040097)]
RING += [(-x, y, -z) for x, y, z in RING]
ANN, CAT = -25.0, 22.0  # the left and right ends of the table (camera azimuths, as short.toml seats them)

SCENE = """
duration_s = 13.0

[room]
size_m = [6.0, 5.0, 2.8]
rt60_s = 0.3
noise_db = -60.0
seed = 5

[camera]
position_m = [3.0, 0.05, 1.25]
hfov_deg = 90.0
width = 960
height = 540
fps = 10.0

[mic_array]
sample_rate = 16000
positions = {positions}

[[people]]
id = "ann"
seat_m = [2.155, 1.863]
face = "astronaut"
shirt_rgb = [200, 90, 40]
utterances = [
  {{ start_s = 0.3, text = "Good morning all, I am sitting at the left end of the table today.", voice = "en-us+f3" }},
  {{ start_s = 9.4, text = "Thank you, that is all from me on the left side.", voice = "en-us+f3" }},
]

[[people]]
id = "ben"
seat_m = [3.0, 2.65]
face = "lfw:3"
shirt_rgb = [40, 70, 140]

[[people]]
id = "cat"
seat_m = [3.862, 2.183]
face = "lfw:2"
shirt_rgb = [60, 140, 80]
utterances = [
  {{ start_s = 4.9, text = "And I am at the right end of the table, next to the big window.", voice = "en-gb+f2" }},
]
"""


def turned(positions: list[tuple[float, float, float]], yaw_deg: float) -> list[list[float]]:
    """The array turned right by ``yaw_deg`` about the vertical through its centre."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    return [[round(x * c + z * s, 6), y, round(-x * s + z * c, 6)] for x, y, z in positions]


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from drivers.simroom.export import render_to_dir

    out = tmp_path_factory.mktemp("turned")
    scene = out / "scene.toml"
    scene.write_text(SCENE.format(positions=turned(RING, ROTATION_DEG)))
    return render_to_dir(scene, out / "render")


def box_config(room: Path) -> Config:
    """The rendered config with the array as the installer wrote it: not turned."""
    cfg = load_config(room / "config.toml")
    mics = cfg.mic_array.model_copy(update={"positions": list(RING), "path": str(room / "array.wav")})
    cal = cfg.calibration.model_copy(update={"capture_s": 2.5})
    # the lips would find the talker despite the turned array: off, to see what the calibration does alone
    director = cfg.director.model_copy(update={"lips": False})
    return cfg.model_copy(update={"mic_arrays": {"main": mics}, "calibration": cal, "director": director})


class PacedClock(VirtualClock):
    """A virtual clock that does not move on while ``busy()``.

    A :class:`VirtualClock` moves on after ``tick_s`` of real time whatever runs on worker threads, which it
    does not see: the camera's decoding and the box's face detection. On a loaded machine it would run
    seconds ahead of them (a capture window with no detection in it, faces stamped before it); held while
    they work, the box sees the recording as a box that keeps up does, however slow the machine.
    """

    def __init__(self, start: float, tick_s: float, busy: Callable[[], bool]) -> None:
        super().__init__(start, tick_s)
        self.busy = busy

    def _on_tick(self) -> None:
        if self.busy():  # the same time, looked at again a tick later
            self._tick = asyncio.get_running_loop().call_later(self.tick_s, self._on_tick)
            return
        super()._on_tick()


class PacedCamera:
    """The recording, decoded on the camera's reader thread (``reading`` meanwhile), paced on the clock here."""

    def __init__(self, camera: FileCamera, clock: VirtualClock) -> None:
        self.camera, self.clock, self.name = camera, clock, camera.name
        self.reading = False

    async def start(self) -> None:
        await self.camera.start()

    async def recv(self) -> Frame:
        self.reading = True
        try:
            frame = await self.camera.recv()
        finally:
            self.reading = False
        await self.clock.sleep_until(frame.t)
        return frame

    async def stop(self) -> None:
        await self.camera.stop()


class Detecting:
    """The box's detector, saying whether a detection is running (on the box's worker thread)."""

    def __init__(self, watcher: FaceWatcher) -> None:
        self.watcher = watcher
        self.running = False

    def detect(self, image: np.ndarray, t: float) -> Faces:
        self.running = True
        try:
            return self.watcher.detect(image, t)
        finally:
            self.running = False

    def close(self) -> None:
        self.watcher.close()


class Run:
    """The live box, its panel server and a client, on one virtual clock.

    The clock waits for the camera's decoding and the face detection, and from :meth:`ask_capture` until the
    capture begins (a request on its way, from the client or a browser): a loaded machine is slower, not
    seconds of the recording further on.
    """

    def __init__(self, room: Path, home: Path, tick_s: float = 0.003, autostart: bool = True) -> None:
        self.room, self.home, self.tick_s, self.autostart = room, home, tick_s, autostart
        self.events: list[tuple[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.asked = False  # a capture asked for, not begun yet

    def busy(self) -> bool:
        if self.asked and self.calibrator.capturing is not None:
            self.asked = False
        return self.camera.reading or self.detecting.running or self.asked

    def ask_capture(self) -> None:
        """Hold the clock until the capture about to be asked for has begun."""
        self.asked = True

    async def __aenter__(self) -> Run:
        cfg = box_config(self.room)
        self.clock = PacedClock(1000.0, self.tick_s, self.busy)
        self.bus = EventBus(queue_size=100_000)
        self.seen = self.bus.subscribe()
        self.watcher = FaceWatcher.from_config(cfg.detector, cfg.camera.hfov_deg)
        self.mics = WavMicArray(self.room / "array.wav", realtime=True, clock=self.clock)
        self.camera = PacedCamera(FileCamera(self.room / "room.mp4", realtime=False, clock=self.clock), self.clock)
        self.detecting = Detecting(self.watcher)
        self.box = RoomBox(
            cfg,
            self.camera,
            self.mics,
            self.detecting,
            LatestFrame(),
            None,
            self.bus,
            clock=self.clock,
        )
        auth = Auth(TokenStore(self.home / "tokens.json"), PinStore(self.home / "pin.json"))
        self.store = ConfigStore(self.home / "config.toml", self.home / "config-revisions", cfg)
        control = Control(auth, store=self.store, on_config=self.box.on_config)
        self.token = auth.tokens.create("admin", "it")[1]
        self.calibrator = Calibrator(
            lambda: self.box.cfg, self.bus, self.clock, store=self.store, on_config=self.box.on_config
        )
        self.box.calibrator = self.calibrator
        app = create_app(LatestFrame(), None, self.bus, cfg.stream, control=control, calibration=self.calibrator)
        self.server = PanelServer(app, "127.0.0.1", 0)
        port = await self.server.start()
        self.url = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        if self.autostart:
            await self.start_box()
        return self

    async def start_box(self) -> None:
        self.task = asyncio.create_task(self.box.run())

    async def __aexit__(self, *exc: object) -> None:
        self.asked = False
        if self.task is not None:
            self.task.cancel()
            try:
                await asyncio.wait_for(self.task, 30.0)
            except asyncio.CancelledError:
                pass
        await self.http.close()
        await self.server.stop()
        self.watcher.close()

    def file_time(self, t: float) -> float:
        return t - self.mics._epoch

    async def until_audio(self, file_t: float, then_ask_capture: bool = False) -> None:
        """Take the box's events until a DOA block of the recording's time ``file_t`` has come; then, with
        ``then_ask_capture``, hold the clock until a capture begins (:meth:`ask_capture`)."""
        while True:
            kind, data = await asyncio.wait_for(self.seen.get(), 60.0)
            self.events.append((kind, data))
            if kind == "doa" and self.file_time(data["t"]) >= file_t:
                if then_ask_capture:
                    self.ask_capture()
                return

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        async with self.http.request(method, self.url + path, json=body) as r:
            return r.status, await r.json()

    async def capture(self, point: str) -> tuple[int, dict[str, Any]]:
        self.ask_capture()
        try:
            return await self.call("POST", "/api/calibration/capture", {"point": point})
        finally:
            self.asked = False

    def doas(self, t0: float, t1: float) -> list[float]:
        return [
            d["azimuth_deg"]
            for k, d in self.events
            if k == "doa" and d["speech"] and d["azimuth_deg"] is not None and t0 <= self.file_time(d["t"]) <= t1
        ]


def _err(azimuths: list[float], truth: float) -> float:
    return statistics.median(azimuths) - truth


async def _calibrate(room: Path, home: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Run(room, home) as run:
        status, state = await run.call("GET", "/api/calibration")
        assert status == 200 and state["calibrated"] is False and "left end of the table" in state["prompts"]["left"]
        await run.until_audio(0.9)
        capturing = asyncio.ensure_future(run.capture("left"))
        while run.calibrator.capturing is None and not capturing.done():
            await asyncio.sleep(0.01)
        # a discard while the capture runs would be undone by its point: refused (before: 200, then the point)
        out["discard_while_capturing"] = await run.call("POST", "/api/calibration/discard")
        status, left = await capturing
        assert status == 200, left
        out["left"] = left["point"]
        await run.until_audio(5.5)
        status, right = await run.capture("right")
        assert status == 200, right
        out["right"] = right["point"]
        assert right["proposal_ok"] is True, right
        out["before_left"] = run.doas(0.5, 3.5)  # as heard before the calibration (published unmapped)
        status, saved = await run.call("POST", "/api/calibration/save")
        assert status == 200, saved
        out["saved"] = saved
        out["saved_at"] = run.file_time(run.clock.now())
        await run.until_audio(12.8)
        out["after_left"] = run.doas(max(9.4, out["saved_at"]), 12.8)
        out["shots_after"] = [Shot.from_json(d) for k, d in run.events if k == "shot" and run.file_time(d["t"]) >= 9.4]
        out["shots_before"] = [
            Shot.from_json(d) for k, d in run.events if k == "shot" and 1.5 <= run.file_time(d["t"]) <= 4.0
        ]
        status, state = await run.call("GET", "/api/state")
        out["state"] = state
        # a calibration that would turn the array behind the camera is refused; the saved one stays
        run.calibrator.captured["left"] = _point("left", 160.0, ANN)
        status, bad = await run.call("POST", "/api/calibration/save")
        out["refused"] = (status, bad)
        out["config_after_refusal"] = run.store.current.calibration
        out["step_cal"] = run.box.step.calibration
        # the config before the calibration, restored through the API: the panels are told (before, /api/state
        # kept saying "calibrated" until the next calibration call)
        out["file"] = load_config(home / "config.toml")
        out["restored"], _ = await run.call("POST", "/api/config/revisions/1/restore")
        status, out["state_after_restore"] = await run.call("GET", "/api/state")
    return out


def _point(name: str, doa: float, camera: float) -> Any:
    from appliance.calibration import Point

    return Point(name, doa, camera, 30, 2.0, 5)


def test_the_guided_calibration_through_the_api_corrects_a_turned_array(room: Path, tmp_path: Path) -> None:
    got = asyncio.run(_calibrate(room, tmp_path))
    left, right = got["left"], got["right"]
    print(f"\ncaptured left {left}, right {right}")
    # the points: heard ~20 deg to the left of the faces, the faces at the table's ends
    assert abs(left["camera_deg"] - ANN) < 3.0 and abs(right["camera_deg"] - CAT) < 3.0
    for p in (left, right):  # the listener hears this array's turn as 15-17 deg (its bias near broadside)
        assert 10.0 < p["camera_deg"] - p["doa_deg"] < 25.0, p
    before = _err(got["before_left"], ANN)
    after = _err(got["after_left"], ANN)
    print(f"left talker: heard {before:+.1f} deg off before, {after:+.1f} deg after ({len(got['after_left'])} blocks)")
    assert -25.0 < before < -10.0  # the turned array: heard well to the left of the face
    assert len(got["after_left"]) >= 10 and abs(after) < 4.0
    # before: nobody's face where the voice was, so no close shot of the talker; after: the talker is framed
    assert not any(s.mode == "speaker" and abs((s.target_azimuth_deg or 99) - ANN) < 6 for s in got["shots_before"])
    assert any(s.mode == "speaker" and abs((s.target_azimuth_deg or 99) - ANN) < 6 for s in got["shots_after"])
    saved = got["saved"]
    assert saved["calibrated"] and saved["in_use"] and saved["when"] and 10 < saved["rotation_deg"] < 25
    assert saved["revision"] >= 2 and saved["captured"] == []
    assert got["state"]["calibration"]["calibrated"] is True  # /api/state says so, and when
    # the revision is on disk: a box started again loads it and maps the same way
    cfg = got["file"]
    assert [list(p) for p in cfg.calibration.points] == [
        [left["doa_deg"], left["camera_deg"]],
        [right["doa_deg"], right["camera_deg"]],
    ]
    reloaded = calibration_of(cfg)
    assert reloaded is not None and abs(reloaded.to_camera(left["doa_deg"]) - left["camera_deg"]) < 0.01
    # the refused one: a one-line reason, the saved calibration kept, live and on disk
    status, bad = got["refused"]
    assert status == 422 and "\n" not in bad["error"] and "not saved" in bad["error"], bad
    assert got["config_after_refusal"].points == cfg.calibration.points
    status, refused = got["discard_while_capturing"]
    assert status == 409 and refused["error"] == "capturing the left point: discard when it is done"
    assert got["restored"] == 200 and got["state_after_restore"]["calibration"]["calibrated"] is False
    assert got["step_cal"] is not None and got["step_cal"].knots == reloaded.knots
    assert load_config(tmp_path / "config.toml").calibration.points == []  # the restore, on disk


def test_roombox_process_applies_the_same_calibration(room: Path) -> None:
    """Offline: the points captured from the recording's own DOA blocks and faces by the pure collector, the
    fit written to the config, and ``roombox process``'s step (the live box's) frames the talkers."""
    from appliance.calibration import PointCollector, face_azimuths
    from appliance.perception.hearing import make_ears
    from appliance.process import run_offline
    from appliance.score import score
    from drivers.files import iter_video_frames, read_array_wav, read_jsonl

    cfg = box_config(room)
    doas = make_ears(cfg.mic_array, cfg.doa, cfg.tracker).feed(read_array_wav(room / "array.wav", cfg.mic_array), 0.0)
    windows = [
        (PointCollector("left", cfg.calibration.limits), 0.9),
        (PointCollector("right", cfg.calibration.limits), 5.5),
    ]
    with FaceWatcher.from_config(cfg.detector, cfg.camera.hfov_deg) as watcher:
        for frame in iter_video_frames(room / "room.mp4"):
            for col, t0 in windows:  # a detection every other frame while the capture listens
                if t0 <= frame.t <= t0 + 2.5 and round(frame.t * 10) % 2 == 0:
                    col.add_faces(face_azimuths(watcher.detect(frame.image, frame.t), cfg.camera.hfov_deg))
    points = []
    for col, t0 in windows:
        col.add_doas([d for d in doas if t0 < d.t <= t0 + 2.5])
        p = col.point()
        points.append((round(p.doa_deg, 2), round(p.camera_deg, 2)))
    calibrated = cfg.model_copy(
        update={"calibration": cfg.calibration.model_validate({"points": points, "mic_array": "main"})}
    )
    truth = read_jsonl(room / "truth.jsonl")
    plain = score(list(run_offline(room / "room.mp4", room / "array.wav", cfg)), truth)
    fixed = score(list(run_offline(room / "room.mp4", room / "array.wav", calibrated)), truth)
    print(
        f"\nroombox process, talker framed after 2 s: {plain.framed_after_grace_frac:.0%} as configured, "
        f"{fixed.framed_after_grace_frac:.0%} calibrated ({points})"
    )
    assert plain.framed_after_grace_frac < 0.3 and fixed.framed_after_grace_frac > 0.8


def test_the_panel_walks_through_the_calibration_in_chromium(
    room: Path, tmp_path: Path, chromium: Any, artifacts_dir: Path
) -> None:
    """The same room, driven by clicks on the panel's settings: Listen (left), Listen (right), the fit, Save."""
    from tests.test_streaming import LoopThread

    lt = LoopThread()
    run = Run(room, tmp_path, tick_s=0.01, autostart=False)
    lt.run(run.__aenter__())
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(run.url + "/#token=" + run.token)  # an admin token: the settings open without the PIN
        page.wait_for_function("window.roombox.signedIn === true", timeout=30_000)
        page.click("#settings-open")
        page.wait_for_selector("#calib:not(.hidden)", timeout=30_000)
        # The page's own markup says "not calibrated" before the box's state arrives: wait for the prompt the
        # panel draws from that state, then read both.
        page.wait_for_function("document.getElementById('calib-prompt').textContent !== ''", timeout=30_000)
        assert page.inner_text("#calib-status").startswith("not calibrated: ")
        assert "left end of the table" in page.inner_text("#calib-prompt")
        lt.run(run.start_box())
        lt.run(run.until_audio(0.9, then_ask_capture=True), timeout=120)
        page.click("#calib-listen")  # left
        page.wait_for_function("document.querySelectorAll('#calib-points .calib-point').length === 1", timeout=60_000)
        assert page.inner_text("#calib-points").startswith("left: heard at −")
        assert "right end of the table" in page.inner_text("#calib-prompt")
        lt.run(run.until_audio(5.5, then_ask_capture=True), timeout=120)
        page.click("#calib-listen")  # right
        page.wait_for_selector("#calib-points .calib-fit.good", timeout=60_000)
        assert re.search(r"array turned \+\d+", page.inner_text("#calib-points .calib-fit"))
        page.click("#calib-save")
        saved = "(window.roombox.calibMessage || {}).text?.startsWith('saved as revision')"
        page.wait_for_function(saved, timeout=30_000)
        page.wait_for_function("document.getElementById('calib-status').textContent.startsWith('calibrated')")
        (artifacts_dir / "panel-calibrated.png").write_bytes(page.locator("#settings-card").screenshot())
        assert run.store.current.calibration.points and run.box.step.calibration is not None
        assert not errors, errors
    finally:
        page.close()
        lt.run(run.__aexit__(None, None, None), timeout=60)
        lt.close()
