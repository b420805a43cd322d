"""The director: decides whom to show and frames them the way a camera operator would.

Pure and deterministic: ``Director.step(faces, doas, now) -> Shot`` takes the newest faces (or None when
no new detection came), the DOA blocks that arrived since the last step and the current time; the faces go
through a :class:`~appliance.perception.tracking.FaceTracker`, and :meth:`Director.step_tracks` takes face
tracks directly. No clock, no I/O.

How it decides (every number is in ``[director]``, :class:`appliance.config.DirectorConfig`):
- Speech evidence is kept as a histogram over azimuth that forgets with time constant ``evidence_tau_s``;
  every speech block adds its duration (a Gaussian bump at its azimuth). Each direction within ``match_deg``
  of a person counts for the nearest person, so a person's evidence reads as "seconds of recent speech".
  Far-end blocks come as ``Doa(speech=False)`` and never count.
- Lips (``lips``): a small array's direction can be several degrees off in a reverberant room, and people at
  a table sit about ten degrees apart. When faces within ``lips_window_deg`` of a heard direction have moving
  lips (:mod:`appliance.perception.lips`, at least ``lips_min``), the speech goes to them, shared by how much
  their lips move, instead of to the heard direction. Lips never make speech: no sound, no evidence.
- Behind the camera (``behind = "mirror"``): the camera looks into the room from the front wall, so a
  direction heard behind its plane is taken as its mirror image in front. A small array beside the wall hears
  the wall's reflection, or confuses front and back, in a reverberant room; clamped at the picture's edge such
  a talker would be "outside the picture" and cost the close shot.
- A talker earns a cut when their evidence reaches what ``switch_after_s`` of continuous speech gives,
  beats the framed talker's evidence, and the current shot has been held ``min_hold_s`` (rule ``talker``).
- After ``silence_to_group_s`` without attributable speech the director shows the group (``silence``).
- A face track still for ``print_still_s`` that was never the talker is a picture (a print, the room's
  display): never framed close, left out of the group shot (``print``), and speech from its direction
  moves nothing; until its lips move while speech is heard near it (a person who sat very still).
- Speech from where nobody is seen (a talker outside the picture) keeps the shot, or gives the group
  instead of a talker who is silent (``outside-picture``): never an empty shot. A framed face that is
  gone gives the group too (``face-lost``).
- ``ping_pong_swaps`` swaps between the same two talkers within ``ping_pong_window_s`` frame both together
  (``ping-pong``) until someone else talks or one of them holds the floor ``ping_pong_end_s``; so does a
  neighbour's answer (nobody seen between them) to a remark shorter than ``ping_pong_quick_s``.
- A neighbour's answer (``answer_two_shot_s``): the cut to someone who answers the person next to them
  keeps that person at the shot's edge, the talker nearer the centre, for that long, then glides in to the
  talker alone; a quick answer back then frames both (above).
- Two people talking over each other (the second at least ``overlap_ratio`` of the first, both above
  ``overlap_level_s``) for ``overlap_after_s`` are framed together (``overlap``).
- Microphones muted from the panel (:meth:`Director.set_muted`): the group shot, speech ignored (``muted``).
- The far end talking (``farend_still``): while only the far end's voice plays in the room, the shot holds
  still: no glide, and the silence, print and exchange-ended cuts wait until it has been quiet
  ``farend_quiet_s``. A local talker still gets a cut.
- Cuts jump; small changes of the same shot (a talker leaning) glide with time constant ``smooth_tau_s``.
Every cut carries the rule that fired and its evidence (``Shot.rule``, ``Shot.evidence``).

Modes (``[director] mode`` at start, :meth:`Director.set_mode` from the panel): ``speaker`` (the rules above),
``group`` (everyone present), ``gallery`` (up to ``gallery_max`` people, each in a tile of one picture; the
recent talkers first), ``off`` (the whole view) and ``manual`` (:meth:`Director.manual_view`: a pan, tilt and
zoom from the panel, until ``manual_resume_s`` later the previous mode resumes). Faces inside an
``exclude_deg`` range (a TV, a picture on the wall) are never framed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from appliance.config import DirectorConfig
from appliance.messages import Box, Crop, Doa, Faces, Shot, ShotMode
from appliance.perception.lips import LipReading
from appliance.perception.tracking import FaceTracker, Track
from common.geometry import PinholeCamera, fit_aspect

_GRID = np.arange(-90.0, 90.5, 0.5)
_BUMP_SIGMA_DEG = 3.0
_DEADBAND = 0.03  # changes smaller than this fraction of the crop width are not followed
_HYSTERESIS = 1.25  # a new talker's evidence must beat the current one's by this factor
_NOTED_S = 0.02  # evidence below this is left out of a decision's record
_LIP_MATCH_DEG = 3.0  # a lip reading belongs to the person seen this near its face
_LIP_FRESH_S = 0.5  # a lip reading older than this is not used
_FAVOUR = 0.3  # an answer's two-shot is centred this share of the way from the talker to the one answered
_TWO_SHOT_MAX = 2.0  # ... and is at most this many speaker shots wide
_TALKING_S = 0.3  # speech heard this recently from someone seen: they are talking now
Policy = Literal["speaker", "group", "gallery", "off", "manual"]
POLICIES: tuple[Policy, ...] = ("speaker", "group", "gallery", "off", "manual")
Rule = Literal[
    "start",
    "talker",
    "silence",
    "people-seen",
    "nobody",
    "face-lost",
    "mode",
    "manual",
    "resumed",
    "ping-pong",
    "overlap",
    "exchange-ended",
    "print",
    "outside-picture",
    "muted",
]


@dataclass(frozen=True)
class _Seen:
    """A face track as the director uses it."""

    box: Box
    azimuth_deg: float
    id: int
    still_s: float


class Director:
    """Frames the talker, or the group when nobody talks. See the module docstring for the rules."""

    def __init__(self, camera: PinholeCamera, cfg: DirectorConfig, aspect: float = 16 / 9) -> None:
        self.camera = camera
        self.cfg = cfg
        self.aspect = aspect
        self._evidence = np.zeros_like(_GRID)
        self._last_t: float | None = None
        self._tracker = FaceTracker(camera)
        self._tracker_t = -math.inf
        self._all: list[_Seen] = []  # tracks outside the excluded ranges
        self._seen: list[_Seen] = []  # ... that are people (not pictures)
        self._prints: list[_Seen] = []
        self._new_prints: list[_Seen] = []  # faces found to be pictures at the last detection
        self._talked: set[int] = set()  # tracks that have been the talker: people, never pictures
        self._ev: dict[int, float] = {}  # recent speech of each person seen (s)
        self._outside = (0.0, 0.0)  # the strongest recent speech where nobody is seen: azimuth, seconds
        self._owner_key: tuple[float, ...] | None = None
        self._owner = np.full(_GRID.shape, -1)  # the person (index in _seen) each direction belongs to
        self.policy: Policy = cfg.mode
        self._resume_policy: Policy = cfg.mode
        self._manual_crop: tuple[float, float, float, float] | None = None
        self._manual_until = math.inf
        self._pending: tuple[str, Rule] | None = None  # a mode change waiting for the next step's cut
        self._muted = False
        self._mode: ShotMode = "wide"
        self._target_id: int | None = None
        self._target_az: float | None = None
        self._shown_pair: tuple[int, int] | None = None  # the two people the current group shot is about
        self._talker: int | None = None  # who talks now (whatever is framed)
        self._talker_since = -math.inf
        self._swaps: deque[tuple[float, frozenset[int]]] = deque()  # talker changes within the window
        self._quick: frozenset[int] | None = None  # the last quick answer to a short remark (ping_pong_quick_s)
        self._pair: tuple[tuple[int, int], Rule] | None = None  # two people to frame together, and why
        self._answer: tuple[int, int] | None = None  # (answered, answerer) of the last swap between neighbours
        self._partner: tuple[int, float] | None = None  # the one answered, kept in the talker's shot until then
        self._overlap_since: float | None = None
        self._overlap_off_since: float | None = None
        self._last_cut_t = -math.inf
        self._last_speech_t = -math.inf
        self._farend_t = -math.inf  # the last far-end block
        self._local_t = -math.inf  # the last local speech block, from anywhere
        self._crop = (0.0, 0.0, float(camera.width), float(camera.height))
        self._reason = "starting: whole room"
        self._rule: Rule = "start"
        self._evidence_record: dict[str, Any] = {}
        self._glide_t: float | None = None
        self._last_doa_t: float | None = None
        self._lips: dict[int, tuple[float, float]] = {}  # each person's latest lip activity: (t, activity)
        tau = cfg.evidence_tau_s
        self._switch_level = tau * (1.0 - math.exp(-cfg.switch_after_s / tau)) if cfg.switch_after_s else 1e-6

    @property
    def muted(self) -> bool:
        return self._muted

    # -- evidence -------------------------------------------------------------------------------
    def _decay(self, now: float) -> None:
        if self._last_t is not None and now > self._last_t:
            self._evidence *= math.exp(-(now - self._last_t) / self.cfg.evidence_tau_s)
        self._last_t = now if self._last_t is None else max(self._last_t, now)

    def _add(self, azimuth_deg: float, weight: float) -> None:
        bump = np.exp(-0.5 * ((_GRID - azimuth_deg) / _BUMP_SIGMA_DEG) ** 2)
        self._evidence += weight * bump / bump.sum()

    def _add_heard(self, azimuth_deg: float, weight: float, now: float) -> None:
        """Speech heard from ``azimuth_deg``: to the faces near it whose lips move, shared by how much they
        move; with none, to the heard direction."""
        cfg = self.cfg
        if cfg.lips:
            moving = [
                (s, a)
                for s in self._all
                if abs(s.azimuth_deg - azimuth_deg) <= cfg.lips_window_deg
                and (a := self._lip_activity(s.id, now)) >= cfg.lips_min
            ]
            total = sum(a for _, a in moving)
            if total > 0.0:
                for s, a in moving:
                    if s in self._prints:  # a still face that talks is a person, not a picture
                        self._talked.add(s.id)
                        self._prints.remove(s)
                        self._seen.append(s)
                    self._add(s.azimuth_deg, weight * a / total)
                return
        self._add(azimuth_deg, weight)

    def _read_lips(self, lips: Sequence[LipReading], now: float) -> None:
        for reading in lips:
            if reading.activity is None:
                continue
            x, _, w, _ = reading.box
            az = self.camera.azimuth_of_column(x + w / 2.0)
            s = self._nearest(az, self._all)  # pictures too: a still face whose lips move is a person
            if s is not None and abs(s.azimuth_deg - az) <= _LIP_MATCH_DEG:
                self._lips[s.id] = (now, reading.activity)

    def _lip_activity(self, track_id: int, now: float) -> float:
        t, a = self._lips.get(track_id, (-math.inf, 0.0))
        return a if now - t <= _LIP_FRESH_S else 0.0

    def _attribute(self) -> None:
        """Each direction's evidence to the nearest person within ``match_deg``; the rest is "outside"."""
        key = tuple(s.azimuth_deg for s in self._seen)
        if key != self._owner_key:  # which person each direction belongs to, when the people move
            owner = np.full(_GRID.shape, -1)
            if key:
                dist = np.abs(_GRID[:, None] - np.array(key)[None, :])
                nearest = dist.argmin(axis=1)
                owner = np.where(dist[np.arange(len(_GRID)), nearest] <= self.cfg.match_deg, nearest, -1)
            self._owner_key, self._owner = key, owner
        owned = self._owner >= 0
        if key:
            sums = np.bincount(self._owner[owned], weights=self._evidence[owned], minlength=len(key))
            self._ev = {s.id: float(v) for s, v in zip(self._seen, sums, strict=True)}
        else:
            self._ev = {}
        free = np.where(owned, 0.0, self._evidence)
        i = int(free.argmax())
        if free[i] <= 0.0:
            self._outside = (0.0, 0.0)
            return
        peak = float(_GRID[i])
        self._outside = (peak, float(free[np.abs(_GRID - peak) <= self.cfg.match_deg].sum()))

    def _nearest(self, azimuth_deg: float, among: Sequence[_Seen] | None = None) -> _Seen | None:
        pool = self._seen if among is None else among
        best = min(pool, key=lambda s: abs(s.azimuth_deg - azimuth_deg), default=None)
        if best is None or abs(best.azimuth_deg - azimuth_deg) > self.cfg.match_deg:
            return None
        return best

    def _best(self) -> tuple[float, _Seen | None]:
        return max(((self._ev.get(s.id, 0.0), s) for s in self._seen), key=lambda p: p[0], default=(0.0, None))

    def _person(self, track_id: int | None) -> _Seen | None:
        return next((s for s in self._seen if s.id == track_id), None)

    # -- the step -------------------------------------------------------------------------------
    def step(self, faces: Faces | None, doas: Sequence[Doa], now: float, lips: Sequence[LipReading] = ()) -> Shot:
        """Advance to ``now`` with the new evidence and return the shot to show. ``faces`` (a new detection,
        or None) are tracked here; :meth:`step_tracks` takes tracks made elsewhere. ``lips``: this frame's
        lip readings (:class:`~appliance.perception.lips.LipWatch`)."""
        tracks = None
        if faces is not None:
            if faces.t < self._tracker_t:  # time went back (a new recording): new tracks
                self._tracker = FaceTracker(self.camera)
            self._tracker_t = faces.t
            tracks = self._tracker.update(faces)
        return self.step_tracks(tracks, doas, now, lips)

    def step_tracks(
        self, tracks: Sequence[Track] | None, doas: Sequence[Doa], now: float, lips: Sequence[LipReading] = ()
    ) -> Shot:
        """Advance to ``now`` with the live face tracks (None: no new detection), the new DOA blocks and this
        frame's lip readings."""
        if tracks is not None:
            seen = [_Seen(tr.box, tr.azimuth_deg, tr.id, tr.still_s) for tr in tracks]
            self._all = [s for s in seen if not any(lo <= s.azimuth_deg <= hi for lo, hi in self.cfg.exclude_deg)]
            self._talked &= {s.id for s in self._all}  # a track that is gone never comes back
            limit = self.cfg.print_still_s
            prints = [s for s in self._all if s.id not in self._talked and s.still_s >= limit]
            known = {s.id for s in self._prints}
            self._new_prints = [s for s in prints if s.id not in known]
            self._prints = prints
            self._seen = [s for s in self._all if s not in self._prints]
        self._decay(now)
        if lips:
            self._read_lips(lips, now)
        for d in doas:
            # each block counts for the time it covers since the previous one
            span = 0.032 if self._last_doa_t is None else min(max(d.t - self._last_doa_t, 0.0), 0.25)
            self._last_doa_t = d.t
            if d.farend:
                self._farend_t = max(self._farend_t, d.t)
            elif d.speech:
                self._local_t = max(self._local_t, d.t)
            if d.speech and d.azimuth_deg is not None and not self._muted:  # far-end blocks are not speech
                az = d.azimuth_deg
                if self.cfg.behind == "mirror" and abs(az) > 90.0:  # behind the camera: the front wall's image
                    az = math.copysign(180.0, az) - az
                self._add_heard(az, span, now)
                if self._nearest(az) is not None:
                    self._last_speech_t = max(self._last_speech_t, d.t)
        self._attribute()
        self._follow_talker(now)
        followed = self._person(self._target_id)
        if followed is not None:
            self._target_az = followed.azimuth_deg

        if self.policy == "manual" and now >= self._manual_until:
            self.policy, self._manual_crop = self._resume_policy, None
            self._pending = (
                f"automatic framing ({self.policy}) resumed after {self.cfg.manual_resume_s:g} s",
                "resumed",
            )
        cut = self._decide_for_policy(now)
        common: dict[str, Any] = {
            "reason": self._reason,
            "policy": self.policy,
            "rule": self._rule,
            "muted": self._muted,
            "evidence": self._evidence_record if cut else {},
        }
        if self._mode == "gallery":
            tiles = self._gallery_tiles()
            if tiles:
                self._crop = _bounding(tiles)
                return Shot(
                    t=now,
                    crop=_as_int(self._crop),
                    mode="gallery",
                    cut=cut,
                    tiles=tuple(_as_int(c) for c in tiles),
                    **common,
                )
            cut = self._cut("wide", "nobody", "gallery: nobody seen: whole room", now)
            common.update(reason=self._reason, rule=self._rule, evidence=self._evidence_record)
        if self._partner is not None and now >= self._partner[1] and now - self._last_speech_t <= _TALKING_S:
            self._partner = None  # the answer has gone on: in to the talker alone (never while nobody here talks)
        target = self._manual_crop if self._mode == "manual" and self._manual_crop else self._target_crop()
        crop = self._move(target, now, cut)
        self._crop = crop
        return Shot(
            t=now,
            crop=_as_int(crop),
            mode=self._mode,
            target_azimuth_deg=self._target_az if self._mode == "speaker" else None,
            cut=cut,
            **common,
        )

    # -- who talks: turns, exchanges, overlaps -----------------------------------------------------
    def _follow_talker(self, now: float) -> None:
        cfg = self.cfg
        best_ev, best = self._best()
        if self._person(self._talker) is None:
            self._talker = None
        talker_ev = self._ev.get(self._talker, 0.0) if self._talker is not None else 0.0
        if best is not None and best_ev >= self._switch_level:
            self._talked.add(best.id)
            if best.id != self._talker and best_ev > _HYSTERESIS * talker_ev:
                if self._talker is not None:
                    swap = frozenset((self._talker, best.id))
                    self._swaps.append((now, swap))
                    beside = self._neighbours(self._talker, best)
                    quick = beside and cfg.ping_pong_quick_s > 0 and now - self._talker_since < cfg.ping_pong_quick_s
                    self._quick = swap if quick else None  # a neighbour's quick answer to a short remark
                    answer = beside and cfg.answer_two_shot_s > 0  # ... and any answer of a neighbour
                    self._answer = (self._talker, best.id) if answer else None
                self._talker, self._talker_since = best.id, now
        while self._swaps and self._swaps[0][0] < now - cfg.ping_pong_window_s:
            self._swaps.popleft()

        # two talking over each other: the first two by evidence, both well above nothing
        ranked = sorted(self._seen, key=lambda s: -self._ev.get(s.id, 0.0))[:2]
        over = False
        if cfg.frame_overlap and len(ranked) == 2:
            a, b = (self._ev.get(s.id, 0.0) for s in ranked)
            over = b >= cfg.overlap_level_s and b >= cfg.overlap_ratio * a
        framed_over = self._pair is not None and self._pair[1] == "overlap"
        if over:
            self._overlap_off_since = None
            if self._overlap_since is None:
                self._overlap_since = now
        elif not framed_over:  # it must last overlap_after_s without a break to be framed ...
            self._overlap_since = None
        else:  # ... and, once framed, be over for as long to end
            if self._overlap_off_since is None:
                self._overlap_off_since = now
            if now - self._overlap_off_since >= cfg.overlap_after_s:
                self._overlap_since = None

        pair = self._pair
        if pair is not None and pair[1] == "overlap" and self._overlap_since is None:
            pair = None
        if pair is not None and pair[1] == "ping-pong":
            if self._talker not in pair[0] or now - self._talker_since >= self._exchange_hold(frozenset(pair[0])):
                ended = frozenset(pair[0])  # the exchange is over: its swaps no longer count
                self._swaps = deque(s for s in self._swaps if s[1] != ended)
                self._quick = None
                pair = None
        if pair is not None and any(self._person(i) is None for i in pair[0]):
            pair = None
        if pair is None and self._overlap_since is not None and now - self._overlap_since >= cfg.overlap_after_s:
            ids = sorted(s.id for s in ranked)
            if len(ids) == 2:
                pair = ((ids[0], ids[1]), "overlap")
        if pair is None and cfg.ping_pong_swaps > 0 and self._talker is not None and self._swaps:
            last = self._swaps[-1][1]
            swaps = sum(1 for _, p in self._swaps if p == last)
            quick = last == self._quick
            if (swaps >= cfg.ping_pong_swaps or quick) and now - self._talker_since < self._exchange_hold(last):
                a_id, b_id = sorted(last)
                pair = ((a_id, b_id), "ping-pong")
        self._pair = pair

    def _neighbours(self, track_id: int, other: _Seen) -> bool:
        """Two people seated side by side: nobody seen between them (they fit one two-shot)."""
        one = self._person(track_id)
        if one is None:
            return False
        lo, hi = sorted((one.azimuth_deg, other.azimuth_deg))
        return not any(lo < s.azimuth_deg < hi for s in self._seen if s.id not in (one.id, other.id))

    def _listening(self, now: float) -> bool:
        """The far end talks and nobody in the room does: the room listens, the picture holds still."""
        cfg = self.cfg
        return cfg.farend_still and now - self._farend_t <= cfg.farend_quiet_s and self._local_t < self._farend_t

    def _exchange_hold(self, pair: frozenset[int]) -> float:
        """How long one of an exchange's two may hold the floor before it is over: ``ping_pong_end_s``, or
        for an exchange of quick remarks not yet ``ping_pong_swaps`` long, a quick remark's length."""
        cfg = self.cfg
        if cfg.ping_pong_quick_s <= 0 or sum(1 for _, p in self._swaps if p == pair) >= cfg.ping_pong_swaps:
            return cfg.ping_pong_end_s
        return min(cfg.ping_pong_quick_s, cfg.ping_pong_end_s)

    # -- decisions ------------------------------------------------------------------------------
    def _cut(
        self,
        mode: ShotMode,
        rule: Rule,
        reason: str,
        now: float,
        target: _Seen | None = None,
        pair: tuple[int, int] | None = None,
    ) -> bool:
        """Change the shot (always a cut), recording why."""
        self._mode, self._rule, self._reason, self._last_cut_t = mode, rule, reason, now
        self._target_id = None if target is None else target.id
        self._target_az = None if target is None else target.azimuth_deg
        self._shown_pair = pair
        self._partner = None
        self._evidence_record = self._record(now)
        return True

    def _record(self, now: float) -> dict[str, Any]:
        """The evidence behind a decision: each person's recent speech, pictures, unseen talkers, turns."""
        r = round
        rec: dict[str, Any] = {
            "people": [
                {
                    "track": s.id,
                    "azimuth_deg": r(s.azimuth_deg, 1),
                    "speech_s": r(self._ev.get(s.id, 0.0), 2),
                    "still_s": r(s.still_s, 1),
                    "lips": r(self._lip_activity(s.id, now), 2),
                }
                for s in self._seen
            ],
            "switch_at_s": r(self._switch_level, 2),
        }
        if self._prints:
            rec["prints"] = [{"track": s.id, "azimuth_deg": r(s.azimuth_deg, 1)} for s in self._prints]
        if self._outside[1] >= _NOTED_S:
            rec["unseen_speech"] = {"azimuth_deg": r(self._outside[0], 1), "speech_s": r(self._outside[1], 2)}
        if self._talker is not None:
            rec["talker"] = self._talker
        if self._swaps:
            rec["swaps"] = len(self._swaps)
        if self._pair is not None:
            rec["pair"] = list(self._pair[0])
        if self._muted:
            rec["muted"] = True
        return rec

    def _decide(self, now: float) -> bool:
        cfg = self.cfg
        held = now - self._last_cut_t
        may_cut = held >= cfg.min_hold_s or self._mode != "speaker"
        followed = self._person(self._target_id)
        if self._mode == "speaker" and followed is None:  # the framed face is gone: never an empty shot
            if self._seen:
                return self._cut("group", "face-lost", "the framed face is gone: group", now)
            return self._cut("wide", "face-lost", "the framed face is gone, nobody seen: whole room", now)

        if self._pair is not None:  # two people framed together
            ids, rule = self._pair
            if self._shown_pair == ids:
                return False
            if not may_cut:
                return False
            a, b = (self._person(i) for i in ids)
            assert a is not None and b is not None
            what = "talking over each other" if rule == "overlap" else "exchange"
            swaps = sum(1 for _, p in self._swaps if p == frozenset(ids))
            reason = f"{what}: {a.azimuth_deg:+.1f} and {b.azimuth_deg:+.1f} deg framed together" + (
                f" ({swaps} swaps in {cfg.ping_pong_window_s:g} s)" if rule == "ping-pong" else ""
            )
            return self._cut("group", rule, reason, now, pair=ids)

        best_ev, best = self._best()
        current_ev = self._ev.get(followed.id, 0.0) if self._mode == "speaker" and followed else 0.0
        is_current = best is not None and self._mode == "speaker" and best.id == self._target_id
        if (
            best is not None
            and not is_current
            and best_ev >= self._switch_level
            and best_ev > _HYSTERESIS * current_ev
            and may_cut
        ):
            reason = f"talker at {best.azimuth_deg:+.1f} deg: {best_ev:.2f} s of recent speech" + (
                f" vs {current_ev:.2f} s" if current_ev > 0 else ""
            )
            answered = self._answer[0] if self._answer is not None and self._answer[1] == best.id else None
            partner = self._person(answered)
            if partner is not None:
                reason += f"; answering {partner.azimuth_deg:+.1f} deg, kept in the shot"
            self._cut("speaker", "talker", reason, now, target=best)
            if partner is not None:
                self._partner = (partner.id, now + cfg.answer_two_shot_s)
            return True
        silent_for = now - self._last_speech_t
        if self._listening(now):  # the far end talks: silence, prints and ended exchanges wait
            return False
        if self._shown_pair is not None and self._mode == "group":  # the exchange is over, nobody took over
            if silent_for < cfg.silence_to_group_s:
                return False
            return self._cut("group", "exchange-ended", f"exchange over, no speech for {silent_for:.1f} s: group", now)
        new_prints, self._new_prints = self._new_prints, []
        if new_prints and self._mode == "group":  # the group shot no longer has to hold the picture
            where = ", ".join(f"{s.azimuth_deg:+.1f}" for s in new_prints)
            reason = f"face at {where} deg still for {cfg.print_still_s:g} s and never heard: a picture, left out"
            return self._cut("group", "print", reason, now)

        # speech from where nobody is seen: a talker outside the picture gets the group, never an empty
        # shot; speech from a picture's direction is no reason to move at all
        out_az, out_ev = self._outside
        if (
            self._mode == "speaker"
            and out_ev >= self._switch_level
            and out_ev > _HYSTERESIS * max(current_ev, best_ev)
            and held >= cfg.min_hold_s
            and self._nearest(out_az, self._prints) is None
        ):
            return self._cut(
                "group", "outside-picture", f"talker at {out_az:+.1f} deg where nobody is seen: group", now
            )
        if self._mode == "speaker" and silent_for >= cfg.silence_to_group_s and held >= cfg.min_hold_s:
            return self._cut("group", "silence", f"no speech for {silent_for:.1f} s: group", now)
        if self._mode == "wide" and self._seen:
            return self._cut("group", "people-seen", f"{len(self._seen)} people seen: group", now)
        if self._mode == "group" and not self._seen and held >= cfg.min_hold_s:
            return self._cut("wide", "nobody", "nobody seen: whole room", now)
        return False

    # -- modes ----------------------------------------------------------------------------------
    def set_mode(self, policy: Policy, now: float) -> None:
        """Frame by ``policy`` from the next step on (a cut). ``manual`` keeps the current view."""
        if policy not in POLICIES:
            raise ValueError(f"unknown mode {policy!r}: one of {', '.join(POLICIES)}")
        if policy == "manual":
            self._start_manual(self._crop, now)
            return
        self.policy = self._resume_policy = policy
        self._manual_crop, self._manual_until = None, math.inf
        self._pending = (f"mode {policy} chosen", "mode")

    def set_muted(self, muted: bool, now: float) -> None:
        """The room's microphones muted (or on again) from the panel: while muted the speaker mode shows the
        group and no speech steers; every shot says ``muted``."""
        muted = bool(muted)
        if muted == self._muted:
            return
        self._muted = muted
        self._evidence[:] = 0.0
        self._swaps.clear()
        self._pair, self._overlap_since, self._talker = None, None, None
        self._pending = ("microphones muted: group" if muted else "microphones on again", "muted")

    def manual_view(self, pan: float, tilt: float, zoom: float, now: float) -> tuple[float, float, float, float]:
        """Manual pan-tilt-zoom: ``pan`` and ``tilt`` in [-1, 1] (left/top to right/bottom of the free
        travel), ``zoom`` from 1 (the whole view) to the narrowest crop. Returns the crop."""
        if not (-1.0 <= pan <= 1.0 and -1.0 <= tilt <= 1.0) or not (math.isfinite(zoom) and zoom >= 1.0):
            raise ValueError(f"pan and tilt must be in [-1, 1] and zoom >= 1, got {pan}, {tilt}, {zoom}")
        cam = self.camera
        full = fit_aspect(cam.cx, cam.cy, float(cam.width), self.aspect, cam.width, cam.height, 1.0)
        w = max(full[2] / zoom, self.cfg.min_crop_frac * cam.width)
        h = w / self.aspect
        x = (cam.width - w) * (pan + 1.0) / 2.0
        y = (cam.height - h) * (tilt + 1.0) / 2.0
        crop = fit_aspect(x + w / 2, y + h / 2, w, self.aspect, cam.width, cam.height, 1.0)
        self._start_manual(crop, now)
        return crop

    def _start_manual(self, crop: tuple[float, float, float, float], now: float) -> None:
        if self.policy != "manual":
            self._resume_policy = self.policy
        self.policy, self._manual_crop = "manual", crop
        resume = self.cfg.manual_resume_s
        self._manual_until = now + resume if resume > 0 else math.inf
        self._pending = (
            "manual framing from the panel" + (f" (automatic again after {resume:g} s)" if resume > 0 else ""),
            "manual",
        )

    def _decide_for_policy(self, now: float) -> bool:
        pending, self._pending = self._pending, None
        if self.policy == "speaker":
            if self._muted:
                want_mode: ShotMode = "group" if self._seen else "wide"
                if pending is None and self._mode == want_mode:
                    return False
                reason = "microphones muted: " + ("group" if self._seen else "nobody seen: whole room")
                return self._cut(want_mode, "muted", reason, now)
            if pending is not None:  # back to automatic: start from the group and let the rules cut
                return self._cut("group" if self._seen else "wide", pending[1], pending[0], now)
            return self._decide(now)
        want: ShotMode
        if self.policy == "manual":
            want = "manual"
        elif self.policy == "off" or not self._seen:
            want = "wide"
        else:
            want = "group" if self.policy == "group" else "gallery"
        if pending is None and want == self._mode:
            return False
        default = {
            "wide": "whole room",
            "group": f"{len(self._seen)} people: group",
            "gallery": f"{len(self._seen)} people: gallery",
            "manual": "manual",
        }[want]
        return self._cut(want, pending[1] if pending else "mode", pending[0] if pending else default, now)

    def _gallery_tiles(self) -> list[tuple[float, float, float, float]]:
        """One crop per person (at most ``gallery_max``): recent talkers first, then left to right; the
        tiles are laid out left to right in azimuth order."""
        if not self._seen:
            return []

        def talked(s: _Seen) -> float:  # seconds of recent speech, when there is a meaningful amount
            ev = self._ev.get(s.id, 0.0)
            return ev if ev >= 0.05 else 0.0

        ranked = sorted(self._seen, key=lambda s: (-talked(s), s.azimuth_deg))
        chosen = sorted(ranked[: self.cfg.gallery_max], key=lambda s: s.azimuth_deg)
        aspect = gallery_tile_aspect(len(chosen), self.aspect)
        cam, out = self.camera, []
        for s in chosen:
            x, y, w, h = s.box
            cw = max(w * self.cfg.face_widths * 0.8, h * 2.2 * aspect)
            out.append(fit_aspect(x + w / 2, y + h / 2 + 0.1 * cw / aspect, cw, aspect, cam.width, cam.height, w * 1.5))
        return out

    # -- framing --------------------------------------------------------------------------------
    def _target_crop(self) -> tuple[float, float, float, float]:
        cam, cfg = self.camera, self.cfg
        min_w = cfg.min_crop_frac * cam.width
        if self._mode == "speaker" and self._target_id is not None:
            seen = self._person(self._target_id)
            if seen is None:  # the talker's face is not tracked right now: keep the framing
                return self._crop
            x, y, w, h = seen.box
            cx = x + w / 2
            cw = max(w * cfg.face_widths, min_w)
            partner = self._person(self._partner[0]) if self._partner else None
            if partner is not None:  # the one answered at the edge, the talker nearer the centre
                px, _, pw, _ = partner.box
                d = px + pw / 2 - cx
                m = cfg.group_margin * pw
                c = cx + _FAVOUR * d
                far = px + pw + m if d > 0 else px - m
                near = x - m if d > 0 else x + w + m
                wide = 2.0 * max(cw / 2, abs(far - c), abs(c - near))
                # the talker stays the face nearest the centre: no one else (nor a picture) comes nearer
                nearest = all(abs(s.box[0] + s.box[2] / 2 - c) > abs(cx - c) for s in self._all if s.id != seen.id)
                if wide <= _TWO_SHOT_MAX * cw and nearest:
                    cx, cw = c, wide
            ch = cw / self.aspect
            # eyes about a third down the picture: face centre 40 % from the top
            return fit_aspect(cx, y + h / 2 + 0.1 * ch, cw, self.aspect, cam.width, cam.height, min_w)
        if self._mode == "group" and self._seen:
            members = self._seen
            if self._shown_pair is not None:
                pair = [s for s in self._seen if s.id in self._shown_pair]
                members = pair if len(pair) == 2 else members
            boxes = np.array([s.box for s in members])
            fw = float(np.median(boxes[:, 2]))
            m = cfg.group_margin * fw + fw
            x0, x1 = boxes[:, 0].min() - m, (boxes[:, 0] + boxes[:, 2]).max() + m
            y0, y1 = boxes[:, 1].min() - m, (boxes[:, 1] + boxes[:, 3]).max() + 2 * m
            cw = max(x1 - x0, (y1 - y0) * self.aspect)
            return fit_aspect((x0 + x1) / 2, (y0 + y1) / 2, cw, self.aspect, cam.width, cam.height, min_w)
        return fit_aspect(cam.cx, cam.cy, float(cam.width), self.aspect, cam.width, cam.height, min_w)

    def _move(
        self, target: tuple[float, float, float, float], now: float, cut: bool
    ) -> tuple[float, float, float, float]:
        cur = self._crop
        if cut or self.cfg.smooth_tau_s <= 0:
            self._glide_t = now
            return target
        if self._listening(now) and self.policy != "manual":  # the far end talks: no glide
            self._glide_t = now
            return cur
        if max(abs(a - b) for a, b in zip(cur, target, strict=True)) < _DEADBAND * cur[2]:
            self._glide_t = now
            return cur
        dt = 0.0 if self._glide_t is None else max(0.0, now - self._glide_t)
        self._glide_t = now
        a = 1.0 - math.exp(-dt / self.cfg.smooth_tau_s)
        return (
            cur[0] + a * (target[0] - cur[0]),
            cur[1] + a * (target[1] - cur[1]),
            cur[2] + a * (target[2] - cur[2]),
            cur[3] + a * (target[3] - cur[3]),
        )


def gallery_tile_aspect(n: int, aspect: float) -> float:
    """The aspect of each tile when ``n`` people share one picture of ``aspect``: one fills it, two stand
    side by side (halves), three or four take a quarter each."""
    return aspect if n <= 1 else aspect / 2 if n == 2 else aspect


def _bounding(crops: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    x0, y0 = min(c[0] for c in crops), min(c[1] for c in crops)
    x1, y1 = max(c[0] + c[2] for c in crops), max(c[1] + c[3] for c in crops)
    return x0, y0, x1 - x0, y1 - y0


def _as_int(crop: tuple[float, float, float, float]) -> Crop:
    x, y, w, h = (int(round(v)) for v in crop)
    return x, y, w - (w % 2), h - (h % 2)
