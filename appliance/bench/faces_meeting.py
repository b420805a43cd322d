"""Track figures on a rendered meeting, for ``roombox bench faces`` (and ``roombox bench tracks`` alone).

A simulated meeting (:mod:`drivers.simroom`: six people seated around a table, faces about 34-94 px wide
in 1080p) in which people lean towards the table and their neighbours, turn away and hide their face
behind a hand for about a second (:class:`drivers.simroom.scenario.Move`), is rendered at the live
detection rate (5 Hz of a 30 fps camera: every sixth frame) and run through each detector with its
tracks, exactly as the box runs it (:class:`~appliance.perception.watch.FaceWatcher`: YuNet searches the
whole frame every ``scan_interval_s`` and refines the tracked faces on crops in between; BlazeFace, plain
and tiled, searches every frame). The outputs are scored against the simulated room's ground truth of
who is where (:func:`score_tracks`): identity switches, misses of about a second survived by the same
track, false tracks, and CPU milliseconds per camera frame amortised at 5 Hz, detection plus tracking.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from appliance.config import BlazeFaceConfig, YuNetConfig
from appliance.messages import Box
from drivers.simroom.scenario import CameraSpec, Move, Person, Scenario

Row = tuple[str, float, str]
DETECT_HZ, CAMERA_FPS = 5.0, 30.0

# (id, seat (x, y) in the room, head height, face photo, shirt); the camera at (3.5, 0.05, 1.25), 90 deg
SEATS = (
    ("alice", (2.411, 1.727), 1.22, "astronaut", (200, 90, 40)),
    ("frank", (2.28, 2.79), 1.19, "lfw:12", (90, 90, 60)),
    ("bob", (2.568, 3.527), 1.24, "lfw:3", (40, 70, 140)),
    ("carol", (3.5, 4.55), 1.18, "lfw:7", (60, 140, 80)),
    ("dave", (4.323, 3.349), 1.26, "lfw:1", (120, 120, 125)),
    ("erin", (4.479, 1.679), 1.20, "lfw:0", (150, 50, 110)),
)


# ---- scoring: pure, testable on made-up tracks ----


@dataclass(frozen=True)
class TruthStep:
    """The ground truth at one detection: each person's face box and whether the face can be seen."""

    t: float
    boxes: Mapping[str, Box]
    visible: Mapping[str, bool]


@dataclass(frozen=True)
class TrackStep:
    """What the tracker said at one detection: each face's box, its track id and whether that track is
    confirmed."""

    t: float
    faces: Sequence[tuple[Box, int, bool]]


@dataclass
class TrackScore:
    switches: int = 0  # changes of the confirmed track id that follows a person
    misses: int = 0  # misses (face turned away or hidden) after which the person was seen again
    survived: int = 0  # ... by the same track id as before
    false_tracks: int = 0  # confirmed tracks whose faces mostly matched nobody
    person_steps: int = 0  # visible faces over the run
    tracked: int = 0  # ... that a confirmed track followed
    false_faces: int = 0  # detections matching nobody
    steps: int = 0
    ids: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    @property
    def tracked_pct(self) -> float:
        return 100.0 * self.tracked / max(1, self.person_steps)


def pair_faces(found: Sequence[Box], truth: Mapping[str, Box]) -> dict[int, str]:
    """Which person each found box is (index -> person id), closest pairs first. A box is a person's face
    when its centre lies within half the face's width of the face's centre and its width is within a
    factor 2 (the criterion of :func:`appliance.bench.faces_suite.match`)."""
    pairs = []
    for i, (x, y, w, h) in enumerate(found):
        for pid, (tx, ty, tw, th) in truth.items():
            d = math.hypot(x + w / 2 - tx - tw / 2, y + h / 2 - ty - th / 2)
            if d <= 0.5 * tw and 0.5 <= w / max(tw, 1e-6) <= 2.0:
                pairs.append((d, i, pid))
    out: dict[int, str] = {}
    taken: set[str] = set()
    for _, i, pid in sorted(pairs):
        if i not in out and pid not in taken:
            out[i] = pid
            taken.add(pid)
    return out


def score_tracks(
    truth: Sequence[TruthStep], output: Sequence[TrackStep], misses: Mapping[str, Sequence[tuple[float, float]]]
) -> TrackScore:
    """Score the tracker's ``output`` against ``truth`` (the same detection times, in order).

    ``misses``: for each person, the (start, end) of each time the face could not be seen (turned away,
    hidden). A miss is survived when the last confirmed track id on the person before it is the first
    after it. A switch is counted each time the confirmed id on a person differs from the one before (a
    swap of two people is two switches). Faces of unconfirmed tracks count for neither.
    """
    if len(truth) != len(output):
        raise ValueError(f"{len(truth)} truth steps but {len(output)} tracker steps")
    score = TrackScore(steps=len(truth))
    ids: dict[str, list[tuple[float, int]]] = {}
    on_person: dict[int, list[bool]] = {}
    for g, o in zip(truth, output, strict=True):
        if abs(g.t - o.t) > 1e-6:
            raise ValueError(f"truth at {g.t} s but tracker output at {o.t} s")
        who = pair_faces([b for b, _, _ in o.faces], g.boxes)
        score.person_steps += sum(1 for v in g.visible.values() if v)
        for i, (_, tid, confirmed) in enumerate(o.faces):
            pid = who.get(i)
            if pid is None:
                score.false_faces += 1
            if not confirmed:
                continue
            on_person.setdefault(tid, []).append(pid is not None)
            if pid is not None:
                ids.setdefault(pid, []).append((g.t, tid))
                score.tracked += bool(g.visible.get(pid, True))
    for seq in ids.values():
        score.switches += sum(a[1] != b[1] for a, b in zip(seq, seq[1:], strict=False))
    for pid, spans in misses.items():
        seq = ids.get(pid, [])
        for m0, m1 in spans:
            before = [i for t, i in seq if t < m0]
            after = [i for t, i in seq if t >= m1]
            if before and after:
                score.misses += 1
                score.survived += before[-1] == after[0]
    score.false_tracks = sum(1 for hits in on_person.values() if sum(hits) * 2 < len(hits))
    score.ids = ids
    return score


# ---- the rendered meeting ----


def _lanes(size: tuple[int, int]) -> list[tuple[float, float]]:
    """How far (m) each seated person's head may lean to the left and to the right while it stays clear of
    its neighbours' in the picture (each keeps to its own side of the midpoints between heads): seated
    people lean towards the table and each other, not behind one another."""
    f = size[0] / 2.0 / math.tan(math.radians(45.0))
    cam_x, cam_y = 3.5, 0.05
    heads = [(f * (x - cam_x) / (y - cam_y), y - cam_y) for _, (x, y), _, _, _ in SEATS]
    out = []
    for u, z in heads:
        half = 0.75 * f * 0.16 / z  # half the head picture, hair included
        left = min((u - v) / 2.0 for v, _ in heads if v < u) if any(v < u for v, _ in heads) else 1e9
        right = min((v - u) / 2.0 for v, _ in heads if v > u) if any(v > u for v, _ in heads) else 1e9
        out.append((max(0.0, (left - half) * z / f), max(0.0, (right - half) * z / f)))
    return out


def meeting_scenario(duration_s: float, size: tuple[int, int] = (1920, 1080), seed: int = 3) -> Scenario:
    """The meeting: :data:`SEATS`, each person leaning (2-8 s, up to 0.3 m across, within :func:`_lanes`,
    and 0.12 m down), turning away and hiding the face behind a hand (0.8-1.2 s each) at random times,
    deterministic for ``seed``.
    """
    rng = np.random.default_rng(seed)
    lanes = _lanes(size)
    people = []
    for k, (pid, seat, height, face, shirt) in enumerate(SEATS):
        moves: list[Move] = []
        t = float(rng.uniform(1.0, 6.0)) + 2.0 * k / len(SEATS)
        while t < duration_s - 2.0:
            kind = str(rng.choice(["lean", "turn", "hide"], p=[0.5, 0.3, 0.2]))
            if kind == "lean":
                d = float(rng.uniform(2.0, 8.0))
                side = int(rng.integers(0, 2))
                if lanes[k][side] < 0.05:  # no room on that side
                    side = 1 - side
                across = min(float(rng.uniform(0.1, 0.3)), lanes[k][side]) * (-1.0 if side == 0 else 1.0)
                off = (across, float(rng.uniform(-0.12, 0.02)))
                moves.append(Move(kind="lean", start_s=t, duration_s=d, offset_m=off))
            else:
                d = float(rng.uniform(0.8, 1.2))
                moves.append(Move.model_validate({"kind": kind, "start_s": t, "duration_s": d}))
            t += d + float(rng.exponential(6.0)) + 1.0
        people.append(Person(id=pid, seat_m=seat, head_height_m=height, face=face, shirt_rgb=shirt, moves=moves))
    camera = CameraSpec(width=size[0], height=size[1], fps=CAMERA_FPS)
    return Scenario(duration_s=duration_s, camera=camera, people=people)


def scheduled_misses(scn: Scenario) -> dict[str, list[tuple[float, float]]]:
    """Each person's turns and hides, as (start, end)."""
    return {
        p.id: [(m.start_s, m.start_s + m.duration_s) for m in p.moves if m.kind in ("turn", "hide")] for p in scn.people
    }


def _peers() -> list[tuple[str, Callable[[], object]]]:
    from appliance.perception.watch import FaceWatcher

    return [
        ("yunet+tracks", lambda: FaceWatcher.from_config(YuNetConfig(), 90.0)),
        ("blazeface+tracks", lambda: FaceWatcher.from_config(BlazeFaceConfig(tiles=(1, 1)), 90.0)),
        ("blazeface 5x3 tiles+tracks", lambda: FaceWatcher.from_config(BlazeFaceConfig(tiles=(5, 3)), 90.0)),
    ]


@dataclass
class MeetingRun:
    truth: list[TruthStep]
    outputs: dict[str, list[TrackStep]]
    cpu_ms: dict[str, float]  # per detection
    wall_ms: dict[str, float]


def run_meeting(
    duration_s: float,
    size: tuple[int, int],
    names: Sequence[str] | None = None,
    seed: int = 3,
    limits: Mapping[str, float] | None = None,
) -> MeetingRun:
    """Render the meeting at 5 Hz and run each detector with its tracks over the same frames; a detector
    named in ``limits`` only over the first that many seconds (the costly tiled pass)."""
    from appliance.perception.watch import FaceWatcher
    from drivers.simroom.video import RoomRenderer

    scn = meeting_scenario(duration_s, size, seed)
    renderer = RoomRenderer(scn)
    peers = [(n, make) for n, make in _peers() if names is None or n in names]
    watchers: dict[str, FaceWatcher] = {}
    for n, make in peers:
        w = make()
        assert isinstance(w, FaceWatcher)
        watchers[n] = w
    cpu = dict.fromkeys(watchers, 0.0)
    wall = dict.fromkeys(watchers, 0.0)
    outputs: dict[str, list[TrackStep]] = {n: [] for n in watchers}
    truth: list[TruthStep] = []
    try:
        for w in watchers.values():  # warm-up on an empty room, which leaves no track behind
            w.detector.detect(renderer.background, 0.0)
        for k in range(int(duration_s * DETECT_HZ)):
            t = round(k / DETECT_HZ * CAMERA_FPS) / CAMERA_FPS  # a camera frame's time
            img = renderer.render_frame(t)
            states = renderer.face_states(t)
            truth.append(TruthStep(t, renderer.face_boxes(t), {p: s == "visible" for p, s in states.items()}))
            for n, w in watchers.items():
                if limits and t >= limits.get(n, math.inf):
                    continue
                c0, w0 = time.process_time(), time.perf_counter()
                faces, tracks = w.step(img, t)
                cpu[n] += time.process_time() - c0
                wall[n] += time.perf_counter() - w0
                confirmed = {tr.id: tr.confirmed for tr in tracks}
                outputs[n].append(
                    TrackStep(
                        t, [(f.box, i, confirmed.get(i, False)) for f, i in zip(faces.faces, w.track_ids, strict=True)]
                    )
                )
    finally:
        for w in watchers.values():
            w.close()
    steps = {n: max(1, len(out)) for n, out in outputs.items()}
    return MeetingRun(
        truth,
        outputs,
        {n: 1000.0 * v / steps[n] for n, v in cpu.items()},
        {n: 1000.0 * v / steps[n] for n, v in wall.items()},
    )


def _rows(run: MeetingRun, misses: Mapping[str, Sequence[tuple[float, float]]], label: str) -> list[Row]:
    rows: list[Row] = []
    per_frame = DETECT_HZ / CAMERA_FPS
    for name, out in run.outputs.items():
        s = score_tracks(run.truth[: len(out)], out, misses)
        secs = len(out) / DETECT_HZ
        span = f"{label} {secs / 60:.3g} min" if secs >= 60 else f"{label} {secs:.3g} s"
        rows += [
            (f"{name} {span}: identity switches", float(s.switches), "switches"),
            (f"{name} {span}: ~1 s misses survived (of {s.misses})", float(s.survived), "misses"),
            (f"{name} {span}: false tracks", float(s.false_tracks), "tracks"),
            (f"{name} {span}: visible faces on a confirmed track", round(s.tracked_pct, 1), "%"),
            (f"{name} {span}: false faces", round(100.0 * s.false_faces / max(1, s.steps), 1), "per 100 frames"),
            (f"{name} {span}: detection + tracking, 5 Hz", round(run.cpu_ms[name] * per_frame, 2), "cpu ms/frame"),
            (f"{name} {span}: the same, wall clock", round(run.wall_ms[name] * per_frame, 2), "ms/frame"),
        ]
    ours = run.cpu_ms.get("yunet+tracks")
    if ours:
        for name, ms in run.cpu_ms.items():
            if name != "yunet+tracks" and ms > 0:
                rows.append((f"yunet+tracks / {name} {label} cpu per frame", round(ours / ms, 2), "x"))
    return rows


TILED = "blazeface 5x3 tiles+tracks"


def bench_meeting(quick: bool = False) -> list[Row]:
    """Rows for the rendered meeting, each detector with its tracks at 5 Hz: 1080p30 over 5 minutes (45 s
    with ``quick``), 4K30 over its first minute (10 s). The tiled BlazeFace pass, which costs ten times the
    others, runs over the first minute at 1080p (15 s) and the first 20 s at 4K (5 s)."""
    rows: list[Row] = []
    plan = (
        (((1920, 1080), 45.0, 15.0), ((3840, 2160), 10.0, 5.0))
        if quick
        else (
            ((1920, 1080), 300.0, 60.0),
            ((3840, 2160), 60.0, 20.0),
        )
    )
    for size, duration, tiled_s in plan:
        res = "1080p30" if size[1] < 2000 else "4K30"
        run = run_meeting(duration, size, limits={TILED: tiled_s})
        scn = meeting_scenario(duration, size)
        rows += _rows(run, scheduled_misses(scn), f"{res} meeting, 6 seated,")
    return rows
