"""How well a track frames the talkers, against the simulated room's ground truth.

A talker counts as *framed* in a frame when the shot is a speaker shot, the talker's whole face is inside
the crop, and the talker is the person nearest the crop's centre. *Visible* only asks that the face be
inside the crop (a group shot shows everyone). The *switch latency* of a turn is the time from the moment
a new talker starts to the first frame that frames them; a turn that ends before that counts as missed.

The director's figures (issue 12) also read, when the truth has them, ``prints`` (faces that never talk: a
photo on the wall), ``exchange`` (the two ids of an A-B-A-B exchange running at that time) and ``farend``
(far-end speech from a loudspeaker):

- *framed after grace*: the share of speech time, counted from ``grace_s`` (2 s) after the talker took the
  floor (a talker takes it when they are the only one talking and were not holding it), that is framed;
- *faceless*: seconds of shots that show no person's face (its centre) while people are in the room;
- *far-end moves*: seconds of far-end-only speech (no local talker: a cut to a local talker over the far end
  is right) in which the crop changes;
- *print close*: seconds in which a print is the subject of a speaker shot (inside it, nearest its centre);
- *cuts per minute*: ``"cut": true`` lines (after the first) per minute of track;
- *exchanges*: their length, the cuts (``"cut": true`` in the track) during them, and the seconds with both
  talkers' faces inside the crop.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
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
    grace_speech_s: float = 0.0
    grace_framed_s: float = 0.0
    people_s: float = 0.0
    faceless_s: float = 0.0
    farend_s: float = 0.0
    farend_moves_s: float = 0.0
    print_close_s: float = 0.0
    exchange_s: float = 0.0
    exchange_cuts: int = 0
    exchange_both_s: float = 0.0
    track_s: float = 0.0
    cuts: int = 0

    @property
    def cuts_per_min(self) -> float:
        return 60.0 * self.cuts / self.track_s if self.track_s else 0.0

    @property
    def framed_after_grace_frac(self) -> float:
        return self.grace_framed_s / self.grace_speech_s if self.grace_speech_s else 0.0

    @property
    def exchange_cuts_per_min(self) -> float:
        return 60.0 * self.exchange_cuts / self.exchange_s if self.exchange_s else 0.0

    @property
    def exchange_both_frac(self) -> float:
        return self.exchange_both_s / self.exchange_s if self.exchange_s else 0.0

    def latency_percentile(self, q: float) -> float:
        """The ``q``-th percentile of the switch latencies (NaN when no turn was framed)."""
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

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
            "switch_latency_p95_s": None if np.isnan(lat).all() else round(float(np.percentile(lat, 95)), 3),
            "framed_after_grace_fraction": round(self.framed_after_grace_frac, 4),
            "faceless_s": round(self.faceless_s, 2),
            "farend_s": round(self.farend_s, 2),
            "farend_moves_s": round(self.farend_moves_s, 2),
            "print_close_s": round(self.print_close_s, 2),
            "exchange_s": round(self.exchange_s, 2),
            "exchange_cuts_per_min": round(self.exchange_cuts_per_min, 2),
            "exchange_both_fraction": round(self.exchange_both_frac, 4),
            "cuts_per_min": round(self.cuts_per_min, 2),
        }


def pooled(scores: Iterable[Score]) -> Score:
    """Several recordings' scores as one: times, counts and latencies added up."""
    items = list(scores)
    fields = [f.name for f in dataclasses.fields(Score)]
    total: dict[str, Any] = {k: 0 for k in fields}
    total["latencies_s"] = ()
    for s in items:
        for k in fields:
            total[k] = total[k] + getattr(s, k)
    return Score(**total)


def _inside(face: list[float], crop: list[float]) -> bool:
    fx, fy, fw, fh = face
    x, y, w, h = crop
    return x <= fx and fy >= y and fx + fw <= x + w and fy + fh <= y + h


def _centre_inside(face: list[float], crop: list[float]) -> bool:
    fx, fy, fw, fh = face
    x, y, w, h = crop
    return x <= fx + fw / 2 <= x + w and y <= fy + fh / 2 <= y + h


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
    cut: bool = False


@dataclass(frozen=True)
class _TruthRow:
    t: float
    people: dict[str, list[float]]
    talkers: list[str]
    prints: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    exchange: tuple[str, ...] = ()
    farend: bool = False


class _Bad(ValueError):
    """A record of the right shape with a wrong value; the message says which and why."""


_COMPONENTS = ("x", "y", "w", "h")
_PLAIN = {float, int}  # exactly these types (a bool is an int, but not a number here)


def _show(v: Any) -> str:
    """``v`` for a message: JSON's spelling of a bool, a short repr of anything else."""
    if isinstance(v, bool):
        return "true" if v else "false"
    try:
        text = repr(v)
    except ValueError:  # an int with more digits than Python will print
        return f"a {type(v).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _number(v: Any, what: str) -> float:
    """``v`` as a float: a finite number (not a bool, a string, NaN, an infinity or an integer too large for a
    float)."""
    if type(v) is float and v - v == 0.0:  # the common case, quickly (NaN and the infinities fail it)
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _Bad(f"{what} must be a number, got {_show(v)}")
    try:
        x = float(v)
    except OverflowError:
        raise _Bad(f"{what} must be a finite number, got an integer too large for a float") from None
    if not math.isfinite(x):
        raise _Bad(f"{what} must be a finite number, got {_show(v)}")
    return x


def _box(v: Any, what: str) -> list[float]:
    """``v`` as a box ``[x, y, w, h]``: a list of 4 finite numbers."""
    if type(v) is list and len(v) == 4:  # the common case, quickly; anything else is looked at below
        x, y, w, h = v
        if {type(x), type(y), type(w), type(h)} <= _PLAIN:
            try:
                box = [float(x), float(y), float(w), float(h)]
            except OverflowError:
                pass
            else:
                if math.isfinite(box[0] + box[1] + box[2] + box[3]):
                    return box
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        raise _Bad(f"{what} must be [x, y, w, h], a list of 4 numbers, got {_show(v)}")
    out = []
    for x, c in zip(v, _COMPONENTS, strict=True):
        try:
            out.append(_number(x, c))
        except _Bad as e:
            raise _Bad(f"{what} {e}") from None
    return out


def _face(p: dict[str, Any], kind: str) -> list[float]:
    """The face box of a ``people`` or ``prints`` entry ``{"id", "box"}``."""
    try:
        return _box(p["box"], "box")
    except _Bad as e:
        raise _Bad(f"{kind} {_show(p['id'])}: {e}") from None


def _ids(v: Any, what: str) -> list[str]:
    """``v`` as a list of person ids: a JSON list of strings (a string is not read as its letters)."""
    if not isinstance(v, (list, tuple)) or not all(isinstance(k, str) for k in v):
        raise _Bad(f"{what} must be a list of person ids (strings), got {_show(v)}")
    return list(v)


def _line(rows: Iterable[Any], n: int) -> int:
    """The line of the ``n``-th row (from 1): its line in the file when the rows say (``drivers.files.JsonLines``
    skips blank lines), else ``n``."""
    lines = getattr(rows, "lines", None)
    return int(lines[n - 1]) if isinstance(lines, list) and len(lines) >= n else n


def _parsed(rows: Iterable[Any], what: str, make: Any) -> list[Any]:
    """Each row made into a record, in the order given; a ValueError names the first row that is not one."""
    out = []
    for n, r in enumerate(rows, 1):
        try:
            out.append(make(r))
        except _Bad as e:
            raise ValueError(f"{what} line {_line(rows, n)}: {e}") from None
        except (KeyError, TypeError, ValueError, IndexError) as e:
            reason = f"not a {what} record ({type(e).__name__}: {e})"
            raise ValueError(f"{what} line {_line(rows, n)}: {reason}") from None
    return out


def _checked(rows: Iterable[Any], what: str, make: Any) -> list[Any]:
    return sorted(_parsed(rows, what, make), key=lambda r: r.t)


def _track_row(r: dict[str, Any]) -> _TrackRow:
    t = _number(r["t"], "t")
    crop = _box(r["crop"], "crop")
    if crop[2] <= 0 or crop[3] <= 0:
        raise _Bad(f"crop must be [x, y, w, h] with a positive width and height, got {_show(r['crop'])}")
    return _TrackRow(t, crop, str(r.get("mode", "speaker")), bool(r.get("cut", False)))


def _truth_row(r: dict[str, Any]) -> _TruthRow:
    t = _number(r["t"], "t")
    people = {str(p["id"]): _face(p, "person") for p in r["people"]}
    talkers = _ids(r["talkers"], "talkers")
    prints = {str(p["id"]): _face(p, "print") for p in r.get("prints", ())}
    exchange = tuple(_ids(r.get("exchange") or [], "exchange"))
    return _TruthRow(t, people, talkers, prints, exchange, bool(r.get("farend")))


def _span(rows: list[Any], what: str) -> tuple[float, float]:
    """The first and last time of time-sorted rows; a ValueError when they are the same."""
    a, b = rows[0].t, rows[-1].t
    if b <= a:
        lines = "its only line is" if len(rows) == 1 else f"all its {len(rows)} lines are"
        raise ValueError(f"the {what} spans no time: {lines} at t = {a:.10g} s")
    return a, b


def score(track: Iterable[dict[str, Any]], truth: Iterable[dict[str, Any]], grace_s: float = 2.0) -> Score:
    """Score track lines against truth lines; both are matched by time (nearest truth frame).

    Raises ValueError naming the first line that is not a track (``t``, ``crop``) or truth (``t``,
    ``people``, ``talkers``) record: ``t`` a finite number (not a bool), ``crop`` ``[x, y, w, h]`` of finite
    numbers with a positive width and height, each face ``box`` 4 finite numbers, ``talkers`` (and
    ``exchange``) a list of person ids (strings). A talker need not have a face box on every line (a
    latecomer not in the room yet has none) but must be among the ``people`` of some truth line. Lines may
    come in any order (they are sorted by ``t``). Also refused: a track or truth whose lines are all at one
    time, and a track and truth whose time spans do not overlap (a shifted or wrong file)."""
    truth_rows: list[_TruthRow] = _parsed(truth, "truth", _truth_row)
    if not truth_rows:
        raise ValueError("the ground truth is empty")
    # a talker may lack a face box on a line (not in the room yet, say) but must be somebody of the room
    known = {k for g in truth_rows for k in g.people}
    for n, g in enumerate(truth_rows, 1):
        for k in g.talkers:
            if k not in known:
                raise ValueError(
                    f"truth line {_line(truth, n)}: talker {k!r} is not among the people of any truth line"
                )
    truth_rows.sort(key=lambda g: g.t)
    tt = np.array([r.t for r in truth_rows])
    rows: list[_TrackRow] = _checked(track, "track", _track_row)
    if not rows:
        raise ValueError("the track is empty")
    truth_a, truth_b = _span(truth_rows, "ground truth")
    track_a, track_b = _span(rows, "track")
    if min(track_b, truth_b) <= max(track_a, truth_a):
        raise ValueError(
            f"the track ({track_a:.10g} to {track_b:.10g} s) and the ground truth ({truth_a:.10g} to {truth_b:.10g} s)"
            " do not overlap in time"
        )
    speech = framed = visible = 0.0
    extra = dict.fromkeys(
        (
            "grace_speech_s",
            "grace_framed_s",
            "people_s",
            "faceless_s",
            "farend_s",
            "farend_moves_s",
            "print_close_s",
            "exchange_s",
            "exchange_both_s",
            "track_s",
        ),
        0.0,
    )
    exchange_cuts = cuts = 0
    turn_starts: list[tuple[float, str]] = []
    current: str | None = None
    since = -np.inf
    evaluated: list[tuple[float, list[str], set[str]]] = []
    for i, r in enumerate(rows):
        dt = (rows[i + 1].t - r.t) if i + 1 < len(rows) else (r.t - rows[i - 1].t if i else 0.0)
        g = truth_rows[int(np.argmin(np.abs(tt - r.t)))]
        people, talkers = g.people, g.talkers
        ok = {k for k in talkers if is_framed(k, people, r.crop, r.mode)}
        extra["track_s"] += dt
        cuts += int(r.cut and i > 0)  # the first line is where the track starts, not a cut
        if talkers:
            speech += dt
            framed += dt if ok else 0.0
            visible += dt if any(_inside(people[k], r.crop) for k in talkers if k in people) else 0.0
            if len(talkers) == 1 and talkers[0] != current:
                current, since = talkers[0], r.t
                turn_starts.append((r.t, current))
            if current in talkers and r.t - since >= grace_s - 1e-9:
                extra["grace_speech_s"] += dt
                extra["grace_framed_s"] += dt if ok else 0.0
        if people:
            extra["people_s"] += dt
            if not any(_centre_inside(b, r.crop) for b in people.values()):
                extra["faceless_s"] += dt
        if g.farend and not talkers:
            extra["farend_s"] += dt
            if i and rows[i - 1].crop != r.crop:
                extra["farend_moves_s"] += rows[i].t - rows[i - 1].t
        if g.prints:
            everyone = {**people, **g.prints}
            if any(is_framed(k, everyone, r.crop, r.mode) for k in g.prints):
                extra["print_close_s"] += dt
        if len(g.exchange) == 2:
            extra["exchange_s"] += dt
            exchange_cuts += int(r.cut)
            if all(k in people and _inside(people[k], r.crop) for k in g.exchange):
                extra["exchange_both_s"] += dt
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
    return Score(
        speech,
        framed,
        visible,
        len(turn_starts),
        missed,
        tuple(latencies),
        exchange_cuts=exchange_cuts,
        cuts=cuts,
        **extra,
    )


def format_table(s: Score, grace_s: float = 2.0) -> str:
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
        ("switch latency p95", "-" if j["switch_latency_p95_s"] is None else f"{j['switch_latency_p95_s']:.2f} s"),
        (f"framed after a {grace_s:g} s grace", f"{100 * s.framed_after_grace_frac:.1f} %"),
        ("no face in the shot, people present", f"{s.faceless_s:.1f} s"),
        ("cuts per minute", f"{s.cuts_per_min:.1f}"),
    ]
    if s.farend_s:
        rows.append(("camera moves during far-end speech", f"{s.farend_moves_s:.1f} s of {s.farend_s:.1f} s"))
    rows.append(("a face print as the subject of a close shot", f"{s.print_close_s:.1f} s"))
    if s.exchange_s:
        rows.append(("cuts per minute in A-B-A-B exchanges", f"{s.exchange_cuts_per_min:.1f}"))
        rows.append(("both exchange talkers in the picture", f"{100 * s.exchange_both_frac:.1f} %"))
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)
