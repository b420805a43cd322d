"""The simulated room: scenario validation, projection, ground truth, acoustics, export and pacing."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.config import Config, load_config
from common.clock import VirtualClock
from common.geometry import PinholeCamera, azimuth_of_point
from drivers.files import iter_video_frames, read_wav
from drivers.simroom.audio import render_audio, render_habets, speech_intervals
from drivers.simroom.devices import sections_for
from drivers.simroom.export import render_to_dir
from drivers.simroom.room import SimulatedRoom
from drivers.simroom.scenario import (
    ScenarioError,
    builtin_scenario,
    load_scenario,
    parse_scenario,
)
from drivers.simroom.video import FACE_WIDTH_M, RoomRenderer

RING = [[0.0463 * math.cos(math.radians(a)), -0.1, 0.0463 * math.sin(math.radians(a))] for a in range(0, 360, 60)]


def scene(people: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "duration_s": 2.0,
        "room": {"size_m": [6.0, 5.0, 2.8], "rt60_s": 0.3, "noise_db": -60.0, "seed": 1},
        "camera": {"position_m": [3.0, 0.05, 1.25], "hfov_deg": 90.0, "width": 320, "height": 180, "fps": 15.0},
        "mic_array": {"sample_rate": 16000, "positions": RING},
        "people": people,
    }
    data.update(over)
    return data


def seat(az_deg: float, dist: float) -> list[float]:
    return [3.0 + dist * math.sin(math.radians(az_deg)), 0.05 + dist * math.cos(math.radians(az_deg))]


# -- scenario ---------------------------------------------------------------------------------------------


def test_builtin_scenarios_load_and_give_a_valid_config() -> None:
    for name in ("default", "short"):
        scn = load_scenario(builtin_scenario(name))
        cam, mics = sections_for(name)
        cfg = Config(cameras={"main": cam}, mic_arrays={"main": mics})
        assert cfg.camera.width == scn.camera.width and cfg.cameras["main"] == cam
        assert len(cfg.mic_array.positions) == len(scn.mic_array.positions)
    default = load_scenario(builtin_scenario("default"))
    az = sorted(default.mouth_azimuth_deg(p) for p in default.people)
    assert len(az) == 5 and min(b - a for a, b in zip(az, az[1:], strict=False)) >= 10


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"room": {"rt60_s": 9.0}}, "room.rt60_s"),
        ({"room": {"colour": "red"}}, "room.colour"),
        ({"camera": {"fps": 0}}, "camera.fps"),
        ({"people": [{"id": "a", "seat_m": [3.0, 2.0], "utterances": [{"start_s": 0.0}]}]}, "people.0.utterances.0"),
        ({"people": [{"id": "a", "seat_m": [3.0, 2.0], "face": "lfw:500"}]}, "people.0.face"),
        ({"people": [{"id": "a", "seat_m": [30.0, 2.0]}]}, "people.0"),
    ],
)
def test_scenario_errors_name_the_key(patch: dict[str, Any], key: str) -> None:
    data = scene([])
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) else v
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "s.toml")
    assert key in str(err.value)


def test_missing_scenario_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.toml")


# -- picture ----------------------------------------------------------------------------------------------


def test_people_appear_at_the_azimuth_the_camera_model_gives() -> None:
    people = [{"id": f"p{i}", "seat_m": seat(az, 2.5), "face": f"lfw:{i}"} for i, az in enumerate((-30.0, 0.0, 25.0))]
    scn = parse_scenario(
        scene(
            people,
            camera={"position_m": [3.0, 0.05, 1.25], "hfov_deg": 90.0, "width": 1280, "height": 720, "fps": 15.0},
        )
    )
    r = RoomRenderer(scn)
    cam = PinholeCamera(1280, 720, 90.0)
    for t in (0.0, 0.7, 1.9):
        for p in scn.people:
            x, _, z = scn.to_camera(scn.head_room(p))
            bx, _, bw, _ = r.face_boxes(t)[p.id]
            sway_px = cam.focal_px * 0.02 / z
            assert abs(bx + bw / 2 - cam.column_of_azimuth(azimuth_of_point(x, z))) <= sway_px + 1
            assert bw == pytest.approx(cam.focal_px * FACE_WIDTH_M / z, abs=1.0)
    boxes = r.face_boxes(0.0)
    assert boxes["p0"][0] < 640 - 100 < boxes["p1"][0] < 640 + 100 < boxes["p2"][0]


def test_truth_box_covers_the_drawn_face() -> None:
    scn = parse_scenario(
        scene(
            [{"id": "a", "seat_m": seat(10.0, 2.0), "face": "astronaut"}],
            camera={"position_m": [3.0, 0.05, 1.25], "hfov_deg": 90.0, "width": 640, "height": 360, "fps": 15.0},
        )
    )
    r = RoomRenderer(scn)
    for t in (0.0, 1.1):
        frame = r.render_frame(t)
        changed = np.any(np.abs(frame.astype(int) - r.background.astype(int)) > 12, axis=2)
        x, y, w, h = (round(v) for v in r.face_boxes(t)["a"])
        inside = changed[y : y + h, x : x + w]
        assert inside.size > 0 and inside.mean() > 0.85
        cols = np.nonzero(changed[y + h // 3])[0]  # eye row: hair and face, symmetric about the face
        assert abs((cols.min() + cols.max()) / 2 - (x + w / 2)) < 0.15 * w
        assert not changed[: max(0, y - h)].any()  # nothing drawn well above the head


def test_rendered_faces_are_found_by_the_face_detector() -> None:
    from appliance.perception.faces import FaceDetector

    det = FaceDetector()  # the model is provisioned by scripts/setup
    scn = load_scenario(builtin_scenario("short"))
    r = RoomRenderer(scn)
    with det:
        found = det.detect(r.render_frame(0.0), 0.0).faces
    x, y, w, h = r.face_boxes(0.0)["ann"]  # the nearest face, about 50 px wide at 720p
    assert any(abs(f.center[0] - (x + w / 2)) < w / 3 and abs(f.center[1] - (y + h / 2)) < h / 2 for f in found)


# -- sound ------------------------------------------------------------------------------------------------


def _tdoa_samples(a: np.ndarray, b: np.ndarray, up: int = 16) -> float:
    """Delay of b relative to a (positive: b later), GCC-PHAT, interpolated by ``up``."""
    n = 2 * len(a)
    spec = np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n))
    cc = np.fft.irfft(spec / (np.abs(spec) + 1e-12), n * up)
    lag = int(np.argmax(np.concatenate([cc[-8 * up :], cc[: 8 * up + 1]]))) - 8 * up
    return lag / up


@pytest.mark.parametrize("rt60_s", [0.3, 0.6])
def test_the_other_simulator_hears_the_direct_sound_in_time_and_decays_at_the_rt60(rt60_s: float) -> None:
    """Habets' generator (the hearing bench's hold-out rooms): an impulse reaches each mic after its
    propagation time, and the response's energy decays at the asked RT60 (Schroeder, -5 to -25 dB)."""
    mics = np.array([[2.0, 2.0, 1.0], [2.1, 2.0, 1.0]])
    source = np.array([4.0, 3.5, 1.2])
    x = np.zeros(16000)
    x[0] = 1.0
    (h,) = render_habets([6.0, 5.0, 3.0], rt60_s, mics, 16000, [(source, x)], 16000, length_rt60=1.0)
    assert h.shape == (16000, 2)
    arrival = np.linalg.norm(mics - source, axis=1) / 343.0 * 16000
    assert np.all(np.abs(np.argmax(np.abs(h), axis=0) - arrival) <= 1.0)
    energy = np.cumsum((h[:, 0] ** 2)[::-1])[::-1]
    edc = 10 * np.log10(energy / energy[0])
    t20 = 3.0 * (np.argmax(edc < -25.0) - np.argmax(edc < -5.0)) / 16000
    assert abs(t20 - rt60_s) < 0.2 * rt60_s, t20


def test_delay_between_mics_matches_the_geometry() -> None:
    person = {
        "id": "a",
        "seat_m": seat(40.0, 2.0),
        "utterances": [{"start_s": 0.1, "text": "one two three four five six", "voice": "en-us+m3"}],
    }
    scn = parse_scenario(scene([person], room={"size_m": [6.0, 5.0, 2.8], "rt60_s": 0.2, "noise_db": -70.0, "seed": 1}))
    audio = render_audio(scn)
    assert audio.samples.shape == (32000, 6) and audio.samples.dtype == np.float32
    assert abs(float(np.abs(audio.samples).max()) - 0.5) < 0.05  # -6 dBFS peak
    mouth = np.array(scn.mouth_room(scn.people[0]))
    mics = np.array(scn.mic_positions_room())
    for i, j in ((0, 3), (1, 4), (2, 5)):
        expected = (np.linalg.norm(mouth - mics[j]) - np.linalg.norm(mouth - mics[i])) / 343.0 * 16000
        got = _tdoa_samples(audio.samples[:, i], audio.samples[:, j])
        assert abs(got - expected) < 1.0, (i, j, got, expected)
    spans = audio.activity["a"]
    assert spans and 0.1 <= spans[0][0] < 0.3 and spans[-1][1] < 2.0
    assert audio.talkers_at(spans[0][0] + 0.05) == ["a"] and audio.talkers_at(0.05) == []


def test_speech_intervals_bridge_short_gaps_and_keep_pauses() -> None:
    rate = 16000
    x = np.zeros(rate * 2, np.float32)
    x[1600:4800] = 0.3  # 0.1 - 0.3 s
    x[5600:8000] = 0.3  # 0.35 - 0.5 s: 50 ms gap, bridged
    x[16000:19200] = 0.3  # 1.0 - 1.2 s: after a 0.5 s pause
    assert speech_intervals(x, rate) == [(0.1, 0.5), (1.0, 1.2)]


# -- export -----------------------------------------------------------------------------------------------


def test_export_writes_files_that_read_back(tmp_path: Path) -> None:
    out = render_to_dir(builtin_scenario("short"), tmp_path / "out", duration_s=2.0)
    scn = load_scenario(builtin_scenario("short"))
    frames = list(iter_video_frames(out / "room.mp4"))
    assert len(frames) == 30
    assert frames[0].image.shape == (scn.camera.height, scn.camera.width, 3)
    assert frames[10].t == pytest.approx(10 / 15, abs=1e-3)
    samples, rate = read_wav(out / "array.wav")
    assert rate == 16000 and samples.shape == (32000, len(scn.mic_array.positions))
    cfg = load_config(out / "config.toml")
    assert cfg.camera.width == scn.camera.width and cfg.mic_array.positions == scn.mic_array.positions
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    assert len(truth) == 30 and [p["id"] for p in truth[0]["people"]] == ["ann", "ben", "cat"]
    assert truth[0]["people"][0]["azimuth_deg"] == pytest.approx(-25.0, abs=0.5)
    assert any("ann" in line["talkers"] for line in truth) and truth[0]["talkers"] == []
    assert "[[people]]" in (out / "scenario.toml").read_text()
    # the video shows the face where truth.jsonl says: the face box differs from the empty room
    x, y, w, h = (round(v) for v in truth[0]["people"][0]["box"])
    bg = RoomRenderer(scn.model_copy(update={"people": []})).background
    diff = np.abs(frames[0].image[y : y + h, x : x + w].astype(int) - bg[y : y + h, x : x + w].astype(int))
    assert diff.max(axis=2).mean() > 20


# -- real-time sources ------------------------------------------------------------------------------------


def test_sources_pace_on_the_capture_clock_and_loop() -> None:
    scn = parse_scenario(scene([{"id": "a", "seat_m": seat(0.0, 2.0)}], duration_s=0.4))
    clock = VirtualClock(100.0)
    room = SimulatedRoom(scn, clock=clock)

    async def run() -> tuple[list[float], list[float], float, int, float]:
        cam, mics = room.camera(), room.mic_array(block_s=0.02)
        await mics.start()
        await cam.start()
        frames = [(await cam.recv()).t for _ in range(9)]  # 0.6 s of video: loops once
        reached = clock.now()
        blocks = [(await mics.recv()) for _ in range(10)]
        clock.advance(0.35)  # a slow reader: the camera skips to the newest frame
        late = (await cam.recv()).t
        await cam.stop()
        await mics.stop()
        assert all(b.samples.shape == (320, 6) for b in blocks)
        return frames, [b.t for b in blocks], reached, cam.dropped, late

    frames, block_ts, reached, dropped, late = asyncio.run(run())
    # stamped on the capture clock from the room's epoch (the clock's time when the first source started)
    assert frames == pytest.approx([100.0 + k / 15 for k in range(9)])
    assert block_ts == pytest.approx([100.0 + 0.02 * k for k in range(10)])
    assert reached == pytest.approx(100.0 + 8 / 15)  # a frame is delivered when it is due, not before
    assert dropped == 4 and late == pytest.approx(100.0 + 13 / 15)  # frames 9-12 skipped: 13 is the newest


def test_the_camera_delivers_while_the_sound_is_rendered() -> None:
    """``roombox demo`` renders the room's sound (seconds) in a thread while its camera already runs. The
    camera took the room's one lock on the event loop for each picture, and so froze the whole box for the
    rest of the render (a sweep: 11-16 s under load, and the first meeting session dropped for "no RTCP")."""
    room = SimulatedRoom(builtin_scenario("default"), lazy=True)

    async def run() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        cam = room.camera()
        await cam.start()
        began = loop.time()
        render = asyncio.ensure_future(asyncio.to_thread(room.audio))  # what the mic array's start does
        await asyncio.sleep(0.05)  # the render has the sound's lock
        gap, frames, last = 0.0, 0, loop.time()
        while not render.done():
            await asyncio.wait_for(cam.recv(), 60)
            frames += 1
            now = loop.time()
            gap, last = max(gap, now - last), now
        await render
        await cam.stop()
        return loop.time() - began, gap, frames

    render_s, gap, frames = asyncio.run(run())
    print(f"\nsound rendered in {render_s:.1f} s; {frames} pictures meanwhile, the longest wait {gap:.2f} s")
    assert render_s > 1.0  # long enough to tell
    assert gap < 0.5 * render_s and frames >= 0.3 * render_s * room.scenario.camera.fps, (gap, frames)


def test_impulse_responses_decay_at_the_scenario_rt60() -> None:
    import pyroomacoustics as pra

    from drivers.simroom.audio import late_tail_rirs

    scn = load_scenario(builtin_scenario("default"))
    e_abs, _ = pra.inverse_sabine(scn.room.rt60_s, list(scn.room.size_m))
    room = pra.ShoeBox(list(scn.room.size_m), fs=16000, materials=pra.Material(e_abs), max_order=12)
    mics = np.array(scn.mic_positions_room())
    room.add_microphone_array(mics.T)
    room.add_source([2.4, 1.7, 1.15])
    room.compute_rir()
    direct = float(np.linalg.norm(np.array([2.4, 1.7, 1.15]) - mics.mean(axis=0))) / 343.0
    h = late_tail_rirs(
        [room.rir[m][0] for m in range(len(mics))],
        mics,
        16000,
        scn.room.rt60_s,
        direct + 40 / 16000,
        np.random.default_rng(0),
    )
    assert h.shape[1] == 6
    for k in (0, 3):
        assert pra.experimental.measure_rt60(h[:, k], fs=16000) == pytest.approx(scn.room.rt60_s, rel=0.2)
