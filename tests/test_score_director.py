"""The director's figures of ``roombox score`` (issue 12) on hand-made tracks with known answers: framed time
after a grace, switch latency p95, shots without a face, camera moves during far-end speech, a face print in
a close shot, cuts and both talkers in the picture during A-B-A-B exchanges."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.score import format_table, pooled, score

FPS = 10.0
PEOPLE = [{"id": "a", "box": [100, 100, 50, 50]}, {"id": "b", "box": [800, 100, 50, 50]}]
PRINT = [{"id": "print", "box": [1500, 100, 50, 50]}]
ON_A = [0, 0, 400, 225]
ON_B = [650, 0, 400, 225]
ON_PRINT = [1300, 0, 400, 225]
EMPTY = [0, 600, 400, 225]  # the floor: nobody's face
WIDE = [0, 0, 1920, 1080]


def truth(end: float, talk: list[tuple[float, float, str]], **extra: Any) -> list[dict[str, Any]]:
    rows = []
    for i in range(int(end * FPS)):
        t = i / FPS
        row: dict[str, Any] = {"t": t, "people": PEOPLE, "talkers": [w for s, e, w in talk if s <= t < e]}
        for key, spans in extra.items():
            on = [v for s, e, v in spans if s <= t < e]
            if on:
                row[key] = on[0]
        rows.append(row)
    return rows


def track(end: float, spans: list[tuple[float, float, list[int], str]], cuts: tuple[float, ...] = ()) -> list[dict]:
    out = []
    for i in range(int(end * FPS)):
        t = i / FPS
        crop, mode = next(((c, m) for s, e, c, m in spans if s <= t < e), (WIDE, "group"))
        out.append({"t": t, "crop": crop, "mode": mode, "cut": any(abs(t - c) < 1e-6 for c in cuts)})
    return out


def test_framed_after_the_grace() -> None:
    g = truth(5.0, [(0.0, 5.0, "a")])
    late = score(track(5.0, [(3.0, 5.0, ON_A, "speaker")]), g)
    assert late.grace_speech_s == pytest.approx(3.0)  # from 2 s after a took the floor
    assert late.framed_after_grace_frac == pytest.approx(2.0 / 3.0)
    assert late.framed_frac == pytest.approx(2.0 / 5.0)
    early = score(track(5.0, [(1.0, 5.0, ON_A, "speaker")]), g)
    assert early.framed_after_grace_frac == pytest.approx(1.0)
    # a talker who keeps the floor through a pause keeps their grace used up
    g2 = truth(8.0, [(0.0, 3.0, "a"), (4.0, 8.0, "a")])
    s = score(track(8.0, [(0.0, 8.0, ON_B, "speaker")]), g2)
    assert s.grace_speech_s == pytest.approx(1.0 + 4.0) and s.framed_after_grace_frac == 0.0


def test_switch_latency_p95() -> None:
    g = truth(8.0, [(0.0, 4.0, "a"), (4.0, 8.0, "b")])
    s = score(track(8.0, [(1.0, 4.5, ON_A, "speaker"), (4.5, 8.0, ON_B, "speaker")]), g)
    assert s.latency_percentile(95) == pytest.approx(0.5 + 0.95 * 0.5)
    assert s.to_json()["switch_latency_p95_s"] == pytest.approx(0.975)


def test_a_shot_without_a_face_while_people_are_there() -> None:
    g = truth(4.0, [])
    s = score(track(4.0, [(1.0, 2.5, EMPTY, "speaker")]), g)
    assert s.people_s == pytest.approx(4.0) and s.faceless_s == pytest.approx(1.5)
    nobody = [dict(r, people=[]) for r in g]
    assert score(track(4.0, [(1.0, 2.5, EMPTY, "speaker")]), nobody).faceless_s == 0.0


def test_camera_moves_during_far_end_speech() -> None:
    g = truth(6.0, [], farend=[(2.0, 4.0, True)])
    still = score(track(6.0, [(0.0, 6.0, ON_A, "speaker")]), g)
    assert still.farend_s == pytest.approx(2.0) and still.farend_moves_s == 0.0
    # a cut to b at 3.0 s inside the far-end speech: one frame's move
    cut = score(track(6.0, [(0.0, 3.0, ON_A, "speaker"), (3.0, 6.0, ON_B, "speaker")]), g)
    assert cut.farend_moves_s == pytest.approx(0.1)
    # a glide that changes the crop on every frame from 2.5 s to 3.5 s
    glide = track(6.0, [(0.0, 6.0, ON_A, "speaker")])
    for r in glide:
        if 2.5 - 1e-9 <= r["t"] < 3.5 - 1e-9:
            r["crop"] = [round(r["t"] * 100), 0, 400, 225]
    assert score(glide, g).farend_moves_s == pytest.approx(1.0 + 0.1)  # ten moves in, one back to ON_A
    no_farend = truth(6.0, [])
    assert score(glide, no_farend).farend_moves_s == 0.0 and score(glide, no_farend).farend_s == 0.0
    # over a local talker (double talk), framing the local talker is no far-end move
    double = truth(6.0, [(2.5, 6.0, "b")], farend=[(2.0, 4.0, True)])
    s = score(track(6.0, [(0.0, 3.0, ON_A, "speaker"), (3.0, 6.0, ON_B, "speaker")]), double)
    assert s.farend_s == pytest.approx(0.5) and s.farend_moves_s == 0.0


def test_a_face_print_as_the_subject_of_a_close_shot() -> None:
    g = truth(5.0, [(0.0, 5.0, "a")], prints=[(0.0, 5.0, PRINT)])
    s = score(track(5.0, [(1.0, 2.5, ON_PRINT, "speaker")]), g)
    assert s.print_close_s == pytest.approx(1.5)
    # the print in a group shot, or a speaker shot of a with the print at the edge, is not a close shot of it
    assert score(track(5.0, [(0.0, 5.0, WIDE, "group")]), g).print_close_s == 0.0
    assert score(track(5.0, [(0.0, 5.0, [60, 0, 1500, 844], "speaker")]), g).print_close_s == 0.0


def test_cuts_and_both_talkers_in_exchanges() -> None:
    talk = [(0.0, 1.5, "a"), (1.5, 3.0, "b"), (3.0, 4.5, "a"), (4.5, 6.0, "b"), (6.0, 10.0, "a")]
    g = truth(10.0, talk, exchange=[(0.0, 6.0, ["a", "b"])])
    ping_pong = track(
        10.0,
        [
            (0.0, 1.5, ON_A, "speaker"),
            (1.5, 3.0, ON_B, "speaker"),
            (3.0, 4.5, ON_A, "speaker"),
            (4.5, 6.0, ON_B, "speaker"),
        ],
        cuts=(1.5, 3.0, 4.5, 6.0),
    )
    s = score(ping_pong, g)
    assert s.exchange_s == pytest.approx(6.0)
    assert s.exchange_cuts == 3 and s.exchange_cuts_per_min == pytest.approx(30.0)  # the cut at 6.0 s is after it
    assert s.exchange_both_frac == 0.0
    both = score(track(10.0, [(0.0, 3.0, ON_A, "speaker"), (3.0, 10.0, WIDE, "group")], cuts=(3.0,)), g)
    assert both.exchange_cuts_per_min == pytest.approx(10.0) and both.exchange_both_frac == pytest.approx(0.5)
    assert "cuts per minute in A-B-A-B exchanges" in format_table(s)


def test_pooled_scores_add_up() -> None:
    g = truth(8.0, [(0.0, 4.0, "a"), (4.0, 8.0, "b")], exchange=[(0.0, 8.0, ["a", "b"])])
    s = score(track(8.0, [(1.0, 4.5, ON_A, "speaker"), (4.5, 8.0, ON_B, "speaker")], cuts=(1.0, 4.5)), g)
    p = pooled([s, s])
    assert p.speech_s == pytest.approx(2 * s.speech_s) and p.exchange_cuts == 2 * s.exchange_cuts
    assert p.latencies_s == s.latencies_s * 2
    assert p.exchange_cuts_per_min == pytest.approx(s.exchange_cuts_per_min)


def test_cuts_per_minute_over_the_track() -> None:
    g = truth(6.0, [(0.0, 6.0, "a")])
    s = score(track(6.0, [(0.0, 3.0, ON_A, "speaker"), (3.0, 6.0, ON_B, "speaker")], cuts=(0.0, 3.0, 4.0)), g)
    assert s.cuts == 2 and s.track_s == pytest.approx(6.0) and s.cuts_per_min == pytest.approx(20.0)
