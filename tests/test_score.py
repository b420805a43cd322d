"""The scoring of tracks against ground truth: framed time, visible time, switch latency, missed turns."""

from __future__ import annotations

import pytest

from appliance.score import score

PEOPLE = [{"id": "a", "box": [100, 100, 50, 50]}, {"id": "b", "box": [800, 100, 50, 50]}]
ON_A = [0, 0, 400, 225]
ON_B = [650, 0, 400, 225]
WIDE = [0, 0, 1920, 1080]


def truth(spans: list[tuple[float, float, str]], end: float, fps: float = 10.0) -> list[dict]:
    rows = []
    for i in range(int(end * fps)):
        t = i / fps
        rows.append({"t": t, "people": PEOPLE, "talkers": [w for s, e, w in spans if s <= t < e]})
    return rows


def track(spans: list[tuple[float, float, list[int], str]], end: float, fps: float = 10.0) -> list[dict]:
    out = []
    for i in range(int(end * fps)):
        t = i / fps
        crop, mode = next(((c, m) for s, e, c, m in spans if s <= t < e), (WIDE, "group"))
        out.append({"t": t, "crop": crop, "mode": mode})
    return out


def test_framed_visible_and_latency() -> None:
    g = truth([(0.0, 4.0, "a"), (4.0, 8.0, "b")], 8.0)
    tr = track([(1.0, 4.5, ON_A, "speaker"), (4.5, 8.0, ON_B, "speaker")], 8.0)
    s = score(tr, g)
    assert s.speech_s == pytest.approx(8.0)
    assert s.framed_s == pytest.approx(3.0 + 3.5)  # a from 1.0 to 4.0, b from 4.5 to 8.0
    assert s.visible_s == pytest.approx(4.0 + 3.5)  # the group shot shows a from 0 to 1 too
    assert s.turns == 2 and s.missed_turns == 0
    assert s.latencies_s == pytest.approx((1.0, 0.5))


def test_a_turn_never_framed_is_missed() -> None:
    g = truth([(0.0, 2.0, "a"), (2.0, 4.0, "b")], 4.0)
    tr = track([(0.0, 4.0, ON_A, "speaker")], 4.0)
    s = score(tr, g)
    assert s.missed_turns == 1 and s.latencies_s == pytest.approx((0.0,))
    assert s.framed_frac == pytest.approx(0.5)


def test_a_group_shot_is_visible_but_not_framed() -> None:
    g = truth([(0.0, 3.0, "a")], 3.0)
    s = score(track([], 3.0), g)
    assert s.framed_s == 0 and s.visible_frac == pytest.approx(1.0)


def test_empty_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="track is empty"):
        score([], truth([], 1.0))


def test_a_line_that_is_not_a_record_is_named() -> None:
    with pytest.raises(ValueError, match=r"truth line 2: not a truth record .*talkers"):
        score(track([], 1.0), [truth([], 1.0)[0], {"t": 0.1, "people": []}])
    with pytest.raises(ValueError, match=r"track line 1: not a track record"):
        score([[1, 2]], truth([], 1.0))  # type: ignore[list-item]
