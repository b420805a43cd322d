"""The mic array's calibration, pure: the fit from points (offset, scale, piecewise), its refusals, the point
collector's refusals, the config section, and the step mapping every DOA block through it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.calibration import (
    Calibration,
    CalibrationRefused,
    Limits,
    Point,
    PointCollector,
    face_azimuths,
    fit,
    robust_azimuth,
)
from appliance.config import Config, ConfigError, config_to_toml, parse_config
from appliance.control.store import load_toml_text
from appliance.messages import Doa, Face, Faces
from appliance.step import FrameStep, calibration_of


def test_one_point_is_the_arrays_rotation() -> None:
    cal = fit([(-45.0, -25.0)])
    assert cal.rotation_deg == pytest.approx(20.0) and cal.scale == 1.0
    assert [round(cal.to_camera(a), 6) for a in (-45.0, 0.0, 170.0, -175.0)] == [-25.0, 20.0, -170.0, -155.0]


def test_two_points_give_offset_and_scale_three_a_piecewise_map() -> None:
    cal = fit([(10.0, 30.0), (-50.0, -30.0)])  # given in any order
    assert cal.scale == pytest.approx(1.0) and cal.rotation_deg == pytest.approx(20.0)
    cal = fit([(-40.0, -30.0), (40.0, 30.0)])  # the array on the table in front: wider angles than the camera's
    assert cal.scale == pytest.approx(0.75) and cal.to_camera(20.0) == pytest.approx(15.0)
    assert cal.to_camera(60.0) == pytest.approx(50.0)  # beyond the ends: the end point's offset
    cal = fit([(-40.0, -30.0), (0.0, 5.0), (40.0, 30.0)])
    assert cal.to_camera(0.0) == pytest.approx(5.0) and cal.to_camera(-20.0) == pytest.approx(-12.5)
    assert cal.to_camera(20.0) == pytest.approx(17.5)
    xs = np.linspace(-179, 179, 359)
    ys = [cal.to_camera(x) for x in xs if -90 < x < 90]
    assert all(b > a for a, b in zip(ys, ys[1:], strict=False))  # monotone where it matters


@pytest.mark.parametrize(
    ("points", "why"),
    [
        ([(150.0, -25.0)], r"would be turned -175 deg \(at most 90\): it would face away from the camera"),
        ([(10.0, -25.0), (-30.0, 22.0)], "the map would decrease"),  # left and right swapped: mirrored
        ([(10.0, 10.0), (10.0, 20.0)], r"both heard at \+10 deg: the array cannot tell them apart"),  # was "decrease"
        ([(-5.0, -25.0), (-4.0, 22.0)], "contradict each other"),  # 47 deg apart in the picture, 1 to the array
        ([(-45.0, -25.0), (-43.0, -23.0)], "only 2.0 deg apart"),
        ([(0.0, 120.0)], "outside the camera's view"),
        ([], "no calibration points"),
    ],
)
def test_an_implausible_fit_is_refused_with_one_line(points: list[tuple[float, float]], why: str) -> None:
    with pytest.raises(CalibrationRefused, match=why) as e:
        fit(points)
    assert "\n" not in str(e.value)


def test_a_turn_over_a_tight_limit_names_the_limit_not_the_wall() -> None:
    """A 33 deg turn refused by max_offset_deg = 5 was said to face away from the camera (a sweep)."""
    with pytest.raises(
        CalibrationRefused, match=r"turned \+33 deg \(at most 5\): more than \[calibration\] max_offset"
    ):
        fit([(-58.0, -25.0)], Limits(max_offset_deg=5.0))


def _doas(azimuths: list[float], t0: float = 0.0) -> list[Doa]:
    return [Doa(t0 + 0.064 * i, a, True, -30.0, 0.8) for i, a in enumerate(azimuths)]


def test_a_point_is_the_median_direction_and_the_face_at_that_end() -> None:
    rng = np.random.default_rng(1)
    col = PointCollector("left")
    col.add_doas(_doas(list(-45.0 + rng.normal(0, 2.0, 40))))
    col.add_doas([Doa(3.0, None, False), Doa(3.1, 10.0, False)])  # silence and non-speech do not count
    for _ in range(5):
        col.add_faces([-24.0, 0.5, 21.0])
    p = col.point()
    assert p.doa_deg == pytest.approx(-45.0, abs=1.0) and p.camera_deg == -24.0
    assert p.blocks == 40 and p.faces == 5 and 1.0 < p.spread_deg < 3.5
    assert p.level_db == -30.0  # the speech blocks' level
    col.add_doas([Doa(4.0, -45.0, True) for _ in range(100)])  # speech blocks without a measured level (-120)
    assert col.point().level_db == -30.0
    right, centre = PointCollector("right"), PointCollector("centre")
    for c in (right, centre):
        c.add_doas(_doas([3.0] * 20))
        c.add_faces([-24.0, 0.5, 21.0])
    assert right.point().camera_deg == 21.0 and centre.point().camera_deg == 0.5


@pytest.mark.parametrize(
    ("azimuths", "faces", "why"),
    [
        ([-45.0] * 5, [[-24.0]], "too few speech blocks: 5"),
        ([-45.0] * 20 + [10.0] * 15, [[-24.0]], "two voices: 20 blocks from -45 deg and 15 from \\+10"),
        (list(np.linspace(-80, 40, 40)), [[-24.0]], "DOA spread too wide"),
        ([-45.0] * 20, [[]], "no face at the left end"),
        ([-45.0] * 20, [], "no face detection ran"),
    ],
)
def test_a_capture_that_cannot_be_used_says_why(azimuths: list[float], faces: list[list[float]], why: str) -> None:
    col = PointCollector("left")
    col.add_doas(_doas(azimuths))
    for f in faces:
        col.add_faces(f)
    with pytest.raises(CalibrationRefused, match=why):
        col.point()


def test_a_capture_without_audio_and_an_unknown_point_are_refused() -> None:
    with pytest.raises(CalibrationRefused, match="no audio came"):
        PointCollector("left").point()
    with pytest.raises(CalibrationRefused, match="no calibration point 'top'"):
        PointCollector("top")


def test_spread_is_robust_to_a_few_stray_blocks() -> None:
    az, spread = robust_azimuth([-40.0] * 30 + [70.0, -150.0, 5.0], Limits())
    assert az == pytest.approx(-40.0) and spread == pytest.approx(0.0)


def test_face_azimuths_follow_the_pinhole_model() -> None:
    faces = Faces(1.0, (Face((940.0, 500.0, 40.0, 40.0), 0.9), Face((0.0, 500.0, 40.0, 40.0), 0.9)), 1920, 1080)
    left_edge = np.degrees(np.arctan((20 - 960) / 960))
    assert face_azimuths(faces, 90.0) == pytest.approx([0.0, left_edge])
    assert face_azimuths(Faces(1.0, faces.faces), 90.0) == []  # no picture size: no direction


def test_the_config_section_refuses_a_bad_calibration_and_survives_toml() -> None:
    with pytest.raises(ConfigError, match=r"\[calibration\].*would be turned"):
        parse_config({"calibration": {"points": [[150.0, -25.0]]}})
    with pytest.raises(ConfigError, match=r"calibration\.points"):
        parse_config({"calibration": {"points": [[500.0, 0.0]]}})
    cfg = parse_config({"calibration": {"points": [[-40.23, -24.71], [5.44, 21.63]], "mic_array": "main"}})
    assert load_toml_text(config_to_toml(cfg)) == cfg


def test_the_step_maps_doas_for_the_array_it_was_fitted_with_only() -> None:
    cfg = parse_config({"calibration": {"points": [[-45.0, -25.0]], "mic_array": "main"}})
    step = FrameStep(cfg)
    step.add_doas([Doa(0.5, -45.0, True), Doa(0.6, None, False)])
    assert [d.azimuth_deg for d in step.to_camera([Doa(0.5, -45.0, True)])] == [pytest.approx(-25.0)]
    assert [d.azimuth_deg for d in step._doas] == [pytest.approx(-25.0), None]
    other = cfg.model_copy(update={"calibration": cfg.calibration.model_copy(update={"mic_array": "table"})})
    assert calibration_of(other) is None and calibration_of(Config()) is None


def test_a_new_calibration_alone_keeps_the_director() -> None:
    cfg = Config()
    step = FrameStep(cfg)
    step.step(0.0, 640, 360, Faces(0.0, (), 640, 360))
    director = step.director
    calibrated = cfg.model_copy(update={"calibration": cfg.calibration.model_copy(update={"points": [(-45.0, -25.0)]})})
    step.reconfigure(calibrated)
    assert step.director is director and step.calibration is not None
    step.reconfigure(calibrated.model_copy(update={"director": cfg.director.model_copy(update={"min_hold_s": 3.0})}))
    assert step.director is None


def test_the_calibrator_captures_saves_refuses_and_forgets(tmp_path: Path) -> None:
    """The live calibrator on a virtual clock and a real config store, fed as the box feeds it."""
    from appliance.calibrator import CalibrationBusy, Calibrator
    from appliance.control.store import ConfigStore
    from appliance.streaming.hub import EventBus
    from common.clock import VirtualClock

    async def scenario() -> None:
        clock = VirtualClock(100.0)
        store = ConfigStore(tmp_path / "config.toml", tmp_path / "revisions", Config())
        applied: list[Config] = []

        def on_config(cfg: Config) -> list[str]:
            applied.append(cfg)
            return []

        bus = EventBus()
        cal = Calibrator(lambda: store.current, bus, clock, store=store, on_config=on_config)

        async def talk(heard: float, faces: list[float], seconds: float) -> None:
            end = clock.now() + seconds
            while clock.now() < end:
                await clock.sleep_until(clock.now() + 0.064)
                cal.feed_doas([Doa(clock.now(), heard, True, -30.0, 0.8)])
                if round(clock.now() * 1000) % 192 < 64:  # a detection every ~0.2 s
                    width = 1920
                    boxes = tuple(Face((960 + 960 * np.tan(np.radians(a)) - 20, 500.0, 40.0, 40.0), 0.9) for a in faces)
                    cal.feed_faces(Faces(clock.now(), boxes, width, 1080))

        async def capture(name: str, heard: float) -> Any:
            task = asyncio.ensure_future(cal.capture(name))
            await asyncio.sleep(0)
            with pytest.raises(CalibrationBusy):
                await cal.capture("centre")
            await talk(heard, [-25.0, 0.0, 22.0], 6.5)
            return await task

        left = await capture("left", -45.0)
        assert left.doa_deg == pytest.approx(-45.0) and left.camera_deg == pytest.approx(-25.0, abs=0.1)
        assert cal.proposal() == ("array turned +20.0 deg, gain +0.0 dB (speech heard at -30 dBFS)", True)
        right = await capture("right", 2.0)
        assert right.camera_deg == pytest.approx(22.0, abs=0.1)
        rev = cal.save("it")
        assert rev is not None and rev.changed == ["calibration.mic_array", "calibration.points", "calibration.when"]
        saved = store.current.calibration
        assert saved.points == [(-45.0, -25.0), (2.0, 22.0)] and saved.mic_array == "main" and saved.when
        assert applied[-1].calibration == saved
        assert bus.snapshot()["calibration"]["calibrated"] is True
        # a silent capture is refused and says why; a fit of contradicting points is refused, the saved one stays
        with pytest.raises(CalibrationRefused, match="left: too few speech blocks: 0"):
            task = asyncio.ensure_future(cal.capture("left"))
            await talk(float("nan"), [-25.0], 6.5)
            await task
        cal.captured["left"] = Point("left", 10.0, -25.0, 30, 1.0, 5)
        cal.captured["right"] = Point("right", -30.0, 22.0, 30, 1.0, 5)
        with pytest.raises(CalibrationRefused, match="not saved: the map would decrease"):
            cal.save("it")
        assert store.current.calibration == saved and store.latest_id() == rev.id
        assert bus.snapshot()["calibration"]["error"].startswith("not saved")
        # points heard by another mic array than the one running now are not saved
        store.current = store.current.model_copy(update={"mic_arrays": {"table": store.current.mic_array}})
        with pytest.raises(CalibrationRefused, match="heard by mic array 'main', now 'table' runs"):
            cal.save("it")
        assert cal.state().captured == () and not cal.state().in_use  # saved for "main", not the one running
        store.current = store.current.model_copy(update={"mic_arrays": {"main": store.current.mic_array}})
        cal.captured["left"] = left
        cal.discard()
        assert cal.state().captured == () and cal.state().calibrated
        cal.forget("it")
        assert store.current.calibration.points == [] and not cal.state().calibrated
        # the array switched during a capture: its blocks came from two arrays, refused (before, the point was
        # credited to the old array); a capture on the new array says why the old array's points went
        cal.captured["left"] = left
        task = asyncio.ensure_future(cal.capture("right"))
        await talk(2.0, [-25.0, 0.0, 22.0], 1.0)
        store.current = store.current.model_copy(update={"mic_arrays": {"table": store.current.mic_array}})
        await talk(2.0, [-25.0, 0.0, 22.0], 5.5)
        with pytest.raises(CalibrationRefused, match=r"^right: the mic array changed during the capture \('main', now"):
            await task
        assert list(cal.captured) == ["left"]
        task = asyncio.ensure_future(cal.capture("right"))
        await talk(2.0, [-25.0, 0.0, 22.0], 6.5)
        await task
        assert list(cal.captured) == ["right"]
        assert cal.state().error == "the points heard by mic array 'main' were dropped: 'table' runs now"

    asyncio.run(scenario())


@pytest.mark.parametrize(("heard_db", "gain_db"), [(-45.0, 11.5), (-20.0, -13.5), (-35.5, 0.0)])
def test_the_calibration_sets_the_arrays_gain_from_the_talkers_level(
    tmp_path: Path, heard_db: float, gain_db: float
) -> None:
    """A quiet array is made louder, a loud one quieter, one near the hearing's level is left; the gain goes
    into ``[calibration] gain_db``, the box's hearing takes it, a second calibration with it in force keeps it,
    forgetting the calibration removes it."""
    from appliance.calibration import TALKER_LEVEL_DB
    from appliance.calibrator import Calibrator
    from appliance.control.store import ConfigStore
    from appliance.step import gain_of
    from appliance.streaming.hub import EventBus
    from common.clock import VirtualClock

    async def scenario() -> None:
        clock = VirtualClock(100.0)
        store = ConfigStore(tmp_path / "config.toml", tmp_path / "revisions", Config())
        cal = Calibrator(lambda: store.current, EventBus(), clock, store=store)

        async def capture(name: str, heard: float, camera: float, level: float) -> None:
            task = asyncio.ensure_future(cal.capture(name))
            end = clock.now() + 6.5
            while clock.now() < end:
                await clock.sleep_until(clock.now() + 0.064)
                cal.feed_doas([Doa(clock.now(), heard, True, level, 0.8)])
                box = Face((960 + 960 * np.tan(np.radians(camera)) - 20, 500.0, 40.0, 40.0), 0.9)
                cal.feed_faces(Faces(clock.now(), (box,), 1920, 1080))
            await task

        await capture("left", -45.0, -25.0, heard_db)
        await capture("right", 2.0, 22.0, heard_db + 1.0)  # the median of the two: heard_db + 0.5
        assert cal.proposal()[0].endswith(f"gain {gain_db:+.1f} dB (speech heard at {heard_db + 0.5:.0f} dBFS)")
        cal.save("it")
        assert store.current.calibration.gain_db == gain_db and gain_of(store.current) == gain_db
        assert cal.state().gain_db == gain_db
        # calibrated again with the gain in force: the talkers now read at the hearing's level, the gain stays
        louder = heard_db + 0.5 + gain_db
        assert abs(louder - TALKER_LEVEL_DB) <= 4.0 or gain_db == 0.0
        await capture("left", -45.0, -25.0, louder - 0.5)
        await capture("right", 2.0, 22.0, louder + 0.5)
        cal.save("it")
        assert store.current.calibration.gain_db == gain_db
        # for another array than the one running it is not in force; forgotten, it is gone
        other = store.current.model_copy(update={"mic_arrays": {"table": store.current.mic_array}})
        assert gain_of(other) == 0.0
        cal.forget("it")
        assert store.current.calibration.gain_db == 0.0

    asyncio.run(scenario())


def test_the_calibrators_state_fits_the_saved_points_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import appliance.calibrator
    import appliance.step
    from appliance.calibrator import Calibrator
    from appliance.control.store import ConfigStore
    from appliance.streaming.hub import EventBus
    from common.clock import VirtualClock

    fits: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        fits.append(args)
        return fit(*args, **kwargs)

    monkeypatch.setattr(appliance.calibrator, "fit", counted)
    monkeypatch.setattr(appliance.step, "fit", counted)
    cfg = Config()
    saved = cfg.calibration.model_copy(update={"points": [(-45.0, -25.0), (2.0, 22.0)], "mic_array": "main"})
    store = ConfigStore(tmp_path / "config.toml", tmp_path / "revisions", cfg.model_copy(update={"calibration": saved}))
    cal = Calibrator(lambda: store.current, EventBus(), VirtualClock(100.0), store=store)
    state = cal.state()
    assert state.in_use and state.rotation_deg is not None and state.scale is not None
    assert (state.rotation_deg, state.scale) == (fit(saved.points).rotation_deg, fit(saved.points).scale)
    assert len(fits) == 1
    # saved for another array than the one running: not in use, still described, fitted once
    store.current = store.current.model_copy(update={"mic_arrays": {"table": store.current.mic_array}})
    fits.clear()
    state = cal.state()
    assert not state.in_use and state.calibrated and state.rotation_deg == fit(saved.points).rotation_deg
    assert len(fits) == 1


def test_the_hearing_hears_the_array_with_the_calibrations_gain() -> None:
    """``make_ears(..., gain_db)`` hears a quiet array as the same array that much louder; the gain is in
    force for the array the calibration was captured with only."""
    from appliance.config import DoaConfig, MicArraySection, TrackerConfig
    from appliance.perception.hearing import Gained, make_ears
    from appliance.step import gain_of
    from tests.test_doa import CIRCLE, FS, plane_wave

    mic = MicArraySection()
    x = 0.02 * plane_wave(CIRCLE, 40.0, n=2 * FS)
    quiet = make_ears(mic, DoaConfig(), TrackerConfig(), 12.0)
    assert isinstance(quiet, Gained) and not isinstance(make_ears(mic, DoaConfig(), TrackerConfig()), Gained)
    heard = quiet.feed(x, 0.0)
    loud = make_ears(mic, DoaConfig(), TrackerConfig()).feed(x * 10 ** (12.0 / 20.0), 0.0)
    assert [d.to_json() for d in heard] == [d.to_json() for d in loud]
    plain = make_ears(mic, DoaConfig(), TrackerConfig()).feed(x, 0.0)
    assert heard[-1].level_db - plain[-1].level_db == pytest.approx(12.0, abs=0.1)
    cfg = Config()
    gained = cfg.model_copy(update={"calibration": cfg.calibration.model_copy(update={"gain_db": -6.0})})
    assert gain_of(gained) == -6.0 and gain_of(cfg) == 0.0
    other = gained.model_copy(update={"calibration": gained.calibration.model_copy(update={"mic_array": "ceiling"})})
    assert gain_of(other) == 0.0  # captured with another array


def test_no_minus_zero_in_what_the_calibration_says() -> None:
    """A sweep of the panel: "-0 deg" in the calibration's messages (a rotation of -0.04 deg)."""
    assert Calibration(((10.0, 9.96),)).describe() == "array turned +0.0 deg"
