"""Lip motion (appliance/perception/lips.py), the simulated room's moving mouths, and the director giving heard
speech to the face whose lips move: a reverberant room's small array hears a talker several degrees off, at a
neighbour; the lips tell which of the two talks. Lips never make speech."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from appliance.config import DirectorConfig
from appliance.director import Director
from appliance.messages import Doa, Face, Faces
from appliance.perception.lips import LipReading, LipWatch
from common.geometry import PinholeCamera
from drivers.simroom.meetings import MeetingRenderer, make_meeting

CAM = PinholeCamera(1920, 1080, 90.0)


def face_picture(rng: np.random.Generator, size: int = 80) -> np.ndarray:
    """A face-like grey patch: smooth texture, two dark eyes, closed lips."""
    img = (120 + 30 * rng.standard_normal((size, size))).clip(0, 255)
    img = np.asarray(np.round(img), np.float32)
    k = np.ones(5, np.float32) / 5
    img = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, img)
    img = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, img)
    img[int(0.35 * size) : int(0.42 * size), int(0.25 * size) : int(0.4 * size)] = 40
    img[int(0.35 * size) : int(0.42 * size), int(0.6 * size) : int(0.75 * size)] = 40
    img[int(0.79 * size) : int(0.81 * size), int(0.35 * size) : int(0.65 * size)] = 90
    return img


def frames(talks: bool, sway_px: float, n: int = 45, seed: int = 1) -> list[np.ndarray]:
    """``n`` 200x200 grey frames of one face at (60, 60) 80 px wide, its mouth opening at syllable rate when
    ``talks``, the whole face swaying ``sway_px`` pixels; camera noise on every frame."""
    rng = np.random.default_rng(seed)
    face = face_picture(rng)
    out = []
    for k in range(n):
        img = np.full((200, 200), 128.0, np.float32)
        f = face.copy()
        if talks:
            opening = round(8 * abs(math.sin(2 * math.pi * 4.0 * k / 15)))
            f[64 - opening // 2 : 64 + (opening + 1) // 2, 28:52] = 25
        dx = round(sway_px * math.sin(2 * math.pi * 0.4 * k / 15))
        img[60 : 60 + 80, 60 + dx : 140 + dx] = f
        img += rng.normal(0, 2.0, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def activity(talks: bool, sway_px: float) -> float:
    w = LipWatch()
    w.set_boxes([(60.0, 60.0, 80.0, 80.0)])
    readings = [w.look(k / 15, img) for k, img in enumerate(frames(talks, sway_px))]
    values = [r[0].activity for r in readings[10:]]
    assert all(v is not None for v in values)
    return float(np.median([v for v in values if v is not None]))


def test_a_moving_mouth_reads_as_lip_activity_and_a_still_one_does_not() -> None:
    lips_min = DirectorConfig().lips_min
    assert activity(True, 0.0) > 5 * lips_min
    assert activity(False, 0.0) < lips_min
    # a head that sways a few pixels moves the eyes as much as the mouth: still no lip activity
    assert activity(False, 3.0) < lips_min
    assert activity(True, 3.0) > 5 * lips_min


def test_tiny_faces_and_new_faces_give_no_reading() -> None:
    w = LipWatch()
    img = frames(True, 0.0, n=3)
    w.set_boxes([(60.0, 60.0, 80.0, 80.0), (10.0, 10.0, 12.0, 12.0)])
    first = w.look(0.0, img[0])
    assert [r.activity for r in first] == [None, None]  # nothing to compare with yet; too small to read
    w.look(1 / 15, img[1])
    third = w.look(2 / 15, img[2])
    assert third[0].activity is not None and third[1].activity is None
    with pytest.raises(ValueError, match="tau_s"):
        LipWatch(tau_s=0.0)


def test_the_simulated_rooms_mouths_move_with_their_owners_speech() -> None:
    m = make_meeting(0, 30.0)
    r = MeetingRenderer(m)
    talker = next(p for p in m.scenario.people if p.utterances)
    start = talker.utterances[0].start_s
    during = [r.mouth_open(talker.id, start + 0.3 + k / 15) for k in range(30)]
    assert max(during) > 0.5 and min(during) < max(during)  # it opens and closes, syllable by syllable
    assert r.mouth_open("print", start + 0.5) == 0.0  # a photo never talks
    before = start - 0.05 if start > 0.1 else None
    if before is not None:
        assert r.mouth_open(talker.id, before) == 0.0
    # drawn: the face's lower part changes while it talks, and the lip reading sees it
    w = LipWatch()
    t0 = start + 0.2
    box = r.face_boxes(t0)[talker.id]
    w.set_boxes([box])
    values = [w.look(t0 + k / 15, r.render_frame(t0 + k / 15))[0].activity for k in range(20)]
    assert max(v for v in values if v is not None) > DirectorConfig().lips_min


def face_at(az: float, size: float = 60.0) -> Face:
    u = CAM.column_of_azimuth(az)
    return Face(box=(u - size / 2, 480 - size / 2, size, size), score=0.9)


SEATS = {"a": -8.0, "b": 2.0}  # neighbours at a table, ten degrees apart


def direct(moving: str | None, heard_deg: float, speech: bool = True, cfg: DirectorConfig | None = None) -> float:
    """Four seconds of speech heard from ``heard_deg`` while ``moving``'s lips move; the azimuth of the
    speaker shot's subject at the end (nan when not a speaker shot)."""
    d = Director(CAM, cfg or DirectorConfig())
    faces = Faces(0.0, tuple(face_at(a) for a in SEATS.values()), 1920, 1080)
    shot = None
    for n in range(60):
        now = n / 15
        doas = [Doa(now - k * 0.032, heard_deg, speech) for k in (1, 0)]
        lips = [LipReading(f.box, 2.0 if who == moving else 0.0) for who, f in zip(SEATS, faces.faces, strict=True)]
        shot = d.step(faces if n % 3 == 0 else None, doas, now, lips)
    assert shot is not None
    return shot.target_azimuth_deg if shot.mode == "speaker" and shot.target_azimuth_deg is not None else math.nan


def test_heard_speech_goes_to_the_face_whose_lips_move() -> None:
    # b talks, but the room's reverberation makes the array hear -6 deg: nearer a than b
    assert direct(None, -6.0) == pytest.approx(SEATS["a"], abs=1.0)  # by sound alone: the wrong one
    assert direct("b", -6.0) == pytest.approx(SEATS["b"], abs=1.0)  # the lips tell
    assert direct("a", -6.0) == pytest.approx(SEATS["a"], abs=1.0)
    # turned off in the config: sound alone again
    assert direct("b", -6.0, cfg=DirectorConfig(lips=False)) == pytest.approx(SEATS["a"], abs=1.0)
    # lips far from the heard direction do not take it
    assert direct("b", -6.0, cfg=DirectorConfig(lips_window_deg=3.0)) == pytest.approx(SEATS["a"], abs=1.0)


def test_lips_never_make_speech() -> None:
    # b's lips move (chewing, a smile) but nothing is heard, or only the far end: no close shot of b
    assert math.isnan(direct("b", -6.0, speech=False))


def test_a_still_face_whose_lips_move_while_speech_is_heard_is_a_person_not_a_picture() -> None:
    still = DirectorConfig().print_still_s

    def subject(cfg: DirectorConfig) -> float:
        d = Director(CAM, cfg)
        faces = Faces(0.0, tuple(face_at(a) for a in SEATS.values()), 1920, 1080)  # nobody ever moves
        shot = None
        n_quiet = int((still + 2.0) * 15)
        for n in range(n_quiet + 60):
            now = n / 15
            talking = n >= n_quiet
            doas = [Doa(now - k * 0.032, -6.0 if talking else None, talking) for k in (1, 0)]
            lips = [
                LipReading(f.box, 2.0 if talking and who == "b" else 0.0)
                for who, f in zip(SEATS, faces.faces, strict=True)
            ]
            shot = d.step(replace(faces, t=now) if n % 3 == 0 else None, doas, now, lips)
        assert shot is not None
        return shot.target_azimuth_deg if shot.mode == "speaker" and shot.target_azimuth_deg is not None else math.nan

    # both sat still long enough to pass for pictures; b talks and its lips move: b is a person, framed
    assert subject(DirectorConfig()) == pytest.approx(SEATS["b"], abs=1.0)
    # by sound alone, a picture's direction moves nothing
    assert math.isnan(subject(DirectorConfig(lips=False)))
