"""Generated meetings for the director's benchmark: people around a table taking turns, with the cases a
director gets wrong.

``make_meeting(seed, duration_s)`` draws a meeting room (a table in front of the camera, 3-8 people around it)
and a conversation: turns of one to three sentences by a random next talker, with gaps and overlaps
(-0.6..0.8 s); A-B-A-B exchanges between neighbours (turns of 1.2-2.5 s, about one exchange a minute); the
**far end** of the meeting on a ceiling loudspeaker at the azimuth of a seated person (about one turn in five,
some of them over a local talker); a **face print** on the back wall (a photo: drawn without a body, never
moves, never talks); a **latecomer** who walks in from the door and sits down (and talks only once seated).
Everything follows from the seed. Mouths open with their owner's speech (the simulated room's picture).

The scenario format has no face prints and no entries, so :class:`MeetingRenderer` draws them on top of the
simulated room's :class:`~drivers.simroom.video.RoomRenderer` (the print and the latecomer are ordinary
``people`` of the scenario that the renderer treats specially); the far end is the scenario's
``[loudspeaker]``. :meth:`Meeting.truth_rows` gives the ground truth ``roombox score`` reads, with ``prints``
(face boxes of the prints), ``exchange`` (the two ids while an exchange runs) and ``farend`` (far-end speech
heard at the array: :attr:`Meeting.farend`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from drivers.simroom.faces import HeadPatch, head_patch
from drivers.simroom.scenario import Scenario, Vec3, parse_scenario
from drivers.simroom.video import FACE_WIDTH_M, SHOULDER_WIDTH_M, RoomRenderer, _Sprite

GENERATOR_VERSION = 5  # bump when a meeting drawn from a seed changes
PICTURE_VERSION = 2  # bump when the picture of the same meeting changes (2: mouths move with speech)
PRINT_WIDTH_M = 0.24  # a poster-sized face
WALK_S = 3.5  # from the door to the seat
SIT_S = 0.6  # the last part of the walk: sitting down
STANDING_HEAD_M = 1.65
EXCHANGE_TURN_S = (1.2, 2.5)
FAREND_SHARE = 0.2  # the chance that the far end takes the next turn
FAREND_VOICE = "en-gb+m4"
FAREND_OUT_M = 2.5  # the loudspeaker's distance from the camera along a seated person's azimuth

VOICES = (
    "en-us+f3",
    "en-us+m3",
    "en-gb+f2",
    "en-gb-scotland+m5",
    "en-us+f4",
    "en-gb+m2",
    "en-us+m7",
    "en-gb-x-rp+f1",
)
SHORT = (  # for exchanges: each 1.2-2.5 s at the speeds used
    "Yes, but which one?",
    "The second one, I think.",
    "Are you sure about that?",
    "Quite sure, I checked it twice.",
    "And the cost of it?",
    "About the same as last year.",
    "That seems too low to me.",
    "It includes the discount.",
    "Which discount do you mean?",
    "The one from the spring order.",
    "Fine, send me the numbers.",
    "I will, after the meeting.",
    "Did the supplier agree?",
    "Not yet, they want a week.",
    "A week is too long for us.",
    "Then we ask the other one.",
    "Can they deliver in time?",
    "They said so on Monday.",
    "Good. Who calls them?",
    "I can do that today.",
)
LONG = (
    "Let us start with the budget for the next quarter, since it affects everything else on the list.",
    "I looked at the numbers yesterday, and most of them seem fine to me.",
    "We are already over on travel, so we need to cut something before the summer.",
    "The cameras arrive next week, and we still need to test them in the big room.",
    "The schedule for the release has moved by two weeks because of the firmware.",
    "I talked to the customer on Friday. They are happy with the prototype so far.",
    "My concern is the support load once the new version is out in the field.",
    "We could hire a contractor for three months and see how it goes.",
    "The training material needs an update too, most of the screenshots are old.",
    "Let me summarise what we agreed so far, and then we can move on.",
    "I would rather wait for the test results before we promise any date.",
    "The room booking system was down again this morning, by the way.",
    "Could we keep the next meeting shorter? Half an hour should be enough.",
    "That is a good point. I had not thought about the holidays.",
    "I will write it down and send the notes around after lunch.",
    "Does anybody have questions about the new process?",
)


@dataclass(frozen=True)
class Entry:
    """A latecomer: outside the room until ``t_s``, then walks from the door to the seat in ``WALK_S``."""

    t_s: float
    door_m: Vec3  # where the head is when they come in (room coordinates)


@dataclass(frozen=True)
class Exchange:
    """An A-B-A-B exchange between ``a`` and ``b`` from ``start_s`` to ``end_s`` (speech times)."""

    a: str
    b: str
    start_s: float
    end_s: float
    turns: int


@dataclass(frozen=True)
class Meeting:
    """A generated meeting: the scenario (prints and latecomers are people of it) and what it holds."""

    seed: int
    scenario: Scenario
    prints: tuple[str, ...] = ()
    entries: dict[str, Entry] = field(default_factory=dict)
    exchanges: tuple[Exchange, ...] = ()
    farend: tuple[tuple[float, float], ...] = ()  # far-end speech spans (needs a loudspeaker in the scene)

    def key(self) -> str:
        """A hash of everything the meeting renders from (scenario, prints, entries)."""
        scenario = self.scenario.model_dump(mode="json")
        if scenario.get("loudspeaker") is None:
            scenario.pop("loudspeaker", None)  # a meeting without one keys as before the loudspeaker existed
        doc = {
            "v": GENERATOR_VERSION,
            "picture": PICTURE_VERSION,
            "scenario": scenario,
            "prints": self.prints,
            "entries": {k: [e.t_s, e.door_m] for k, e in self.entries.items()},
            "farend": self.farend,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]

    def present(self, pid: str, t: float) -> bool:
        e = self.entries.get(pid)
        return e is None or t >= e.t_s

    def talkers(self) -> list[str]:
        return [p.id for p in self.scenario.people if p.id not in self.prints]

    def truth_rows(
        self, renderer: MeetingRenderer, activity: dict[str, list[tuple[float, float]]], n_frames: int
    ) -> list[dict[str, Any]]:
        """One ground-truth line per video frame, as ``roombox render`` writes (``t``, ``talkers``,
        ``people``), plus ``prints``, ``exchange`` and ``farend``."""
        scn = self.scenario
        fps = scn.camera.fps
        cam = renderer.cam
        rows = []
        for k in range(n_frames):
            t = k / fps
            boxes = renderer.face_boxes(t)
            people, prints = [], []
            for p in scn.people:
                if p.id not in boxes:
                    continue
                box = [round(v, 1) for v in boxes[p.id]]
                if p.id in self.prints:
                    prints.append({"id": p.id, "box": box})
                else:
                    az = cam.azimuth_of_column(box[0] + box[2] / 2)
                    people.append({"id": p.id, "box": box, "azimuth_deg": round(az, 2)})
            talkers = [pid for pid, spans in activity.items() if any(a <= t < b for a, b in spans)]
            row: dict[str, Any] = {"t": round(t, 4), "talkers": talkers, "people": people, "prints": prints}
            ex = next((e for e in self.exchanges if e.start_s <= t < e.end_s), None)
            if ex is not None:
                row["exchange"] = [ex.a, ex.b]
            row["farend"] = any(a <= t < b for a, b in self.farend)
            rows.append(row)
        return rows


# ---------------------------------------------------------------------------------------------------------
# drawing the meeting


def speech_span(x: np.ndarray, rate: int) -> tuple[float, float]:
    """Where an utterance's speech starts and ends (s from its first sample)."""
    from drivers.simroom.audio import speech_intervals

    spans = speech_intervals(x, rate)
    return (spans[0][0], spans[-1][1]) if spans else (0.0, len(x) / rate)


@lru_cache(maxsize=256)
def _utterance_span(text: str, voice: str, speed: int, rate: int) -> tuple[float, float, float]:
    from drivers.simroom.assets import synthesize

    x = synthesize(text, voice, rate, speed)
    a, b = speech_span(x, rate)
    return a, b, len(x) / rate


def _seats(rng: np.random.Generator, n: int, w: float) -> list[tuple[float, float]]:
    """``n`` seats around a table in front of the camera (room x, y), in a random order. The back seats sit
    a little closer in, so that no head hides another from the camera (heads >= 6 deg apart)."""
    cx = w / 2
    rows = ((1.0, 1.6), (1.0, 2.5), (0.8, 3.4))  # (x offset, y) on each side
    slots = [(cx + side * dx, y) for dx, y in rows for side in (-1, 1)] + [(cx, 4.35)]
    if n > len(slots):
        slots.append((cx + 0.5 * (1 if rng.uniform() < 0.5 else -1), 4.3))
    order = rng.permutation(len(slots))[:n]
    return [
        (slots[i][0] + float(rng.uniform(-0.04, 0.04)), slots[i][1] + float(rng.uniform(-0.06, 0.06))) for i in order
    ]


def _neighbours(seats: dict[str, tuple[float, float]], a: str) -> list[str]:
    """The people seated next to ``a`` (same side of the table, or across the end), nearest first."""
    ax, ay = seats[a]
    others = sorted((math.hypot(x - ax, y - ay), pid) for pid, (x, y) in seats.items() if pid != a)
    return [pid for d, pid in others if d < 1.6] or [others[0][1]]


def make_meeting(
    seed: int,
    duration_s: float,
    n_people: int | None = None,
    width: int = 1920,
    height: int = 1080,
    fps: float = 15.0,
    positions: list[Vec3] | None = None,
    rt60_s: float = 0.45,
    sample_rate: int = 16000,
    face_print: bool = True,
    latecomer: bool = True,
    farend: bool = True,
) -> Meeting:
    """A meeting drawn from ``seed``: 3-8 people (or ``n_people``), ``duration_s`` of conversation with
    overlaps and A-B-A-B exchanges, the far end on a ceiling loudspeaker, a face print on the back wall and a
    latecomer (when asked for and the meeting is long enough). ``positions``: the mic array in the camera frame
    (the scenario's default otherwise). Synthesises the utterances (espeak-ng, cached) to place the turns."""
    if duration_s < 10.0:
        raise ValueError(f"a meeting needs at least 10 s, got {duration_s}")
    rng = np.random.default_rng([GENERATOR_VERSION, seed])
    n = n_people if n_people is not None else int(rng.integers(3, 9))
    if not 3 <= n <= 8:
        raise ValueError(f"a meeting has 3 to 8 people, got {n}")
    w, d, h = float(rng.uniform(6.0, 7.5)), float(rng.uniform(5.8, 7.0)), float(rng.uniform(2.7, 3.2))
    seats = _seats(rng, n, w)
    ids = [f"p{k}" for k in range(n)]
    voices = {pid: VOICES[(k + seed) % len(VOICES)] for k, pid in enumerate(ids)}
    speeds = {pid: int(rng.integers(150, 185)) for pid in ids}
    # lfw 0-99 are faces; 100-199 are the subset's non-face crops (scikit-image's lfw_subset)
    faces = [f"lfw:{int(i)}" for i in rng.choice(100, size=n + 1, replace=False)]
    seat_of = dict(zip(ids, seats, strict=True))

    late = ids[int(rng.integers(0, n))] if latecomer and duration_s >= 25.0 else None
    enter_s = float(rng.uniform(0.2, 0.35) * duration_s) if late else math.inf
    seated_s = enter_s + WALK_S + 1.0

    utter: dict[str, list[dict[str, Any]]] = {pid: [] for pid in ids}
    # the far end: drawn from its own stream, so that the people's draws stay those of a meeting without it
    fe_rng = np.random.default_rng([GENERATOR_VERSION, seed, 17])
    far_turns: list[dict[str, Any]] = []
    far_spans: list[tuple[float, float]] = []
    far_speed = 165
    exchanges: list[Exchange] = []
    end_by = duration_s - 0.8
    t = 0.5
    prev: str | None = None
    n_ex = max(1, round(duration_s / 60.0))
    # the first exchange early enough to fit in a short meeting, the others anywhere
    ex_at = sorted(float(rng.uniform(0.1, 0.85 if k else 0.4) * duration_s) for k in range(n_ex))

    def say(pid: str, text: str, start: float) -> float:
        """Place ``text`` by ``pid`` so that its speech starts at ``start``; returns when its speech ends."""
        a, b, _ = _utterance_span(text, voices[pid], speeds[pid], sample_rate)
        utter[pid].append({"start_s": round(max(0.0, start - a), 3), "text": text, "voice": voices[pid]})
        utter[pid][-1]["speed_wpm"] = speeds[pid]
        return start + (b - a)

    def available(t0: float) -> list[str]:
        return [p for p in ids if p != late or t0 >= seated_s]

    while t < end_by - 3.0:
        if ex_at and t >= ex_at[0]:
            ex_at.pop(0)
            cand = available(t)
            a = cand[int(rng.integers(0, len(cand)))]
            b = _neighbours({p: seat_of[p] for p in cand}, a)[0]
            turns = int(rng.integers(4, 9))
            start, last_end, done = t, t, 0
            for k in range(turns):
                who = a if k % 2 == 0 else b
                lo, hi = EXCHANGE_TURN_S
                fits = [
                    s
                    for s in SHORT
                    if lo <= (lambda sp: sp[1] - sp[0])(_utterance_span(s, voices[who], speeds[who], sample_rate)) <= hi
                ]
                text = (fits or list(SHORT))[int(rng.integers(0, len(fits or SHORT)))]
                end = say(who, text, t)
                if end > end_by:
                    utter[who].pop()
                    break
                last_end, done = end, done + 1
                t = end + float(rng.uniform(-0.15, 0.35))
            if done >= 2:
                exchanges.append(Exchange(a, b, round(start, 3), round(last_end, 3), done))
            prev = b
            t = last_end + float(rng.uniform(0.3, 0.9))
            continue
        if farend and prev is not None and prev != "farend" and fe_rng.uniform() < FAREND_SHARE:
            text = LONG[int(fe_rng.integers(0, len(LONG)))]
            lead, tail, _ = _utterance_span(text, FAREND_VOICE, far_speed, sample_rate)
            if t + (tail - lead) <= end_by:
                far_turns.append({"start_s": round(max(0.0, t - lead), 3), "text": text, "voice": FAREND_VOICE})
                far_turns[-1]["speed_wpm"] = far_speed
                far_spans.append((t, t + (tail - lead)))
                prev = "farend"
                t = t + (tail - lead) + float(fe_rng.uniform(-0.6, 0.8))  # sometimes over the next local talker
                continue
        cand = [p for p in available(t) if p != prev]
        who = cand[int(rng.integers(0, len(cand)))]
        if late is not None and t >= seated_s and not utter[late] and prev != late:
            who = late  # the latecomer talks once seated
        end = t
        for _ in range(int(rng.integers(1, 4))):
            text = LONG[int(rng.integers(0, len(LONG)))]
            e = say(who, text, end)
            if e > end_by:
                utter[who].pop()
                break
            end = e + float(rng.uniform(0.2, 0.5))
        if end == t:
            break
        prev = who
        t = end + float(rng.uniform(-0.6, 0.8))  # negative: the next talker starts before this one stops

    people: list[dict[str, Any]] = []
    for k, pid in enumerate(ids):
        people.append(
            {
                "id": pid,
                "seat_m": list(seat_of[pid]),
                "head_height_m": round(float(rng.uniform(1.15, 1.27)), 3),
                "face": faces[k],
                "shirt_rgb": [int(c) for c in rng.integers(30, 220, 3)],
                "utterances": utter[pid],
            }
        )
    prints: tuple[str, ...] = ()
    if face_print:
        # on the back wall beside the whiteboard, where no seated head hides it (6 deg clear of all of them)
        cam_x, cam_y = w / 2, 0.05
        heads = [math.degrees(math.atan2(x - cam_x, y - cam_y)) for x, y in seats]
        cands = [w / 2 + side * r for r in np.linspace(1.1, 2.2, 12) for side in (-1, 1)]
        cands = [x for x in cands if 0.4 < x < w - 1.5]  # clear of the door on the right of the back wall
        rng.shuffle(cands)
        clear = [x for x in cands if min(abs(math.degrees(math.atan2(x - cam_x, d - cam_y)) - a) for a in heads) >= 6]
        x = float((clear or cands)[0])
        people.append(
            {
                "id": "print",
                "seat_m": [round(x, 3), round(d - 0.22, 3)],
                "head_height_m": round(float(rng.uniform(1.5, 1.7)), 3),
                "face": faces[n],
                "shirt_rgb": [0, 0, 0],
                "utterances": [],
            }
        )
        prints = ("print",)
    doc: dict[str, Any] = {
        "duration_s": duration_s,
        "room": {"size_m": [w, d, h], "rt60_s": rt60_s, "noise_db": -60.0, "seed": seed % 100000},
        "camera": {"position_m": [w / 2, 0.05, 1.25], "hfov_deg": 90.0, "width": width, "height": height, "fps": fps},
        "people": people,
    }
    if positions is not None:
        doc["mic_array"] = {"sample_rate": sample_rate, "positions": [list(p) for p in positions]}
    else:
        doc["mic_array"] = {"sample_rate": sample_rate}
    if far_turns:
        # on the ceiling along a seated person's azimuth: the case a director gets wrong without the reference
        sx, sy = seats[int(fe_rng.integers(0, n))]
        cam_x, cam_y = w / 2, 0.05
        r = math.hypot(sx - cam_x, sy - cam_y)
        at = [cam_x + FAREND_OUT_M * (sx - cam_x) / r, cam_y + FAREND_OUT_M * (sy - cam_y) / r, h - 0.1]
        doc["loudspeaker"] = {"position_m": [round(v, 3) for v in at], "level_db": 0.0, "turns": far_turns}
    scn = parse_scenario(doc, f"meeting {seed}")
    heard: tuple[tuple[float, float], ...] = ()
    if scn.loudspeaker is not None:  # as heard at the array: the propagation time from the loudspeaker added
        from drivers.simroom.audio import SPEED_OF_SOUND

        centre = np.mean(np.array(scn.mic_positions_room()), axis=0)
        delay = math.dist(scn.loudspeaker.position_m, centre) / SPEED_OF_SOUND
        heard = tuple((round(a + delay, 3), round(b + delay, 3)) for a, b in far_spans)
    entries = {late: Entry(round(enter_s, 3), (w - 0.75, d - 0.35, STANDING_HEAD_M))} if late else {}
    return Meeting(seed, scn, prints, entries, tuple(exchanges), heard)


# ---------------------------------------------------------------------------------------------------------
# the picture


@lru_cache(maxsize=64)
def _patch(face: str, face_w: int) -> HeadPatch:
    return head_patch(face, face_w)


class MeetingRenderer(RoomRenderer):
    """The simulated room's picture with the meeting's face prints (a face on the wall: no body, no sway,
    a poster-sized face) and latecomers (absent, then walking in from the door, then seated)."""

    def __init__(self, meeting: Meeting) -> None:
        self.meeting = meeting
        super().__init__(meeting.scenario)
        f = self.cam.focal_px
        out = []
        for s in self._sprites:
            if s.person.id in meeting.prints:
                head = head_patch(s.person.face, max(4, round(f * PRINT_WIDTH_M / s.head_cam[2])))
                bx, by, bw, bh = head.face_box
                no_body = np.zeros((1, 1, 1), np.float32)
                s = replace(
                    s,
                    head=head,
                    anchor=(bx + bw / 2, by + bh / 2),
                    body_rgb=np.zeros((1, 1, 3), np.float32),
                    body_alpha=no_body,
                    sway=(0.0, 0.0, 0.0, 0.0),
                )
            out.append(s)
        self._sprites = out

    def _walking(self, s: _Sprite, t: float) -> tuple[Vec3, float] | None:
        """Where a latecomer's head is (camera frame) at ``t`` while walking in, and how upright (1 standing,
        0 seated); None when seated (or not a latecomer)."""
        e = self.meeting.entries.get(s.person.id)
        if e is None or t >= e.t_s + WALK_S:
            return None
        u = min(max((t - e.t_s) / (WALK_S - SIT_S), 0.0), 1.0)
        seat = self.scn.head_room(s.person)
        stand = (seat[0], seat[1] + 0.25, STANDING_HEAD_M)
        # along the back wall to the seat's side of the table, then down beside it
        side = 1.0 if seat[0] >= self.scn.camera.position_m[0] else -1.0
        turn = (seat[0] + side * 0.35, e.door_m[1], STANDING_HEAD_M)
        legs = [(e.door_m, turn), (turn, stand)]
        lengths = [math.dist(a, b) for a, b in legs]
        walked = u * sum(lengths)
        a, b = legs[0] if walked <= lengths[0] or lengths[1] == 0 else legs[1]
        f = walked / lengths[0] if (a, b) == legs[0] and lengths[0] else (walked - lengths[0]) / max(lengths[1], 1e-9)
        p = tuple(x + min(max(f, 0.0), 1.0) * (y - x) for x, y in zip(a, b, strict=True))
        up = 1.0
        if t > e.t_s + WALK_S - SIT_S:
            up = 1.0 - (t - (e.t_s + WALK_S - SIT_S)) / SIT_S
            p = tuple(b + up * (a - b) for a, b in zip(stand, seat, strict=True))
        return self.scn.to_camera(p), up  # type: ignore[arg-type]

    def _walking_head(self, s: _Sprite, head_cam: Vec3) -> tuple[HeadPatch, int, int]:
        x, y, z = head_cam
        head = _patch(s.person.face, max(4, round(self.cam.focal_px * FACE_WIDTH_M / z)))
        bx, by, bw, bh = head.face_box
        u, v = self.cam.project(x, y, z)
        return head, round(u - (bx + bw / 2)), round(v - (by + bh / 2))

    def face_boxes(self, t: float) -> dict[str, tuple[float, float, float, float]]:
        out = super().face_boxes(t)
        for s in self._sprites:
            pid = s.person.id
            if not self.meeting.present(pid, t):
                out.pop(pid, None)
                continue
            walking = self._walking(s, t)
            if walking is not None:
                head, x0, y0 = self._walking_head(s, walking[0])
                bx, by, bw, bh = head.face_box
                out[pid] = (x0 + bx, y0 + by, bw, bh)
        return out

    def render_frame(self, t: float) -> np.ndarray:
        frame = self.background.copy()
        layers: list[tuple[float, _Sprite, tuple[Vec3, float] | None]] = []
        for s in self._sprites:
            if not self.meeting.present(s.person.id, t):
                continue
            walking = self._walking(s, t)
            layers.append((walking[0][2] if walking else s.head_cam[2], s, walking))
        for _, s, walking in sorted(layers, key=lambda item: -item[0]):  # far to near
            if walking is None:
                self._blit(frame, s.body_rgb, s.body_alpha, *s.body_xy)
                x0, y0 = self._head_origin(s, t)
                self._blit(frame, s.head.rgb, s.head.alpha, x0, y0)
                bx, by, bw, bh = s.head.face_box
                self._draw_mouth(frame, (x0 + bx, y0 + by, bw, bh), self.mouth_open(s.person.id, t))
                continue
            (x, y, z), up = walking
            f = self.cam.focal_px
            sw = f * SHOULDER_WIDTH_M / z
            u, top = self.cam.project(x, y - 0.16, z)
            bottom = self.cam.project(x, y - 0.16 - 0.45 - 0.45 * up, z)[1]
            bw, bh = max(2, round(sw)), max(2, round(bottom - top))
            alpha = np.ones((bh, bw, 1), np.float32)
            rgb = np.broadcast_to(np.array(s.person.shirt_rgb, np.float32), (bh, bw, 3)).copy()
            self._blit(frame, rgb, alpha, round(u - bw / 2), round(top))
            head, x0, y0 = self._walking_head(s, (x, y, z))
            self._blit(frame, head.rgb, head.alpha, x0, y0)
            bx, by, bw, bh = head.face_box
            self._draw_mouth(frame, (x0 + bx, y0 + by, bw, bh), self.mouth_open(s.person.id, t))
        return frame


def write_truth(path: Path, rows: list[dict[str, Any]]) -> None:
    from common.atomic import write_atomic

    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
