"""The director drives a PTZ head: the pure planner (geometry, when to move) and the follower against the
VISCA camera simulator over UDP on 127.0.0.1, including a camera that stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from appliance.config import Config, PtzFollowConfig, parse_config
from appliance.messages import DeviceStatus, Shot
from appliance.ptz_follow import (
    PtzFollower,
    PtzPlanner,
    crop_span_deg,
    follower_from_config,
    target_of,
    view_error_deg,
)
from appliance.streaming.hub import EventBus
from common.errors import RoomboxError
from common.geometry import PinholeCamera
from drivers.ptz import visca
from drivers.ptz.base import PtzLimits, PtzPosition
from drivers.ptz.simulator import ViscaCameraSim
from drivers.ptz.visca_client import ViscaIpConfig

CAM = PinholeCamera(1920, 1080, 90.0)
HEAD = ViscaIpConfig(host="127.0.0.1", port=52381, hfov_wide_deg=60.0, optical_zoom=12.0)


def crop_at(u: float, v: float, w: float) -> tuple[int, int, int, int]:
    """A 16:9 crop ``w`` wide centred on pixel (u, v)."""
    h = w * 9 / 16
    return round(u - w / 2), round(v - h / 2), round(w), round(h)


def shot(t: float, crop: tuple[int, int, int, int], cut: bool = False) -> Shot:
    return Shot(t, crop, "speaker", cut=cut)


# --- geometry ---------------------------------------------------------------------------------------------


def test_a_crop_becomes_pan_tilt_and_zoom() -> None:
    centre = target_of(crop_at(960, 540, 640), CAM, HEAD)
    assert centre.pan_deg == pytest.approx(0.0, abs=0.05) and centre.tilt_deg == pytest.approx(0.0, abs=0.05)
    # the zoom gives the head the field of view the crop spans (36.9 degrees: 640 of 1920 px at 90 degrees)
    assert crop_span_deg(CAM, crop_at(960, 540, 640)) == pytest.approx(2 * math.degrees(math.atan(1 / 3)), abs=0.01)
    assert HEAD.hfov_at(centre.zoom) == pytest.approx(2 * math.degrees(math.atan(1 / 3)), abs=0.05)
    right = target_of(crop_at(1600, 540, 640), CAM, HEAD)  # right of the centre: pan right, the same tilt
    assert right.pan_deg == pytest.approx(CAM.azimuth_of_column(1600), abs=0.05) and right.pan_deg > 20
    assert right.tilt_deg == pytest.approx(0.0, abs=0.05)
    up_left = target_of(crop_at(400, 200, 480), CAM, HEAD)
    assert up_left.pan_deg < -20 and up_left.tilt_deg > 10
    # a narrower crop: tighter zoom
    zooms = [target_of(crop_at(960, 540, w), CAM, HEAD).zoom for w in (1200, 640, 320, 160)]
    assert zooms == sorted(zooms) and zooms[0] < zooms[-1]
    # the whole picture (90 degrees) is wider than the head's widest view (60): zoom 0
    assert target_of((0, 0, 1920, 1080), CAM, HEAD) == PtzPosition(0.0, 0.0, 0.0)
    # where the head's home points in the wide camera: the picture's centre is 10 degrees left of home
    assert target_of(crop_at(960, 540, 640), CAM, HEAD, home_azimuth_deg=10.0).pan_deg == pytest.approx(-10.0)
    assert target_of(crop_at(960, 540, 640), CAM, HEAD, home_elevation_deg=-5.0).tilt_deg == pytest.approx(5.0)


def test_targets_are_clamped_to_the_head() -> None:
    small = ViscaIpConfig(host="h", pan_min_deg=-20.0, pan_max_deg=20.0, tilt_min_deg=-5.0, tilt_max_deg=5.0)
    t = target_of(crop_at(1800, 100, 200), CAM, small.model_copy(update={"optical_zoom": 2.0}))
    assert (t.pan_deg, t.tilt_deg, t.zoom) == (20.0, 5.0, 1.0)  # a 2x lens cannot show a 10-degree crop
    t = target_of(crop_at(100, 1000, 200), CAM, small)
    assert (t.pan_deg, t.tilt_deg) == (-20.0, -5.0) and 0.0 < t.zoom < 1.0


def test_the_simulator_shows_the_crop_the_planner_aimed_at() -> None:
    """The simulator's virtual view (its own model) at the planner's target is centred on the director's crop,
    and of its size on the axis (off the axis the simulator keeps the axis' size in pixels, where a pinhole
    picture stretches: the planner zooms for the crop's angle)."""
    sim = ViscaCameraSim(source_hfov_deg=90.0, hfov_wide_deg=60.0, optical_zoom=12.0, out_size=(1280, 720))
    for crop in (crop_at(960, 540, 640), crop_at(1500, 540, 480), crop_at(500, 540, 800), crop_at(1200, 400, 320)):
        x, y, w, h = sim.crop_box(1920, 1080, target_of(crop, CAM, HEAD))
        assert abs((x + w / 2) - (crop[0] + crop[2] / 2)) < 4 and abs((y + h / 2) - (crop[1] + crop[3] / 2)) < 6
    x, y, w, h = sim.crop_box(1920, 1080, target_of(crop_at(960, 540, 640), CAM, HEAD))
    assert abs(w - 640) < 4 and abs(h - 360) < 4


# --- when to move -----------------------------------------------------------------------------------------


def test_the_planner_moves_on_cuts_at_once_and_on_glides_sparingly() -> None:
    p = PtzPlanner(HEAD, PtzFollowConfig(enabled=True, deadband=0.1, min_interval_s=1.0), CAM)
    a = p.plan(shot(0.0, crop_at(960, 540, 640)))
    assert a is not None and p.reason == "first"
    assert p.plan(shot(0.1, crop_at(960, 540, 640))) is None  # the same position is never sent twice
    # a glide of 1.5 degrees (a 37-degree view): inside the deadband, no move however long it lasts
    for k in range(1, 40):
        assert p.plan(shot(0.1 + k * 0.1, crop_at(960 + k * 0.7, 540, 640))) is None
    # a glide beyond the deadband (about 7 degrees): moves, then not again within min_interval_s
    assert p.plan(shot(4.0, crop_at(1090, 540, 640))) is not None and p.reason == "glide"
    assert p.plan(shot(4.5, crop_at(1250, 540, 640))) is None
    g = p.plan(shot(5.0, crop_at(1250, 540, 640)))
    assert g is not None and g.pan_deg == pytest.approx(CAM.azimuth_of_column(1250), abs=0.1)
    # a zoom change beyond the deadband is a move too
    assert p.plan(shot(6.5, crop_at(1250, 540, 500))) is not None
    # a cut moves at once, even right after a move and by little
    c = p.plan(shot(6.6, crop_at(1300, 540, 480), cut=True))
    assert c is not None and p.reason == "cut"
    assert p.plan(shot(6.7, crop_at(1300, 540, 480), cut=True)) is None  # ... but never to where it is
    p.forget()  # a failed move: the next shot moves the head whatever the deadband
    assert p.plan(shot(6.8, crop_at(1301, 540, 480))) is not None and p.reason == "first"


def test_config_section_is_checked() -> None:
    head = {"type": "visca-ip", "host": "127.0.0.1", "camera": "ptzcam"}
    cams = {"main": {"type": "file", "path": "x.mp4"}, "ptzcam": {"type": "file", "path": "y.mp4"}}
    cfg = parse_config({"cameras": cams, "ptz": {"head": head}, "ptz_follow": {"enabled": True}})
    assert cfg.ptz_follow.deadband == 0.1 and follower_from_config(Config(), EventBus()) is None
    # the head followed: the one [ptz_follow] names, else the first; none without heads
    assert cfg.followed_ptz == "head" and Config().followed_ptz is None
    two = parse_config({"cameras": cams, "ptz": {"a": {"type": "visca-ip", "host": "127.0.0.1"}, "head": head}})
    assert two.followed_ptz == "a"
    assert two.model_copy(update={"ptz_follow": PtzFollowConfig(ptz="head")}).followed_ptz == "head"
    for doc, msg in (
        ({"ptz_follow": {"enabled": True}}, "needs a \\[ptz.NAME\\]"),
        ({"ptz": {"head": head}, "ptz_follow": {"enabled": True, "ptz": "other"}}, "no \\[ptz.other\\]"),
        ({"ptz": {"head": {**head, "camera": "main"}}, "ptz_follow": {"enabled": True}}, "the director frames"),
        ({"ptz_follow": {"deadband": 2.0}}, "deadband"),
    ):
        with pytest.raises(RoomboxError, match=msg):
            parse_config({"cameras": cams, **doc})


# --- the follower against the simulator ---------------------------------------------------------------------


@dataclass
class Rig:
    sim: ViscaCameraSim
    events: EventBus
    follower: PtzFollower
    statuses: list[DeviceStatus]

    def moves(self) -> list[visca.Command]:
        return [c for c in map(visca.parse_command, self.sim.received) if c.kind == "pan_tilt_absolute"]

    def state(self) -> str:
        return self.statuses[-1].state if self.statuses else ""


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (generously: a loaded machine) until ``cond()``; fails the test at ``timeout``."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {cond.__doc__ or cond}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def rig(head_timeout_s: float = 2.0, **follow: Any) -> AsyncIterator[Rig]:
    """A simulated VISCA head on 127.0.0.1 (UDP) and a follower of ``[ptz_follow]`` (with ``follow``) driving
    it from an event bus, running; both closed afterwards. ``head_timeout_s``: the client's wait for an answer
    (generous: a loaded machine; short only where the head is meant to fall silent)."""
    sim = ViscaCameraSim(
        source_hfov_deg=90.0, hfov_wide_deg=60.0, optical_zoom=12.0, max_pan_deg_s=400.0, zoom_full_s=0.2
    )
    task: asyncio.Task[None] | None = None
    try:
        port = await sim.serve_udp()
        cfg = parse_config(
            {
                "cameras": {"main": {"type": "file", "path": "wide.mp4", "width": 1920, "height": 1080}},
                "ptz": {"head": {"type": "visca-ip", "host": "127.0.0.1", "port": port, "timeout_s": head_timeout_s}},
                "ptz_follow": {"enabled": True, "retry_s": 0.2, **follow},
            }
        )
        events = EventBus()
        statuses: list[DeviceStatus] = []
        follower = follower_from_config(cfg, events)
        assert follower is not None

        def report(s: DeviceStatus) -> None:
            statuses.append(s)
            events.publish(s)

        follower.report = report
        task = asyncio.create_task(follower.serve(events))
        r = Rig(sim, events, follower, statuses)
        await until(lambda: r.state() == "running")
        yield r
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await sim.close()


def test_the_head_follows_the_directors_shots() -> None:
    asyncio.run(_follows())


async def _follows() -> None:
    async with rig(deadband=0.1, min_interval_s=0.5) as r:
        assert r.follower.planner.camera == CAM
        moves0 = len(r.moves())
        # the shots as the box publishes them on its event bus: a cut to the right, then a slow glide
        r.events.publish(shot(0.0, crop_at(1500, 500, 480), cut=True))
        await until(lambda: r.follower.sent == 1)
        want = r.follower.planner.commanded
        assert want is not None and want.pan_deg > 20
        for k in range(1, 30):  # a glide of a few pixels: inside the deadband, no command
            r.events.publish(shot(k / 30, crop_at(1500 - k, 500, 480)))
        glided = target_of(crop_at(1500 - 29, 500, 480), CAM, HEAD)
        await until(lambda: r.follower.planner.desired == glided)  # all taken
        await asyncio.sleep(0.2)
        assert len(r.moves()) == moves0 + 1 and r.follower.sent == 1
        # a cut to the left moves the head at once (not waiting for min_interval_s)
        r.events.publish(shot(1.1, crop_at(500, 560, 600), cut=True))
        await until(lambda: r.follower.sent == 2)
        left = r.follower.planner.commanded
        assert left is not None and left.pan_deg < -20
        # the simulated head arrives where the planner said
        await until(
            lambda: view_error_deg(r.sim.position(), left) < 0.1 and abs(r.sim.position().zoom - left.zoom) < 1e-3
        )
        assert len(r.moves()) == moves0 + 2 and r.state() == "running"


def test_the_newest_target_wins() -> None:
    asyncio.run(_newest())


async def _newest() -> None:
    async with rig(min_interval_s=0.0) as r:
        for k in range(20):  # cuts faster than the head acknowledges: some are never sent
            r.follower.offer(shot(k * 0.01, crop_at(600 + 40 * k, 540, 500), cut=True))
        last = r.follower.planner.commanded
        assert last is not None
        await until(lambda: r.follower.position == last)
        assert r.follower.sent + r.follower.superseded == 20 and r.follower.superseded > 0
        await until(lambda: view_error_deg(r.sim.position(), last) < 0.1)


def test_a_head_that_stops_answering_is_reported_and_retried() -> None:
    asyncio.run(_stops_answering())


async def _stops_answering() -> None:
    async with rig(head_timeout_s=0.5) as r:
        r.follower.offer(shot(0.0, crop_at(1400, 540, 500), cut=True))
        await until(lambda: r.follower.sent == 1)
        r.sim.behaviour = "silent"
        target = r.follower.offer(shot(1.0, crop_at(600, 540, 500), cut=True))
        assert target is not None
        await until(lambda: r.state() in ("lost", "retrying"), timeout=30.0)
        lost = next(s for s in r.statuses if s.state == "lost")
        assert lost.name == "ptz" and "no answer" in lost.detail and "[ptz.head]" in lost.detail
        await until(lambda: sum(s.state == "lost" for s in r.statuses) >= 2, timeout=30.0)  # retried, still silent
        assert r.events.snapshot()["device:ptz"]["state"] in ("lost", "retrying", "starting")
        # the frame loop is never held up: shots are taken at once while the head is away
        t0 = time.monotonic()
        for k in range(100):
            r.follower.offer(shot(2.0 + k / 30, crop_at(600 + k, 540, 500), cut=k == 50))
        assert time.monotonic() - t0 < 5.0  # (a move in flight would hold each offer for the head's timeout)
        newest = r.follower.planner.desired
        r.sim.behaviour = "ok"  # back: reported running, and the head goes to the newest target
        await until(lambda: r.state() == "running", timeout=40.0)
        assert newest is not None
        await until(lambda: view_error_deg(r.sim.position(), newest) < 0.1)


def test_a_refused_move_is_reported_and_the_head_kept() -> None:
    asyncio.run(_refused())


async def _refused() -> None:
    """A sweep: "the camera refused pan-tilt to (-15.2, -1.7) deg: command not executable" disconnected the head
    (the meeting fell back to the wide camera's crop) though the camera answered. A refusal is reported, the
    head kept, and the next move tried."""
    async with rig(min_interval_s=0.0) as r:
        r.follower.offer(shot(0.0, crop_at(1000, 540, 500), cut=True))
        await until(lambda: r.follower.sent == 1)
        r.sim.limits = PtzLimits((-10.0, 10.0), (-30.0, 90.0))  # a head with less travel than the config says
        r.follower.offer(shot(1.0, crop_at(400, 540, 500), cut=True))  # about 30 degrees left: not executable
        await until(lambda: r.state() == "running" and "refused" in r.statuses[-1].detail)
        refusal = r.statuses[-1]
        assert "[ptz.head]" in refusal.detail and "command not executable" in refusal.detail
        assert refusal.counters["refused"] == 1 and r.follower.connected
        back = r.follower.offer(shot(2.0, crop_at(1100, 540, 500), cut=True))  # within its travel: taken
        assert back is not None
        await until(lambda: r.follower.sent == 2)
        await until(lambda: view_error_deg(r.sim.position(), back) < 0.1)
        assert r.statuses[-1].state == "running" and r.statuses[-1].detail == ""
        assert not any(s.state in ("lost", "retrying") for s in r.statuses)


def test_a_glide_costs_few_commands_and_stays_close() -> None:
    """The bench's path (a virtual clock, the simulated head at finite speed): a cut, then the director's
    exponential glide over 20 degrees, then a sway of a pixel or two. The planner sends a few commands where
    a follower without deadband sends one per changed frame, and its view stays within the deadband."""
    from appliance.bench.ptz import follow

    shots, crop = [shot(0.0, crop_at(700, 540, 480), cut=True)], (700.0, 540.0)
    for k in range(1, 150):  # 10 s at 15 fps: glide to u = 1150 (tau 0.5 s), then sway
        t = k / 15
        u = 1150 - 450 * math.exp(-t / 0.5) + (1.5 * math.sin(t * 3) if t > 4 else 0.0)
        crop = (u, 540.0)
        shots.append(shot(t, crop_at(*crop, 480)))
    base = PtzFollowConfig(enabled=True, deadband=0.1, min_interval_s=1.0)
    planned = asyncio.run(follow(shots, CAM, base))
    every = asyncio.run(follow(shots, CAM, base.model_copy(update={"deadband": 0.0, "min_interval_s": 0.0})))
    assert 2 <= planned.commands <= 6 and every.commands > 5 * planned.commands
    hfov = HEAD.hfov_at(target_of(crop_at(1150, 540, 480), CAM, HEAD).zoom)
    late = planned.errors_deg[-60:]  # settled: off by less than the deadband, never chasing the sway
    assert max(late) < 0.1 * hfov and sum(every.errors_deg[-60:]) < sum(late)


def test_manual_framing_on_the_panel_moves_the_head_at_once() -> None:
    """The panel's ``{"cmd": "ptz"}`` becomes the director's manual shot (a cut): the head follows it."""
    from appliance.step import FrameStep

    step = FrameStep(Config())
    p = PtzPlanner(HEAD, PtzFollowConfig(enabled=True), CAM)
    assert p.plan(step.step(0.0, 1920, 1080, None)) is not None
    assert p.plan(step.step(0.1, 1920, 1080, None)) is None
    step.manual_view(1.0, 0.0, 3.0, 0.2)  # right edge, 3x
    s = step.step(0.3, 1920, 1080, None)
    target = p.plan(s)
    assert s.mode == "manual" and s.cut and target is not None and p.reason == "cut"
    assert target.pan_deg > 25 and target.zoom > 0.2
