"""The scoring of tracks against ground truth: framed time, visible time, switch latency, missed turns."""

from __future__ import annotations

import math
import re
from typing import Any

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


# ---------------------------------------------------------------------------------------------------------
# what is refused: each a traceback or a meaningless score before


def meeting() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A track and a truth with turns, a print, an exchange, far-end speech and cuts; the track's lines come
    last to first (they are sorted by time)."""
    g = truth([(0.5, 3.0, "a"), (3.0, 6.0, "b"), (6.5, 8.0, "a")], 8.0)
    for r in g[20:60]:
        r["exchange"] = ["a", "b"]
    for r in g[60:70]:
        r["farend"] = True
    for r in g:
        r["prints"] = [{"id": "print", "box": [1500, 100, 50, 50]}]
    tr = track(
        [(1.0, 3.2, ON_A, "speaker"), (3.2, 6.2, ON_B, "speaker"), (6.2, 6.6, [1300, 0, 400, 225], "speaker")], 8.0
    )
    for i in (10, 32, 62, 66):
        tr[i]["cut"] = True
    tr.reverse()
    return tr, g


def test_a_valid_track_scores_as_its_meeting_says() -> None:
    """The checks leave a valid meeting's score as its turns make it, whatever the order of the lines."""
    tr, g = meeting()
    s = score(tr, g)
    assert s == score(list(reversed(tr)), g)  # lines last to first or in time order: the same score
    assert s.speech_s == pytest.approx(2.5 + 3.0 + 1.5)  # a 0.5-3.0, b 3.0-6.0, a 6.5-8.0
    assert s.framed_s == pytest.approx(2.0 + 2.8)  # a from 1.0, b from 3.2; a's last turn never
    assert s.turns == 3 and s.missed_turns == 1
    assert s.latencies_s == pytest.approx((0.5, 0.2))
    assert s.farend_s == pytest.approx(0.5)  # the far end alone 6.0-6.5 (a talks over it from 6.5)
    assert s.cuts == 4 and s.exchange_cuts == 1  # the cut at 3.2 s falls in the exchange (2.0-6.0 s)


def with_line(rows: list[dict[str, Any]], i: int, **change: Any) -> list[dict[str, Any]]:
    out = [dict(r) for r in rows]
    out[i].update(change)
    return out


HUGE = 10**400  # what json.loads makes of a 401-digit integer


@pytest.mark.parametrize(
    ("t", "problem"),
    [
        (HUGE, "t must be a finite number, got an integer too large for a float"),
        (True, "t must be a number, got true"),
        (math.nan, "t must be a finite number, got nan"),
        (-math.inf, "t must be a finite number, got -inf"),
        ("0.3", "t must be a number, got '0.3'"),
    ],
    ids=["huge-int", "bool", "nan", "inf", "string"],
)
def test_a_time_that_is_not_a_finite_number_is_refused(t: Any, problem: str) -> None:
    tr, g = track([], 2.0), truth([(0.0, 2.0, "a")], 2.0)
    with pytest.raises(ValueError, match=rf"^track line 4: {re.escape(problem)}$"):
        score(with_line(tr, 3, t=t), g)
    with pytest.raises(ValueError, match=rf"^truth line 4: {re.escape(problem)}$"):
        score(tr, with_line(g, 3, t=t))


@pytest.mark.parametrize("talkers", ["ann", "a", [1], [["a"]], None])
def test_talkers_must_be_a_list_of_ids(talkers: Any) -> None:
    g = with_line(truth([(0.0, 2.0, "a")], 2.0), 3, talkers=talkers)
    with pytest.raises(ValueError, match=r"^truth line 4: talkers must be a list of person ids \(strings\), got "):
        score(track([], 2.0), g)


def test_an_exchange_must_be_a_list_of_ids() -> None:
    g = with_line(truth([(0.0, 2.0, "a")], 2.0), 3, exchange="ab")
    with pytest.raises(ValueError, match=r"^truth line 4: exchange must be a list of person ids \(strings\), got 'ab'"):
        score(track([], 2.0), g)


@pytest.mark.parametrize(
    ("crop", "problem"),
    [
        ("1234", "crop must be [x, y, w, h], a list of 4 numbers, got '1234'"),
        ([0, 0, 400], "crop must be [x, y, w, h], a list of 4 numbers, got [0, 0, 400]"),
        ([0, 0, -400, 225], "crop must be [x, y, w, h] with a positive width and height, got [0, 0, -400, 225]"),
        ([0, 0, 400, 0], "crop must be [x, y, w, h] with a positive width and height, got [0, 0, 400, 0]"),
        ([0, math.nan, 400, 225], "crop y must be a finite number, got nan"),
        ([0, 0, math.inf, 225], "crop w must be a finite number, got inf"),
        ([0, 0, True, 225], "crop w must be a number, got true"),
        ([0, "0", 400, 225], "crop y must be a number, got '0'"),
        ([HUGE, 0, 400, 225], "crop x must be a finite number, got an integer too large for a float"),
    ],
)
def test_a_crop_that_is_not_a_box_is_refused(crop: Any, problem: str) -> None:
    tr = with_line(track([], 2.0), 3, crop=crop)
    with pytest.raises(ValueError, match=rf"^track line 4: {re.escape(problem)}$"):
        score(tr, truth([(0.0, 2.0, "a")], 2.0))


@pytest.mark.parametrize(
    ("box", "problem"),
    [
        ([100, 100, math.nan, 50], "person 'a': box w must be a finite number, got nan"),
        ([100, 100, 50], "person 'a': box must be [x, y, w, h], a list of 4 numbers, got [100, 100, 50]"),
        ("1234", "person 'a': box must be [x, y, w, h], a list of 4 numbers, got '1234'"),
        ([100, False, 50, 50], "person 'a': box y must be a number, got false"),
    ],
)
def test_a_face_box_that_is_not_4_finite_numbers_is_refused(box: Any, problem: str) -> None:
    g = with_line(truth([(0.0, 2.0, "a")], 2.0), 3, people=[{"id": "a", "box": box}, PEOPLE[1]])
    with pytest.raises(ValueError, match=rf"^truth line 4: {re.escape(problem)}$"):
        score(track([], 2.0), g)
    prints = with_line(truth([], 2.0), 3, prints=[{"id": "p", "box": box}])
    of_print = problem.replace("person 'a'", "print 'p'")
    with pytest.raises(ValueError, match=rf"^truth line 4: {re.escape(of_print)}$"):
        score(track([], 2.0), prints)


def test_a_track_and_truth_that_do_not_overlap_are_refused() -> None:
    g = truth([(0.0, 8.0, "a")], 8.0)
    late = [dict(r, t=r["t"] + 1000) for r in track([(0.0, 8.0, ON_A, "speaker")], 8.0)]
    with pytest.raises(ValueError, match=r"^the track \(1000 to 1007.9 s\) and the ground truth \(0 to 7.9 s\) do not"):
        score(late, g)
    early = [dict(r, t=r["t"] - 7.9) for r in track([(0.0, 8.0, ON_A, "speaker")], 8.0)]
    with pytest.raises(ValueError, match=r"do not overlap in time"):  # touching at 0 s is no overlap
        score(early, g)
    assert score([dict(r, t=r["t"] - 996) for r in late], g).speech_s > 0  # a partial overlap is scored


def test_a_track_or_truth_at_a_single_time_is_refused() -> None:
    g = truth([(0.0, 8.0, "a")], 8.0)
    with pytest.raises(ValueError, match=r"^the track spans no time: its only line is at t = 3 s$"):
        score([{"t": 3.0, "crop": ON_A, "mode": "speaker"}], g)
    stuck = [dict(r, t=2.5) for r in track([], 8.0)]
    with pytest.raises(ValueError, match=r"^the track spans no time: all its 80 lines are at t = 2.5 s$"):
        score(stuck, g)
    with pytest.raises(ValueError, match=r"^the ground truth spans no time: its only line is at t = 0 s$"):
        score(track([], 8.0), g[:1])


def test_a_talker_who_is_nobody_in_the_room_is_refused() -> None:
    g = with_line(truth([(0.0, 2.0, "a")], 2.0), 5, talkers=["a", "zed"])
    with pytest.raises(ValueError, match=r"^truth line 6: talker 'zed' is not among the people of any truth line$"):
        score(track([], 2.0), g)


def test_a_talker_without_a_face_box_on_some_lines_is_scored() -> None:
    # a latecomer talks as they come in: in the room's people on later lines, not yet on these
    g = truth([(0.0, 4.0, "b")], 4.0)
    for r in g[:10]:
        r["people"] = PEOPLE[:1]
    s = score(track([(0.0, 4.0, ON_B, "speaker")], 4.0), g)
    assert s.speech_s == pytest.approx(4.0) and s.framed_s == pytest.approx(3.0)


def test_a_bad_record_is_named_by_its_line_in_the_file(tmp_path: Any) -> None:
    """Blank lines are skipped when a JSON-lines file is read; an error still names the record's line in the file
    (before: its place among the records, three lines off here)."""
    import json

    from drivers.files import read_jsonl

    rows = truth([(0.0, 2.0, "a")], 2.0)
    rows[4] = {**rows[4], "talkers": ["a", "zed"]}
    (tmp_path / "truth.jsonl").write_text(
        "\n\n" + "\n".join(json.dumps(r) for r in rows[:4]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[4:]) + "\n"
    )
    with pytest.raises(ValueError, match=r"^truth line 8: talker 'zed' is not among the people of any truth line$"):
        score(track([], 2.0), read_jsonl(tmp_path / "truth.jsonl"))
    tr = track([], 2.0)
    tr[1] = {"t": 0.1, "crop": [0, 0, -5, 10]}
    (tmp_path / "track.jsonl").write_text(
        "\n".join(json.dumps(r) for r in tr[:1]) + "\n\n\n" + "\n".join(json.dumps(r) for r in tr[1:])
    )
    with pytest.raises(ValueError, match=r"^track line 4: crop must be \[x, y, w, h\] with a positive width"):
        score(read_jsonl(tmp_path / "track.jsonl"), truth([(0.0, 2.0, "a")], 2.0))
