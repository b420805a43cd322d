"""Generated meetings for the director bench: deterministic, 3-8 people, a face print that never moves or
talks, a latecomer absent before coming in, exchanges between neighbours of short turns."""

from __future__ import annotations

import pytest

from drivers.simroom.meetings import EXCHANGE_TURN_S, MeetingRenderer, make_meeting


def test_a_meeting_follows_from_its_seed() -> None:
    a, b = make_meeting(3, 40.0, width=640, height=360), make_meeting(3, 40.0, width=640, height=360)
    assert a.key() == b.key() and a == b
    assert make_meeting(4, 40.0, width=640, height=360).key() != a.key()
    talkers = a.talkers()
    assert 3 <= len(talkers) <= 8 and "print" not in talkers
    assert all(p.face.startswith("lfw:") and int(p.face[4:]) < 100 for p in a.scenario.people)


def test_the_print_is_still_and_silent_and_the_latecomer_comes_in() -> None:
    m = make_meeting(1, 40.0, width=640, height=360)
    (late,) = m.entries
    r = MeetingRenderer(m)
    enter = m.entries[late].t_s
    before, walking, seated = r.face_boxes(enter - 1.0), r.face_boxes(enter + 1.0), r.face_boxes(enter + 10.0)
    assert late not in before and late in walking and late in seated
    assert walking[late] != seated[late]
    assert before["print"] == walking["print"] == seated["print"]  # a photo does not sway
    assert next(p for p in m.scenario.people if p.id == "print").utterances == []
    spoken = [u.start_s for p in m.scenario.people if p.id == late for u in p.utterances]
    assert spoken and min(spoken) > enter + 3.0  # talks once seated
    frame = r.render_frame(enter + 1.0)
    assert frame.shape == (360, 640, 3) and (frame != r.render_frame(enter - 1.0)).any()


def test_exchanges_are_short_turns_between_two_people() -> None:
    m = make_meeting(0, 60.0, width=640, height=360)
    assert m.exchanges
    for ex in m.exchanges:
        assert ex.a != ex.b and ex.turns >= 2
        inside = [
            (p.id, u.start_s)
            for p in m.scenario.people
            for u in p.utterances
            if ex.start_s - 0.5 <= u.start_s < ex.end_s
        ]
        assert {pid for pid, _ in inside} == {ex.a, ex.b}
        assert len(inside) == ex.turns
        assert EXCHANGE_TURN_S[0] * ex.turns <= ex.end_s - ex.start_s <= (EXCHANGE_TURN_S[1] + 0.35) * ex.turns


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="3 to 8 people"):
        make_meeting(0, 30.0, n_people=9)
    with pytest.raises(ValueError, match="at least 10 s"):
        make_meeting(0, 5.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_no_head_hides_another(seed: int) -> None:
    import math

    m = make_meeting(seed, 30.0, n_people=8, width=640, height=360, face_print=False, latecomer=False)
    cx, cy = m.scenario.camera.position_m[:2]
    az = sorted(math.degrees(math.atan2(p.seat_m[0] - cx, p.seat_m[1] - cy)) for p in m.scenario.people)
    assert min(b - a for a, b in zip(az, az[1:], strict=False)) >= 5.5


def test_the_far_end_speaks_from_a_ceiling_loudspeaker_at_a_seated_persons_azimuth() -> None:
    import math

    m = make_meeting(0, 120.0, width=640, height=360)
    spk = m.scenario.loudspeaker
    assert spk is not None and m.farend and len(m.farend) == len(spk.turns)
    w, d, h = m.scenario.room.size_m
    assert spk.position_m[2] > h - 0.2  # on the ceiling
    cam_x, cam_y, _ = m.scenario.camera.position_m
    az = math.degrees(math.atan2(spk.position_m[0] - cam_x, spk.position_m[1] - cam_y))
    seats = [
        math.degrees(math.atan2(p.seat_m[0] - cam_x, p.seat_m[1] - cam_y)) for p in m.scenario.people if p.id != "print"
    ]
    assert min(abs(az - s) for s in seats) < 0.5
    # its turns are spans of speech in time order, and the truth marks them
    assert all(a < b for a, b in m.farend) and all(
        m.farend[k][1] < m.farend[k + 1][0] for k in range(len(m.farend) - 1)
    )
    rows = m.truth_rows(MeetingRenderer(m), {}, int(120 * m.scenario.camera.fps))
    a, b = m.farend[0]
    inside = [r["farend"] for r in rows if a + 0.1 <= r["t"] < b - 0.1]
    assert inside and all(inside)
    assert not any(r["farend"] for r in rows if r["t"] < m.farend[0][0])
    # without it: the same people in the same seats, and no loudspeaker
    quiet = make_meeting(0, 120.0, width=640, height=360, farend=False)
    assert quiet.scenario.loudspeaker is None and quiet.farend == ()
    seated = [(p.id, p.seat_m) for p in m.scenario.people if p.id != "print"]
    assert [(p.id, p.seat_m) for p in quiet.scenario.people if p.id != "print"] == seated
