"""``roombox bench ptz``: a PTZ head following the director through :mod:`appliance.ptz_follow`, against the
VISCA camera simulator over UDP (127.0.0.1) on a virtual clock.

The shots are the director's (:class:`appliance.step.FrameStep` with the default config) on a simulated
meeting (:func:`drivers.simroom.meetings.make_meeting`: turns, exchanges, a latecomer, a face print), fed
the ground truth's face boxes at the detector's rate and a DOA block every 32 ms towards whoever talks
(2 degrees of noise): the director's own decisions, without the cost of rendering and detecting. Each shot
is offered to the follower at its time; the simulated head moves at a finite speed (100 degrees/s, the zoom
range in 2 s). Figures, for the planner with the config's deadband and interval and two peers in the same
run, each through the same code with other settings:

- ``every change``: deadband 0, no interval: a command whenever the director's crop moves;
- ``cuts only``: deadband 1 (a whole field of view): glides are left alone.

``commands per minute`` counts pan-tilt moves sent; ``view error`` is the angle between where the head
looks (the simulator's position at each frame's time) and the centre of the director's crop, averaged over
the frames (and its 95th percentile); ``zoom error`` the mean relative difference of the head's field of
view from the crop's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.config import Config, PtzFollowConfig
from appliance.messages import Doa, Face, Faces, Shot
from appliance.ptz_follow import PtzFollower, PtzPlanner, view_error_deg
from appliance.step import FrameStep
from common.clock import VirtualClock
from common.geometry import PinholeCamera
from drivers.ptz import visca
from drivers.ptz.simulator import ViscaCameraSim
from drivers.ptz.visca_client import UdpTransport, ViscaIpConfig, ViscaPtz

Row = tuple[str, float, str]
HOP_S = 0.032
DOA_NOISE_DEG = 2.0


def meeting_shots(seed: int, duration_s: float) -> tuple[list[Shot], PinholeCamera]:
    """The director's shots, one per frame, on a simulated meeting (see the module's doc)."""
    from appliance.bench.director import _activity
    from drivers.simroom.meetings import MeetingRenderer, make_meeting

    meeting = make_meeting(seed, duration_s)
    renderer = MeetingRenderer(meeting)
    cam = renderer.cam
    activity = _activity(meeting)
    fps = meeting.scenario.camera.fps
    cfg = Config()
    c = meeting.scenario.camera
    cfg = cfg.model_copy(
        update={
            "cameras": {
                "main": cfg.camera.model_copy(
                    update={"width": cam.width, "height": cam.height, "hfov_deg": cam.hfov_deg, "fps": c.fps}
                )
            }
        }
    )
    step = FrameStep(cfg)
    rng = np.random.default_rng(seed)
    shots: list[Shot] = []
    next_doa = 0.0
    for k in range(int(duration_s * fps)):
        t = k / fps
        boxes = renderer.face_boxes(t)
        doas = []
        while next_doa <= t:
            talkers = [p for p, spans in activity.items() if p in boxes and any(a <= next_doa < b for a, b in spans)]
            if talkers:
                x, _, w, _ = boxes[talkers[int(rng.integers(len(talkers)))]]
                az = cam.azimuth_of_column(x + w / 2) + float(rng.normal(0.0, DOA_NOISE_DEG))
                doas.append(Doa(next_doa, az, True, -30.0, 0.8))
            else:
                doas.append(Doa(next_doa, None, False, -60.0, 0.0))
            next_doa += HOP_S
        step.add_doas(doas)
        faces = None
        if step.detection_due(t):
            faces = Faces(t, tuple(Face(b, 0.9) for b in boxes.values()), cam.width, cam.height)
        shots.append(step.step(t, cam.width, cam.height, faces))
    return shots, cam


@dataclass
class Followed:
    commands: int
    minutes: float
    errors_deg: list[float]
    zoom_errors: list[float]


async def follow(shots: Sequence[Shot], cam: PinholeCamera, follow_cfg: PtzFollowConfig) -> Followed:
    """Offer each shot at its time to a follower driving the simulated head; the head's view at each shot."""
    clock = VirtualClock(shots[0].t if shots else 0.0)
    head = ViscaIpConfig(host="127.0.0.1", hfov_wide_deg=60.0, optical_zoom=12.0)
    sim = ViscaCameraSim(
        clock=clock, source_hfov_deg=cam.hfov_deg, hfov_wide_deg=head.hfov_wide_deg, optical_zoom=head.optical_zoom
    )
    task = None
    try:
        port = await sim.serve_udp()
        cfg = head.model_copy(update={"port": port})
        ptz = ViscaPtz("bench", cfg, UdpTransport("127.0.0.1", port))
        planner = PtzPlanner(cfg, follow_cfg, cam)
        follower = PtzFollower(ptz, planner, lambda s: None, clock)
        task = asyncio.create_task(follower.run())
        async with asyncio.timeout(30.0):  # a head that never answers fails the bench, not hangs it
            while not follower.connected:
                await asyncio.sleep(0.001)
        errors, zooms = [], []
        for shot in shots:
            clock.advance(max(0.0, shot.t - clock.now()))
            follower.offer(shot)
            async with asyncio.timeout(30.0):
                while not follower.idle:
                    await asyncio.sleep(0.0005)
            want, pos = planner.desired, sim.position()
            assert want is not None
            errors.append(view_error_deg(pos, want))
            zooms.append(abs(cfg.hfov_at(pos.zoom) / cfg.hfov_at(want.zoom) - 1.0))
        commands = sum(visca.parse_command(m).kind == "pan_tilt_absolute" for m in sim.received)
        minutes = (shots[-1].t - shots[0].t) / 60.0 if len(shots) > 1 else 0.0
        return Followed(commands, minutes, errors, zooms)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await sim.close()


PEERS: dict[str, dict[str, float]] = {
    "planner": {},
    "every change": {"deadband": 0.0, "min_interval_s": 0.0},
    "cuts only": {"deadband": 1.0},
}


def bench_ptz(quick: bool = False) -> list[Row]:
    seeds, duration = ((0,), 60.0) if quick else ((0, 1, 2), 150.0)
    base = Config().ptz_follow.model_copy(update={"enabled": True})
    results: dict[str, list[Followed]] = {name: [] for name in PEERS}
    cuts = 0
    for seed in seeds:
        shots, cam = meeting_shots(seed, duration)
        cuts += sum(s.cut for s in shots)
        for name, update in PEERS.items():
            results[name].append(asyncio.run(follow(shots, cam, base.model_copy(update=update))))
    minutes = sum(r.minutes for r in results["planner"])
    rows: list[Row] = [("director cuts per minute", cuts / minutes if minutes else math.nan, "1/min")]
    for name, runs in results.items():
        errors = np.concatenate([r.errors_deg for r in runs])
        zooms = np.concatenate([r.zoom_errors for r in runs])
        rows += [
            (f"{name}: commands per minute", sum(r.commands for r in runs) / minutes, "1/min"),
            (f"{name}: view error, mean", float(errors.mean()), "deg"),
            (f"{name}: view error, p95", float(np.percentile(errors, 95)), "deg"),
            (f"{name}: zoom error, mean", 100.0 * float(zooms.mean()), "%"),
        ]
    return rows
