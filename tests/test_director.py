"""The director on scripted faces and DOA blocks: who is framed, when it cuts, when it holds."""

from __future__ import annotations

import math

import pytest

from appliance.config import DirectorConfig
from appliance.director import Director
from appliance.messages import Doa, Face, Faces, Shot
from common.geometry import PinholeCamera

CAM = PinholeCamera(1920, 1080, 90.0)
HOP = 0.032
SEATS = {"a": -30.0, "b": 0.0, "c": 25.0}


def face_at(az: float, size: float = 60.0, row: float = 480.0) -> Face:
    u = CAM.column_of_azimuth(az)
    return Face(box=(u - size / 2, row - size / 2, size, size), score=0.9)


FACES = Faces(t=0.0, faces=tuple(face_at(a) for a in SEATS.values()), width=1920, height=1080)


def run(
    script: list[tuple[float, float, str | None]],
    fps: float = 15.0,
    cfg: DirectorConfig | None = None,
    faces: Faces = FACES,
) -> list[Shot]:
    """script: (start, end, talker) spans; returns one Shot per video frame."""
    d = Director(CAM, cfg or DirectorConfig())
    end = max(e for _, e, _ in script)
    shots, t_audio, n = [], 0.0, 0
    while n / fps <= end:
        now = n / fps
        doas = []
        while t_audio + HOP <= now:
            t_audio += HOP
            who = next((w for s, e, w in script if s <= t_audio < e), None)
            doas.append(Doa(t_audio, SEATS[who] + 1.5 * math.sin(7 * t_audio) if who else None, who is not None))
        shots.append(d.step(faces if n % 6 == 0 else None, doas, now))
        n += 1
    return shots


def framed(shot: Shot, who: str) -> bool:
    x, y, w, h = shot.crop
    fx, fy, fw, fh = face_at(SEATS[who]).box
    inside = x <= fx and fx + fw <= x + w and y <= fy and fy + fh <= y + h
    others = [k for k in SEATS if k != who]
    cx = x + w / 2
    nearest = all(abs(cx - (face_at(SEATS[o]).center[0])) > abs(cx - face_at(SEATS[who]).center[0]) for o in others)
    return shot.mode == "speaker" and inside and nearest


def first_framed(shots: list[Shot], who: str, after: float) -> float:
    return next(s.t for s in shots if s.t >= after and framed(s, who)) - after


def test_frames_each_talker_soon_after_they_start() -> None:
    shots = run([(1.0, 6.0, "a"), (6.0, 11.0, "c"), (11.0, 15.0, "b")])
    assert shots[5].mode == "group"  # people seen, nobody talking yet
    for who, start in (("a", 1.0), ("c", 6.0), ("b", 11.0)):
        assert first_framed(shots, who, start) < 1.5
    # once framed, the talker stays framed until the next one starts
    settled = 6.0 + first_framed(shots, "c", 6.0)
    assert all(framed(s, "c") for s in shots if settled <= s.t < 11.0)


def test_short_interjection_does_not_cause_a_cut() -> None:
    shots = run([(0.0, 8.0, "a"), (8.0, 8.3, "c"), (8.3, 12.0, "a")])
    later = [s for s in shots if s.t >= 3.0]
    assert all(framed(s, "a") for s in later)
    assert not any(s.cut for s in later)


def test_holds_a_shot_before_cutting_back() -> None:
    cfg = DirectorConfig(min_hold_s=3.0)
    shots = run([(0.0, 3.0, "a"), (3.0, 4.5, "c"), (4.5, 9.0, "a")], cfg=cfg)
    cuts = [s.t for s in shots if s.cut and s.mode == "speaker"]
    assert all(b - a >= 3.0 for a, b in zip(cuts, cuts[1:], strict=False))


def test_silence_falls_back_to_the_group_shot_containing_everyone() -> None:
    cfg = DirectorConfig(silence_to_group_s=3.0)
    shots = run([(0.0, 4.0, "b"), (4.0, 10.0, None)], cfg=cfg)
    assert framed(shots[int(3.0 * 15)], "b")
    last = shots[-1]
    assert last.mode == "group"
    x, y, w, h = last.crop
    for f in FACES.faces:
        fx, fy, fw, fh = f.box
        assert x <= fx and fx + fw <= x + w and y <= fy and fy + fh <= y + h
    group_t = next(s.t for s in shots if s.mode == "group" and s.t > 4.0)
    assert 4.0 + 3.0 <= group_t < 4.0 + 3.0 + 0.5


def test_speech_from_where_nobody_is_seen_frames_no_one() -> None:
    lone = Faces(t=0.0, faces=(face_at(-30.0),), width=1920, height=1080)
    shots = run([(0.0, 6.0, "c")], faces=lone)
    assert all(s.mode == "group" for s in shots[3:])


def test_nobody_in_view_shows_the_whole_room() -> None:
    shots = run([(0.0, 3.0, None)], faces=Faces(t=0.0, faces=(), width=1920, height=1080))
    assert {s.mode for s in shots} == {"wide"}
    assert shots[-1].crop == (0, 0, 1920, 1080)


def test_crops_stay_inside_the_picture_at_16_by_9_and_runs_repeat() -> None:
    script = [(0.5, 3.0, "a"), (3.0, 3.2, None), (3.2, 7.0, "c"), (7.0, 9.0, "b")]
    one, two = run(script), run(script)
    assert one == two
    for s in one:
        x, y, w, h = s.crop
        assert 0 <= x and 0 <= y and x + w <= 1920 and y + h <= 1080
        assert abs(w / h - 16 / 9) < 0.02


def run_with(d: Director, start: float, end: float, talker: str | None = None, fps: float = 15.0) -> list[Shot]:
    shots, n = [], 0
    t = start
    while t <= end:
        doas = [Doa(t, SEATS[talker], True)] if talker else []
        shots.append(d.step(FACES if n % 6 == 0 else None, doas, t))
        n += 1
        t = start + n / fps
    return shots


def inside(face: Face, crop: tuple[int, int, int, int]) -> bool:
    x, y, w, h = crop
    fx, fy, fw, fh = face.box
    return x <= fx and fx + fw <= x + w and y <= fy and fy + fh <= y + h


def test_group_and_off_modes_ignore_the_talker() -> None:
    group = run_with(Director(CAM, DirectorConfig(mode="group")), 0.0, 4.0, "a")
    assert {s.mode for s in group[1:]} == {"group"}
    assert all(inside(f, group[-1].crop) for f in FACES.faces)
    off = run_with(Director(CAM, DirectorConfig(mode="off")), 0.0, 4.0, "a")
    assert {s.mode for s in off} == {"wide"} and off[-1].crop == (0, 0, 1920, 1080)


def test_gallery_puts_each_person_in_a_tile_recent_talkers_first() -> None:
    d = Director(CAM, DirectorConfig(mode="gallery", gallery_max=2))
    shots = run_with(d, 0.0, 3.0, "c")
    last = shots[-1]
    assert last.mode == "gallery" and len(last.tiles) == 2
    # c talked, so c is in; the other tile is the leftmost (a); laid out left to right
    faces = {k: face_at(az) for k, az in SEATS.items()}
    assert inside(faces["a"], last.tiles[0]) and inside(faces["c"], last.tiles[1])
    assert not any(inside(faces["b"], t) for t in last.tiles)
    for x, y, w, h in last.tiles:  # two side by side: each tile is half of 16:9
        assert abs(w / h - 8 / 9) < 0.02 and x >= 0 and y >= 0 and x + w <= 1920 and y + h <= 1080
    four = run_with(Director(CAM, DirectorConfig(mode="gallery")), 0.0, 1.0)[-1]
    assert len(four.tiles) == 3  # three people, up to four tiles


def test_manual_framing_from_the_panel_then_automatic_again() -> None:
    d = Director(CAM, DirectorConfig(manual_resume_s=5.0))
    run_with(d, 0.0, 3.0, "a")
    crop = d.manual_view(pan=1.0, tilt=0.0, zoom=2.0, now=3.0)
    assert crop[0] + crop[2] == 1920 and abs(crop[2] - 960) < 1  # right edge, half the width
    manual = run_with(d, 3.0, 7.9, "a")
    assert all(s.mode == "manual" for s in manual) and manual[0].cut
    assert manual[-1].crop == (960, 270, 960, 540)
    resumed = run_with(d, 8.0, 11.0, "a")
    assert resumed[0].cut and "resumed" in resumed[0].reason and d.policy == "speaker"
    assert any(framed(s, "a") for s in resumed)
    with pytest.raises(ValueError, match="zoom"):
        d.manual_view(0.0, 0.0, 0.5, 11.0)
    with pytest.raises(ValueError, match="unknown mode"):
        d.set_mode("orbit", 11.0)  # type: ignore[arg-type]


def test_nobody_inside_an_excluded_range_is_ever_framed() -> None:
    # the face at -30 deg is a picture on the wall; the talker's voice comes from there
    d = Director(CAM, DirectorConfig(exclude_deg=[(-35.0, -25.0)]))
    shots = run_with(d, 0.0, 6.0, "a")
    assert not any(s.mode == "speaker" for s in shots)
    assert not any(inside(face_at(SEATS["a"]), s.crop) and s.mode == "speaker" for s in shots)
    assert all(not inside(face_at(SEATS["a"]), s.crop) for s in shots if s.mode == "group")
