"""How well a track frames the talkers, against the simulated room's ground truth.

A talker counts as *framed* in a frame when the shot is a speaker shot, the talker's whole face is inside
the crop, and the talker is the person nearest the crop's centre. *Visible* only asks that the face be
inside the crop (a group shot shows everyone). The *switch latency* of a turn is the time from the moment
a new talker starts to the first frame that frames them; a turn that ends before that counts as missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Score:
    speech_s: float
    framed_s: float
    visible_s: float
    turns: int
    missed_turns: int
    latencies_s: tuple[float, ...]

    @property
    def framed_frac(self) -> float:
        return self.framed_s / self.speech_s if self.speech_s else 0.0

    @property
    def visible_frac(self) -> float:
        return self.visible_s / self.speech_s if self.speech_s else 0.0

    def to_json(self) -> dict[str, Any]:
        lat = np.array(self.latencies_s) if self.latencies_s else np.array([np.nan])
        return {
            "speech_s": round(self.speech_s, 2),
            "framed_fraction": round(self.framed_frac, 4),
            "visible_fraction": round(self.visible_frac, 4),
            "turns": self.turns,
            "missed_turns": self.missed_turns,
            "switch_latency_median_s": None if np.isnan(lat).all() else round(float(np.median(lat)), 3),
            "switch_latency_p90_s": None if np.isnan(lat).all() else round(float(np.percentile(lat, 90)), 3),
        }


def _inside(face: list[float], crop: list[float]) -> bool:
    fx, fy, fw, fh = face
    x, y, w, h = crop
    return x <= fx and fy >= y and fx + fw <= x + w and fy + fh <= y + h


def is_framed(talker: str, people: dict[str, list[float]], crop: list[float], mode: str) -> bool:
    """The talker's face is inside a speaker shot and nearest its centre."""
    if mode != "speaker" or talker not in people or not _inside(people[talker], crop):
        return False
    cx = crop[0] + crop[2] / 2

    def off(box: list[float]) -> float:
        return abs(box[0] + box[2] / 2 - cx)

    return all(off(people[talker]) <= off(b) for k, b in people.items() if k != talker)


@dataclass(frozen=True)
class _TrackRow:
    t: float
    crop: list[float]
    mode: str


@dataclass(frozen=True)
class _TruthRow:
    t: float
    people: dict[str, list[float]]
    talkers: list[str]


def _checked(rows: Iterable[Any], what: str, make: Any) -> list[Any]:
    out = []
    for n, r in enumerate(rows, 1):
        try:
            out.append(make(r))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"{what} line {n}: not a {what} record ({type(e).__name__}: {e})") from None
    return sorted(out, key=lambda r: r.t)


def _track_row(r: dict[str, Any]) -> _TrackRow:
    crop = [float(v) for v in r["crop"]]
    if len(crop) != 4:
        raise ValueError("crop must be [x, y, w, h]")
    return _TrackRow(float(r["t"]), crop, str(r.get("mode", "speaker")))


def _truth_row(r: dict[str, Any]) -> _TruthRow:
    people = {str(p["id"]): [float(v) for v in p["box"]] for p in r["people"]}
    return _TruthRow(float(r["t"]), people, [str(k) for k in r["talkers"]])


def score(track: Iterable[dict[str, Any]], truth: Iterable[dict[str, Any]]) -> Score:
    """Score track lines against truth lines; both are matched by time (nearest truth frame).

    Raises ValueError naming the first line that is not a track (``t``, ``crop``) or truth (``t``,
    ``people``, ``talkers``) record."""
    truth_rows: list[_TruthRow] = _checked(truth, "truth", _truth_row)
    if not truth_rows:
        raise ValueError("the ground truth is empty")
    tt = np.array([r.t for r in truth_rows])
    rows: list[_TrackRow] = _checked(track, "track", _track_row)
    if not rows:
        raise ValueError("the track is empty")
    speech = framed = visible = 0.0
    turn_starts: list[tuple[float, str]] = []
    current: str | None = None
    evaluated: list[tuple[float, list[str], set[str]]] = []
    for i, r in enumerate(rows):
        dt = (rows[i + 1].t - r.t) if i + 1 < len(rows) else (r.t - rows[i - 1].t if i else 0.0)
        g = truth_rows[int(np.argmin(np.abs(tt - r.t)))]
        people, talkers = g.people, g.talkers
        ok = {k for k in talkers if is_framed(k, people, r.crop, r.mode)}
        if talkers:
            speech += dt
            framed += dt if ok else 0.0
            visible += dt if any(_inside(people[k], r.crop) for k in talkers if k in people) else 0.0
            if len(talkers) == 1 and talkers[0] != current:
                current = talkers[0]
                turn_starts.append((r.t, current))
        evaluated.append((r.t, talkers, ok))
    latencies, missed = [], 0
    for t0, who in turn_starts:
        hit = None
        for t, talkers, ok in evaluated:
            if t < t0:
                continue
            if who in ok:
                hit = t - t0
                break
            if who not in talkers and any(k != who for k in talkers):
                break  # someone else took over before this talker was framed
        if hit is None:
            missed += 1
        else:
            latencies.append(hit)
    return Score(speech, framed, visible, len(turn_starts), missed, tuple(latencies))


def format_table(s: Score) -> str:
    j = s.to_json()
    rows = [
        ("speech time", f"{j['speech_s']:.1f} s"),
        ("framed (talker in a speaker shot)", f"{100 * s.framed_frac:.1f} %"),
        ("visible (talker anywhere in the shot)", f"{100 * s.visible_frac:.1f} %"),
        ("turns", str(s.turns)),
        ("turns never framed", str(s.missed_turns)),
        (
            "switch latency median",
            "-" if j["switch_latency_median_s"] is None else f"{j['switch_latency_median_s']:.2f} s",
        ),
        ("switch latency p90", "-" if j["switch_latency_p90_s"] is None else f"{j['switch_latency_p90_s']:.2f} s"),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)
