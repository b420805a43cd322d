"""Track figures on a rendered meeting: people who lean, turn away and hide their face in the simulated room,
the scoring of tracks against its ground truth (an injected identity switch is counted), and ``roombox
faces --video``'s track ids on a rendered room."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.bench.faces_meeting import (
    TrackStep,
    TruthStep,
    meeting_scenario,
    run_meeting,
    scheduled_misses,
    score_tracks,
)
from appliance.messages import Box
from drivers.files import VideoFileWriter
from drivers.simroom.scenario import Move, ScenarioError, parse_scenario
from drivers.simroom.video import RoomRenderer

ROOT = Path(__file__).resolve().parent.parent


# ---- the scoring, on made-up tracks ----

PEOPLE = {"a": (100.0, 100.0, 60.0, 60.0), "b": (300.0, 100.0, 60.0, 60.0), "c": (500.0, 120.0, 40.0, 40.0)}
HIDDEN_C = (2.0, 3.0)  # c's face cannot be seen from 2 s to 3 s


def _truth(n: int = 30) -> list[TruthStep]:
    out = []
    for k in range(n):
        t = k * 0.2
        visible = {p: not (p == "c" and HIDDEN_C[0] <= t < HIDDEN_C[1]) for p in PEOPLE}
        out.append(TruthStep(t, PEOPLE, visible))
    return out


def _perfect(truth: list[TruthStep], ids: dict[str, int] | None = None) -> list[TrackStep]:
    ids = ids or {"a": 1, "b": 2, "c": 3}
    out = []
    for g in truth:
        faces: list[tuple[Box, int, bool]] = []
        for p, (x, y, w, h) in g.boxes.items():
            if g.visible[p]:
                faces.append(((x + 3.0, y - 2.0, w * 1.1, h * 1.1), ids[p], True))
        out.append(TrackStep(g.t, faces))
    return out


def test_perfect_tracks_score_no_switch_and_every_miss_survived() -> None:
    truth = _truth()
    s = score_tracks(truth, _perfect(truth), {"c": [HIDDEN_C]})
    assert (s.switches, s.misses, s.survived, s.false_tracks, s.false_faces) == (0, 1, 1, 0, 0)
    assert s.tracked_pct == pytest.approx(100.0)


def test_an_injected_identity_switch_is_counted() -> None:
    truth = _truth()
    out = _perfect(truth)
    swapped = []
    for k, step in enumerate(out):  # from step 10 on, a and b have swapped track ids
        if k >= 10:
            swap = {1: 2, 2: 1}
            step = TrackStep(step.t, [(b, swap.get(i, i), c) for b, i, c in step.faces])
        swapped.append(step)
    assert score_tracks(truth, swapped, {"c": [HIDDEN_C]}).switches == 2  # each of a and b changed once
    # one face of a at one step on a new track: two switches (to it and back)
    out = _perfect(truth)
    out[5] = TrackStep(out[5].t, [(b, 7 if i == 1 else i, c) for b, i, c in out[5].faces])
    assert score_tracks(truth, out, {}).switches == 2


def test_a_track_lost_over_a_miss_is_not_survived() -> None:
    truth = _truth()
    out = [
        TrackStep(s.t, [(b, 9 if (i == 3 and s.t >= HIDDEN_C[1]) else i, c) for b, i, c in s.faces])
        for s in _perfect(truth)
    ]
    s = score_tracks(truth, out, {"c": [HIDDEN_C]})
    assert (s.misses, s.survived, s.switches) == (1, 0, 1)


def test_unconfirmed_faces_and_ghost_tracks() -> None:
    truth = _truth()
    out = _perfect(truth)
    for k in range(5):  # a confirmed track on the wall, where nobody sits
        out[k] = TrackStep(out[k].t, [*out[k].faces, ((800.0, 300.0, 50.0, 50.0), 40, True)])
    # an unconfirmed track on b for one step changes nothing for identities
    out[12] = TrackStep(out[12].t, [(bx, 41 if i == 2 else i, i != 2) for bx, i, _ in out[12].faces])
    s = score_tracks(truth, out, {"c": [HIDDEN_C]})
    assert (s.false_tracks, s.false_faces, s.switches) == (1, 5, 0)
    assert s.tracked < s.person_steps
    with pytest.raises(ValueError, match="tracker steps"):
        score_tracks(truth, out[:-1], {})


# ---- the simulated room's moves ----


def _scene(people: list[dict[str, Any]], **camera: Any) -> Any:
    cam = {"position_m": [3.5, 0.05, 1.25], "hfov_deg": 90.0, "width": 1280, "height": 720, "fps": 10.0, **camera}
    return parse_scenario({"duration_s": 4.0, "room": {"size_m": [7.0, 6.0, 3.0]}, "camera": cam, "people": people})


TWO = [
    {"id": "near", "seat_m": [2.7, 2.0], "face": "astronaut"},
    {"id": "far", "seat_m": [4.3, 2.4], "face": "lfw:3"},
]


def test_moves_lean_turn_and_hide() -> None:
    from appliance.bench.faces_suite import match
    from appliance.perception.yunet import YuNetDetector

    people = [
        {**TWO[0], "moves": [{"kind": "lean", "start_s": 1.0, "duration_s": 2.0, "offset_m": [0.2, -0.1]}]},
        {
            **TWO[1],
            "moves": [
                {"kind": "turn", "start_s": 0.5, "duration_s": 1.0},
                {"kind": "hide", "start_s": 2.5, "duration_s": 1.0},
            ],
        },
    ]
    scn = _scene(people)
    r = RoomRenderer(scn)
    rest, leaned = r.face_boxes(0.0)["near"], r.face_boxes(2.0)["near"]
    z = scn.to_camera(scn.head_room(scn.people[0]))[2]
    assert leaned[0] - rest[0] == pytest.approx(r.cam.focal_px * 0.2 / z, abs=6.0)  # sway is a few px
    assert leaned[1] - rest[1] == pytest.approx(r.cam.focal_px * 0.1 / z, abs=4.0)  # lower: y grows downwards
    half = r.face_boxes(1.3)["near"][0] - rest[0]  # eased in over 0.6 s: half way at 0.3 s
    assert half == pytest.approx(0.5 * (leaned[0] - rest[0]), abs=6.0)
    assert [r.face_states(t)["far"] for t in (0.0, 1.0, 2.0, 3.0, 3.6)] == [
        "visible",
        "turned",
        "visible",
        "hidden",
        "visible",
    ]
    with YuNetDetector() as det:
        for t, seen in ((0.0, [True, True]), (1.0, [True, False]), (2.0, [True, True]), (3.0, [True, False])):
            boxes = r.face_boxes(t)
            found = det.detect(r.render_frame(t), t)
            hit, false = match([f.box for f in found.faces], [boxes["near"], boxes["far"]])
            assert (hit, false) == (seen, 0), t


@pytest.mark.parametrize(
    ("move", "key"),
    [
        ({"kind": "lean", "start_s": 0.0, "duration_s": 1.0, "offset_m": [0.9, 0.0]}, "people.0.moves.0.offset_m"),
        ({"kind": "wave", "start_s": 0.0, "duration_s": 1.0}, "people.0.moves.0.kind"),
        ({"kind": "hide", "start_s": 0.0, "duration_s": 0.0}, "people.0.moves.0.duration_s"),
    ],
)
def test_bad_moves_are_refused_naming_the_key(move: dict[str, Any], key: str) -> None:
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        _scene([{**TWO[0], "moves": [move]}])


def test_lean_eases_in_and_out() -> None:
    m = Move(kind="lean", start_s=1.0, duration_s=3.0, offset_m=(0.3, 0.0), ease_s=0.5)
    assert [round(m.lean_at(t)[0], 3) for t in (0.9, 1.0, 1.25, 1.5, 3.0, 3.75, 4.0)] == [
        0.0,
        0.0,
        0.15,
        0.3,
        0.3,
        0.15,
        0.0,
    ]


# ---- the rendered meeting through the real detector and tracks ----


def test_a_rendered_meeting_keeps_who_is_who() -> None:
    duration = 16.0
    scn = meeting_scenario(duration)
    misses = scheduled_misses(scn)
    assert sum(len(v) for v in misses.values()) >= 3
    run = run_meeting(duration, (1920, 1080), names=["yunet+tracks"])
    assert len(run.truth) == int(duration * 5) and run.cpu_ms["yunet+tracks"] > 0
    s = score_tracks(run.truth, run.outputs["yunet+tracks"], misses)
    assert s.switches == 0 and s.false_tracks == 0, s
    assert s.misses >= 3 and s.survived == s.misses, s
    assert s.tracked_pct > 90.0, s
    assert sorted(s.ids) == sorted(p.id for p in scn.people)


# ---- roombox faces --video: track ids ----


def test_faces_on_a_rendered_video_carry_track_ids_through_a_hidden_face(tmp_path: Path) -> None:
    people = [TWO[0], {**TWO[1], "moves": [{"kind": "hide", "start_s": 1.0, "duration_s": 1.0}]}]
    scn = _scene(people, fps=5.0)
    r = RoomRenderer(scn)
    video = tmp_path / "room.mp4"
    fps = scn.camera.fps
    n = int(3.5 * fps)
    with VideoFileWriter(video, scn.camera.width, scn.camera.height, fps) as writer:
        for k in range(n):
            writer.write(r.render_frame(k / fps))
    p = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "faces", "--video", str(video)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    recs = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(recs) == n
    ids: dict[str, list[tuple[float, int]]] = {"near": [], "far": []}
    for rec in recs:
        assert all(set(f) == {"box", "score", "track"} and isinstance(f["track"], int) for f in rec["faces"])
        truth = r.face_boxes(rec["t"])
        for f in rec["faces"]:
            x, y, w, h = f["box"]
            for pid, (tx, ty, tw, th) in truth.items():
                if abs(x + w / 2 - tx - tw / 2) < tw / 2 and abs(y + h / 2 - ty - th / 2) < th / 2:
                    ids[pid].append((rec["t"], f["track"]))
    assert len(ids["near"]) == n and len({i for _, i in ids["near"]}) == 1
    far_times = [t for t, _ in ids["far"]]
    assert not any(1.05 <= t < 1.95 for t in far_times)  # hidden behind a hand
    assert min(far_times) < 1.0 and max(far_times) > 2.5
    assert len({i for _, i in ids["far"]}) == 1  # the same track before and after the second unseen
    assert ids["near"][0][1] != ids["far"][0][1]


def test_a_face_that_jumps_off_its_crop_is_searched_for_at_once() -> None:
    """A quick lean: the face moves 0.9 of its width between two detections, out of its crop; the watcher
    looks for it at once on a wider crop (not at the next scheduled search) and the track keeps its id."""
    import numpy as np

    from appliance.bench.faces_suite import match, room_shot
    from appliance.perception.watch import FaceWatcher
    from appliance.perception.yunet import YuNetDetector

    room, boxes = room_shot((1920, 1080), (100.0,), seed=4)
    with YuNetDetector() as det:
        watcher = FaceWatcher(det, 90.0, scan_interval_s=10.0)
        for k, dx in enumerate((0, 0, 90, 0, 90, 0)):  # confirmed after two; then back and forth
            img = np.roll(room, dx, axis=1)
            faces, _ = watcher.step(img, 0.2 * k)
            hit, false = match([f.box for f in faces.faces], [(x + dx, y, w, h) for x, y, w, h in boxes])
            assert (hit, false, watcher.track_ids) == ([True], 0, [1]), k
        assert watcher.scans == 1 and watcher.refines == 5  # the first search, then crops only
        assert watcher.widened >= 1  # the face that left its crop was found on a wider one
