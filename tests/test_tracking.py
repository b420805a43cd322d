"""Face tracks on scripted detections: identities through misses and neighbours, stillness, directions."""

from __future__ import annotations

import math

import pytest

from appliance.bench.faces_suite import scripted_meeting
from appliance.messages import Face, Faces
from appliance.perception.tracking import FaceTracker, FaceTrackerConfig, Track
from common.geometry import PinholeCamera

CAM = PinholeCamera(1920, 1080, 90.0)


def frame(t: float, *centres: tuple[float, float], size: float = 60.0) -> Faces:
    return Faces(
        t=t,
        faces=tuple(Face((x - size / 2, y - size / 2, size, size), 0.9) for x, y in centres),
        width=1920,
        height=1080,
    )


def test_two_neighbours_keep_their_identities_while_swaying() -> None:
    tr = FaceTracker(CAM)
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for k in range(150):  # 30 s at 5 Hz; neighbours 1.5 face widths apart, swaying towards each other
        t = k * 0.2
        sway = 20.0 * math.sin(t)
        tr.update(frame(t, (900.0 + sway, 500.0), (990.0 - sway, 505.0)))
        seen[0].add(tr.last_ids[0])
        seen[1].add(tr.last_ids[1])
    assert len(seen[0]) == 1 and len(seen[1]) == 1 and seen[0] != seen[1]


def test_a_track_survives_a_one_second_miss_and_is_dropped_after_max_miss() -> None:
    tr = FaceTracker(CAM, FaceTrackerConfig(max_miss_s=3.0))
    for k in range(10):
        tr.update(frame(k * 0.2, (500.0, 400.0)))
    (first,) = tr.last_ids
    tracks = tr.update(
        frame(
            2.8,
        )
    )  # nothing seen for 1 s
    assert [t.id for t in tracks] == [first] and tracks[0].missed_s == pytest.approx(1.0)
    tr.update(frame(2.8, (530.0, 410.0)))  # back, a little moved (the head turned back)
    assert tr.last_ids == [first]
    assert tr.tracks(2.8 + 3.0)[0].id == first
    assert tr.tracks(2.8 + 3.01) == []


def test_a_single_detection_is_tentative_and_forgotten_quickly() -> None:
    tr = FaceTracker(CAM)
    (track,) = tr.update(frame(0.0, (100.0, 100.0)))
    assert not track.confirmed
    assert tr.update(frame(1.2)) == []  # unconfirmed tracks live tentative_miss_s (1 s)
    tr.update(frame(1.4, (100.0, 100.0)))
    tr.update(frame(1.6, (101.0, 100.0)))
    assert tr.tracks(1.6)[0].confirmed and tr.tracks(1.6)[0].hits == 2


def test_still_time_grows_for_a_poster_and_restarts_when_a_person_moves() -> None:
    tr = FaceTracker(CAM)
    for k in range(51):
        t = k * 0.2
        x = 800.0 if t < 6.0 else 800.0 + 40.0 * (t - 6.0)  # a person who gets up at 6 s
        tracks = tr.update(frame(t, (200.0, 300.0), (x, 500.0)))
    poster, person = tracks
    assert poster.still_s == pytest.approx(10.0)
    assert person.still_s < 1.0
    # at 10 s the face is at 960, moving 40 px/s: the smoothed centre lags by about speed x tau (12 px)
    assert person.center[0] == pytest.approx(948.0, abs=8.0)


def test_directions_follow_the_pinhole_camera() -> None:
    tr = FaceTracker(CAM)
    (centre, right, high) = tr.update(frame(0.0, (960.0, 540.0), (1920.0, 540.0), (960.0, 0.0)))
    assert centre.azimuth_deg == pytest.approx(0.0) and centre.elevation_deg == pytest.approx(0.0)
    assert right.azimuth_deg == pytest.approx(45.0)  # the frame's edge is half the 90 degree field of view
    assert high.elevation_deg == pytest.approx(math.degrees(math.atan2(540.0, 960.0)))
    assert set(centre.to_json()) == {
        "id",
        "t",
        "box",
        "center",
        "size",
        "azimuth_deg",
        "elevation_deg",
        "still_s",
        "missed_s",
        "age_s",
        "hits",
        "score",
        "confirmed",
    }
    assert Track.from_json(right.to_json()).to_json() == right.to_json()


def test_a_newcomer_far_away_gets_a_new_identity_and_time_goes_forward() -> None:
    tr = FaceTracker(CAM)
    tr.update(frame(0.0, (500.0, 400.0)))
    tr.update(frame(0.2, (1500.0, 400.0)))  # too far for the first track's gate
    assert tr.last_ids == [2]
    with pytest.raises(ValueError, match="out of time order"):
        tr.update(frame(0.1, (500.0, 400.0)))


def test_a_scripted_five_minute_meeting_has_no_identity_switch() -> None:
    frames, who, misses = scripted_meeting(300.0)
    tr = FaceTracker(CAM)
    ids: dict[int, list[tuple[float, int]]] = {}
    for faces, labels in zip(frames, who, strict=True):
        by_id = {t.id: t for t in tr.update(faces)}
        for label, tid in zip(labels, tr.last_ids, strict=True):
            if label >= 0 and by_id[tid].confirmed:
                ids.setdefault(label, []).append((faces.t, tid))
    assert len(ids) == 6
    for p, seq in ids.items():
        assert len({tid for _, tid in seq}) == 1, (p, sorted({tid for _, tid in seq}))
        m0, m1 = misses[p]
        assert any(m0 - 0.5 <= t < m0 for t, _ in seq) and any(m1 <= t < m1 + 0.5 for t, _ in seq)
