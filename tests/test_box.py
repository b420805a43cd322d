"""The live box on file sources and a virtual capture clock: frames flow to the output, a vanished device is
reported and retried, and a restarted camera is searched for faces again. No wall-clock windows: the clock
moves from one device's wake-up to the next, however loaded the machine is."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile

from appliance.box import RoomBox
from appliance.config import Config, DetectorConfig
from appliance.messages import Doa, Face, Faces
from appliance.perception.faces import FaceDetector
from appliance.perception.hearing import Gained
from appliance.streaming.hub import EventBus, LatestFrame
from common.clock import VirtualClock
from drivers.base import Frame, SourceLost
from drivers.files import FileCamera, VideoFileWriter, WavMicArray


def write_video(path: Path, frames: int) -> None:
    w = VideoFileWriter(path, 640, 360, 15.0)
    for i in range(frames):
        img = np.full((360, 640, 3), 40, np.uint8)
        img[:, (i * 20) % 600 : (i * 20) % 600 + 40] = 200
        w.write(img)
    w.close()


def write_noise(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    scipy.io.wavfile.write(path, 16000, (rng.normal(0, 0.01, (n, 6)) * 32767).astype(np.int16))


Event = tuple[str, Any]


async def run_box(
    camera_path: Path,
    wav: Path,
    cfg: Config,
    until: Callable[[list[Event]], bool],
    on_event: Callable[[Event], None] = lambda e: None,
    retry_s: float = 0.2,
    timings: Any = None,
) -> list[Event]:
    """Run the box on a virtual clock until ``until(events)``; the wall clock only bounds a box that hangs."""
    clock = VirtualClock(1000.0, tick_s=0.002)
    events, frames = EventBus(queue_size=100_000), LatestFrame()
    seen = events.subscribe()
    out: list[Event] = []
    with FaceDetector(cfg=cfg.detector) as detector:
        box = RoomBox(
            cfg,
            FileCamera(camera_path, realtime=True, clock=clock),
            WavMicArray(wav, realtime=True, clock=clock),
            detector,
            frames,
            None,
            events,
            clock=clock,
            retry_s=retry_s,
        )
        box.timings = timings
        task = asyncio.create_task(box.run())
        try:
            while not until(out):
                out.append(await asyncio.wait_for(seen.get(), 60.0))
                on_event(out[-1])
        finally:
            task.cancel()
            try:
                await asyncio.wait_for(task, 30.0)  # a box that does not stop fails here
            except asyncio.CancelledError:
                pass
    while not seen.empty():
        out.append(seen.get_nowait())
    return out + [("frames", {"published": frames.published})]


def camera_states(events: list[Event]) -> list[dict[str, Any]]:
    return [d for k, d in events if k == "device" and d["name"] == "camera"]


def test_a_camera_that_vanishes_is_reported_and_retried(tmp_path: Path) -> None:
    write_noise(tmp_path / "a.wav", 10.0, 0)
    cfg = Config(detector=DetectorConfig(tiles=(1, 1)))
    camera = tmp_path / "camera.mp4"  # not there yet: the camera is unplugged

    def plug_in(event: Event) -> None:
        if event[0] == "device" and event[1]["state"] == "retrying" and not camera.exists():
            write_video(camera, 10)

    def done(events: list[Event]) -> bool:  # the file ended, and the box is retrying
        lost = [i for i, d in enumerate(camera_states(events)) if "end of file" in d["detail"]]
        return bool(lost) and len(camera_states(events)) > lost[0] + 1

    events = asyncio.run(run_box(camera, tmp_path / "a.wav", cfg, done, plug_in))

    camera_events = camera_states(events)
    states = [d["state"] for d in camera_events]
    details = [d["detail"] for d in camera_events if d["state"] == "lost"]
    assert states[:3] == ["starting", "lost", "retrying"]
    assert "no such file" in details[0]
    assert "running" in states  # plugged in: it came back
    assert any("end of file" in d for d in details)  # the 10-frame file ended: lost again, and retried
    eof = next(i for i, d in enumerate(camera_events) if "end of file" in d["detail"])
    assert camera_events[eof + 1]["state"] == "retrying"
    assert states[-1] == "stopped"
    shots = [d for k, d in events if k == "shot"]
    assert len(shots) >= 10 and events[-1][1]["published"] == len(shots)
    assert [d["state"] for k, d in events if k == "device" and d["name"] == "mic_array"][:2] == ["starting", "running"]
    # the back-off is on the capture clock: the first retry comes retry_s after the loss
    lost, retrying = camera_events[1], camera_events[2]
    assert retrying["t"] - lost["t"] == pytest.approx(0.2, abs=1e-3)


def test_a_camera_that_keeps_restarting_is_searched_again_after_each_start(tmp_path: Path) -> None:
    write_noise(tmp_path / "a.wav", 10.0, 1)
    camera = tmp_path / "camera.mp4"
    write_video(camera, 10)  # 0.67 s of video, played on the clock: it ends, and restarts
    cfg = Config(detector=DetectorConfig(tiles=(1, 1), interval_s=0.2))

    def done(events: list[Event]) -> bool:
        return sum(1 for d in camera_states(events) if d["state"] == "running") >= 4

    events = asyncio.run(run_box(camera, tmp_path / "a.wav", cfg, done, retry_s=0.05))

    starts = [d["t"] for k, d in events if k == "device" and d["name"] == "camera" and d["state"] == "running"]
    shots = [d["t"] for k, d in events if k == "shot"]
    # the first frame of each start is a shot whose time is not one frame after the one before it
    first_frames = [t for i, t in enumerate(shots) if i == 0 or abs(t - shots[i - 1] - 1 / 15) > 1e-3]
    detected_at = {d["t"] for k, d in events if k == "faces"}
    assert len(starts) >= 3 and len(first_frames) == len(starts)
    # each start is searched on its first frame; a start whose search outlasted it (the detector runs in real
    # time, the clock is virtual) hands nothing on, so at least the starts after the first are seen
    searched = [t for t in first_frames if round(t, 3) in detected_at]
    assert len(searched) >= 2 and searched[-1] > first_frames[0], (first_frames, sorted(detected_at))


def test_a_config_change_applies_live_where_it_can_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    write_noise(tmp_path / "a.wav", 1.0, 2)
    cfg = Config(detector=DetectorConfig(tiles=(1, 1)))
    with FaceDetector(cfg=cfg.detector) as detector:
        box = RoomBox(
            cfg,
            FileCamera(tmp_path / "none.mp4"),
            WavMicArray(tmp_path / "a.wav"),
            detector,
            LatestFrame(),
            None,
            EventBus(),
        )
        faces = Faces(0.0, (Face((900.0, 450.0, 60.0, 60.0), 0.9),), 1920, 1080)
        assert box.step.step(0.0, 1920, 1080, faces).mode == "group"
        box.step.set_mode("gallery", 0.1)
        data = cfg.model_dump(mode="json")
        data["director"]["min_hold_s"] = 4.0
        data["doa"]["min_confidence"] = 0.2
        data["stream"]["fps"] = 20.0
        data["cameras"]["main"]["hfov_deg"] = 70.0
        new = Config.model_validate(data)
        assert box.on_config(new) == ["cameras", "stream"]  # devices and the stream need a restart
        shot = box.step.step(0.2, 1920, 1080, faces)
        assert box.step.director is not None and box.step.director.cfg.min_hold_s == 4.0
        assert box.hearing.listener.doa.min_confidence == 0.2  # type: ignore[attr-defined]
        assert shot.mode == "gallery"  # the chosen mode stays
        # a calibration that sets the array's gain: the hearing hears with it, at once
        data["calibration"]["gain_db"] = 9.5
        assert box.on_config(Config.model_validate(data)) == ["cameras"]  # the running camera: still the old one
        assert isinstance(box.hearing, Gained) and box.hearing.gain_db == 9.5
        # the face detector is built once, at start: a change to it waits for a restart, and says so (before,
        # it was reported as applied while the old detector ran on)
        data["detector"]["min_score"] = 0.95
        assert box.on_config(Config.model_validate(data)) == ["cameras", "detector"]
        # the mic array's positions wait for the device to be opened anew: the hearing keeps the running
        # array's two mics (before, it took 3 at once and the array's 2-channel blocks were refused: "lost")
        ears = box.hearing
        data["mic_arrays"]["main"]["positions"] = [[-0.05, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 0.0, 0.05]]
        assert box.on_config(Config.model_validate(data)) == ["cameras", "mic_arrays"]
        assert box.hearing is ears and box.cfg.mic_array.positions == cfg.mic_array.positions


class _Watching:
    """A box whose camera is unplugged (a file that is not there), its back-off 60 s (far longer than a test
    may take), on the system clock; ``act`` runs once the camera is reported lost, and the camera's states
    are returned."""

    def __init__(self, tmp_path: Path, seed: int) -> None:
        write_noise(tmp_path / "a.wav", 30.0, seed)
        self.tmp_path = tmp_path
        self.cfg = Config(detector=DetectorConfig(tiles=(1, 1)))
        self.out: list[Event] = []

    async def until(self, what: Callable[[], bool]) -> None:
        while not what():
            self.out.append(await asyncio.wait_for(self._seen.get(), 45.0))

    def camera(self, state: str, after: int = 0) -> bool:
        return any(d["state"] == state for d in camera_states(self.out[after:]))

    def run(self, act: Callable[[RoomBox], Awaitable[None]]) -> list[tuple[str, str]]:
        async def scenario() -> None:
            events = EventBus(queue_size=100_000)
            self._seen = events.subscribe()
            with FaceDetector(cfg=self.cfg.detector) as detector:
                missing = FileCamera(self.tmp_path / "camera.mp4", realtime=True)
                mics = WavMicArray(self.tmp_path / "a.wav", realtime=True)
                box = RoomBox(self.cfg, missing, mics, detector, LatestFrame(), None, events, retry_s=60.0)
                task = asyncio.create_task(box.run())
                try:
                    await self.until(lambda: self.camera("lost"))
                    await act(box)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait_for(task, 30.0)

        asyncio.run(scenario())
        states = [(d["state"], d["detail"]) for d in camera_states(self.out)]
        assert states[:2] == [("starting", ""), ("lost", states[1][1])] and "no such file" in states[1][1]
        return states


def test_a_chosen_camera_that_cannot_be_opened_is_refused_and_one_that_can_ends_the_back_off(tmp_path: Path) -> None:
    """The panel's choice of a camera goes through ``try_source``: one that cannot be opened is refused with
    the reason and the box keeps its own (before, the box switched to it and lost its camera); a good one
    starts at once, even while the failed camera's supervisor waits out its back-off (before, up to 30 s)."""
    write_video(tmp_path / "good.mp4", 300)
    box_test = _Watching(tmp_path, 3)

    async def act(box: RoomBox) -> None:
        missing, cfg = box.camera, box_test.cfg
        with pytest.raises(ValueError, match=r"^camera 'gone' cannot be used: .*gone\.mp4: no such file"):
            await box.try_source("camera", "gone", FileCamera(tmp_path / "gone.mp4", realtime=True), cfg)
        assert box.camera is missing
        mark = len(box_test.out)
        await box.try_source("camera", "good", FileCamera(tmp_path / "good.mp4", realtime=True), cfg)
        await box_test.until(lambda: box_test.camera("running", mark))

    states = box_test.run(act)
    assert ("retrying", "another device was chosen") in states  # the back-off ended: not "after 60.0 s"
    assert states[-1][0] == "running"


def test_a_camera_plugged_in_is_tried_at_once_not_after_its_back_off(tmp_path: Path) -> None:
    """A lost device waited out its back-off (up to 30 s) before it was tried again, though it had been
    plugged in meanwhile. Now the box watches where its driver says the device shows (a file camera: its
    file) and ends the pause when that changes. The file is put in place whole (renamed), as a device node
    appears."""
    write_video(tmp_path / ".later.mp4", 300)
    box_test = _Watching(tmp_path, 4)

    async def act(box: RoomBox) -> None:
        mark = len(box_test.out)
        (tmp_path / ".later.mp4").rename(tmp_path / "camera.mp4")  # plugged in
        await box_test.until(lambda: box_test.camera("running", mark))

    states = box_test.run(act)
    assert ("retrying", "a device was plugged in or removed") in states, states  # not "after 60.0 s"
    assert states[-1][0] == "running"


def test_the_box_reports_how_long_detection_and_hearing_take(tmp_path: Path) -> None:
    """``/metrics`` has histograms of the face detection's and the hearing's times, which the live box never
    fed (their counts stayed 0 while detections ran). Now the box reports each detection and each audio
    block."""
    from appliance.control.metrics import Metrics

    write_noise(tmp_path / "a.wav", 10.0, 5)
    write_video(tmp_path / "v.mp4", 90)
    metrics = Metrics(process=False)

    def enough(events: list[Event]) -> bool:
        return sum(k == "faces" for k, _ in events) >= 3

    cfg = Config(detector=DetectorConfig(tiles=(1, 1)))
    events = asyncio.run(run_box(tmp_path / "v.mp4", tmp_path / "a.wav", cfg, enough, timings=metrics))
    faces = sum(k == "faces" for k, _ in events)
    samples = [s for h in (metrics.detection_seconds, metrics.doa_seconds) for m in h.collect() for s in m.samples]
    count = {s.name: s.value for s in samples if s.name.endswith("_count")}
    assert count["roombox_detection_seconds_count"] >= faces >= 3, count
    assert count["roombox_doa_seconds_count"] > 10, count


class _ThreadFed:
    """A camera as a capture thread feeds one: the thread tells the loop of each new picture (every 2 ms),
    and ``recv`` waits for that with ``asyncio.wait_for``, as the drivers did."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self._ready = asyncio.Event()
        self._stop = threading.Event()
        self._image = np.full((180, 320, 3), 90, np.uint8)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop.clear()

        def feed() -> None:
            while not self._stop.is_set():
                loop.call_soon_threadsafe(self._ready.set)
                time.sleep(0.002)

        threading.Thread(target=feed, daemon=True).start()

    async def recv(self) -> Frame:
        self.calls += 1
        self._ready.clear()
        await asyncio.wait_for(self._ready.wait(), 5.0)
        return Frame(t=time.monotonic(), image=self._image)

    async def stop(self) -> None:
        self._stop.set()


def test_a_camera_switched_away_from_stops_even_when_the_cancel_comes_with_a_picture(tmp_path: Path) -> None:
    """A sweep switched cameras on the panel: from the second switch on, the old camera ran on until it
    failed, while the panel, the config and the framing took the new one. On Python 3.11 ``asyncio.wait_for``
    swallows a cancel that comes just as the picture it waits for arrives, and the box cancelled the old
    camera's pump once. Switched here 150 times between two cameras fed every 2 ms: each new camera must be
    read, which the box does only once the old one's pump has ended."""
    box_test = _Watching(tmp_path, 5)
    cams = [_ThreadFed("a"), _ThreadFed("b")]

    async def act(box: RoomBox) -> None:
        try:
            for i in range(150):
                cam = cams[i % 2]
                before = cam.calls
                box.use_source("camera", cam.name, cam, box_test.cfg)
                deadline = time.monotonic() + 10.0
                while cam.calls == before:
                    assert time.monotonic() < deadline, f"switch {i + 1}: the old camera's pump did not end"
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.02)
        finally:  # no picture comes any more: a pump that swallowed its cancel ends on its 5 s timeout
            for cam in cams:
                cam._stop.set()

    failed: list[BaseException] = []

    def run() -> None:
        try:
            box_test.run(act)
        except BaseException as e:  # raised below, in the test's thread
            failed.append(e)

    runner = threading.Thread(target=run, daemon=True)  # a pump that never ends hung asyncio.run's clean-up
    runner.start()
    runner.join(180.0)
    assert not runner.is_alive(), "the box did not stop: a camera's pump outlived every cancel"
    if failed:
        raise failed[0]


def test_a_card_goes_out_in_the_place_of_a_lost_camera(tmp_path: Path) -> None:
    """A sweep: while the camera was lost nothing was published, so the far end and the room's display kept
    the last picture, frozen, as if the room had stopped. Now a card says the camera is unavailable; it is not
    counted as a framed picture (the health still sees none)."""
    from appliance.box import CARD_AFTER_S
    from appliance.framing import CARD_BACKGROUND

    box_test = _Watching(tmp_path, 6)
    seen: dict[str, Any] = {}

    async def act(box: RoomBox) -> None:
        frames = box.frames
        assert isinstance(frames, LatestFrame)
        lost_at = time.monotonic()
        while frames.latest() is None:
            assert time.monotonic() - lost_at < CARD_AFTER_S + 20.0, "no card while the camera is lost"
            await asyncio.sleep(0.05)
        seen["after_s"] = time.monotonic() - lost_at
        seen["image"] = frames.latest()[1]  # type: ignore[index]
        seen["published"], seen["put_at"] = frames.published, frames.put_at

    box_test.run(act)
    image = seen["image"]
    assert image.shape == (box_test.cfg.stream.height, box_test.cfg.stream.width, 3)
    background = (np.abs(image.astype(int) - np.array(CARD_BACKGROUND)).sum(axis=2) < 10).mean()
    assert 0.9 < background < 1.0, background  # the card's colour, and some text on it
    assert seen["published"] == 0 and seen["put_at"] is None  # not a framed picture
    assert seen["after_s"] >= CARD_AFTER_S - 1.0, seen["after_s"]  # not at the first hiccup


def test_the_mic_arrays_losses_are_in_the_stats(tmp_path: Path) -> None:
    """A sweep: a sound card's overruns, the blocks the box did not take in time and the stream's gaps were
    counted by the driver (``PortAudioMicArray.counters``) and shown nowhere; now in the stats (the panel's
    Box card, /api/status, /metrics)."""
    write_noise(tmp_path / "a.wav", 1.0, 2)

    class CountingMics(WavMicArray):  # what a sound card's driver adds to a source
        counters = {"overflows": 3, "dropped_blocks": 100, "gaps": 2}

    cfg = Config(detector=DetectorConfig(tiles=(1, 1)))
    with FaceDetector(cfg=cfg.detector) as detector:
        for mics, want in (
            (CountingMics(tmp_path / "a.wav"), (3, 100, 2)),
            (WavMicArray(tmp_path / "a.wav"), (0, 0, 0)),
        ):
            box = RoomBox(cfg, FileCamera(tmp_path / "none.mp4"), mics, detector, LatestFrame(), None, EventBus())
            stats = box.stats().to_json()
            assert (stats["audio_overflows"], stats["audio_blocks_dropped"], stats["audio_gaps"]) == want


def test_a_lost_mic_array_leaves_no_talker_on_the_panel(tmp_path: Path) -> None:
    """A sweep: after the mic array was lost, /api/state and the panel kept the last talker's direction
    ("speech": true) until it came back. Now the loss says nothing is heard."""

    class Unplugged(WavMicArray):  # a sound card pulled out: its next block never comes
        async def recv(self) -> Any:
            raise SourceLost("unplugged")

    write_noise(tmp_path / "a.wav", 1.0, 2)

    async def scenario() -> dict[str, Any]:
        events = EventBus()
        cfg = Config(detector=DetectorConfig(tiles=(1, 1)))
        with FaceDetector(cfg=cfg.detector) as detector:
            mics = Unplugged(tmp_path / "a.wav")
            box = RoomBox(cfg, FileCamera(tmp_path / "none.mp4"), mics, detector, LatestFrame(), None, events)
            events.publish(Doa(0.0, 30.0, True))  # the last talker heard before the card went
            seen = events.subscribe()
            task = asyncio.create_task(box.run())
            try:
                while True:
                    kind, payload = await asyncio.wait_for(seen.get(), 45.0)
                    if kind == "device" and payload["name"] == "mic_array" and payload["state"] == "lost":
                        break
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 30.0)
        return events.snapshot()["doa"]

    last = asyncio.run(scenario())
    assert last["azimuth_deg"] is None and last["speech"] is False, last
