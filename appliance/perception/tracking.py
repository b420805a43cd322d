"""Face tracks with stable identities: ``FaceTracker(camera).update(faces) -> list[Track]``. Pure.

Detections (``Faces``, one frame's worth, with its time) go in; tracks come out, each with an id that stays
with the person through short misses (a head turned, a hand in front, a detection skipped), a smoothed
position, its direction in the room frame (azimuth and elevation from the pinhole camera) and how long it
has been still (the director tells a print on the wall from a person by that).

Association is a global assignment (Hungarian) on centre distance in face sizes, gated by distance and by
size ratio, so two seated neighbours never swap identities while each stays within its own gate. A track
not seen for ``max_miss_s`` is dropped; a new one is ``confirmed`` after ``min_hits`` detections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from appliance.messages import Box, Faces
from common.geometry import PinholeCamera


@dataclass(frozen=True)
class FaceTrackerConfig:
    max_miss_s: float = 3.0  # a confirmed track unseen this long is dropped
    tentative_miss_s: float = 1.0  # ... and an unconfirmed one this long
    min_hits: int = 2  # detections before a track is confirmed
    gate: float = 0.9  # largest centre distance for a match, in face sizes ...
    gate_growth_per_s: float = 0.5  # ... growing by this much per second unseen
    max_size_ratio: float = 1.8  # largest ratio between a track's size and a detection's
    smooth_tau_s: float = 0.3  # time constant of the smoothed position and size
    still_frac: float = 0.12  # moving less than this fraction of the face size counts as still


@dataclass(frozen=True)
class Track:
    """One person's face over time, at time ``t``.

    ``box`` is the last detected box (source pixels), ``center`` and ``size`` (face width) are smoothed.
    ``missed_s`` is the time since the last detection, ``still_s`` how long the smoothed position has
    stayed within ``still_frac`` face sizes, ``age_s`` the time since first seen.
    """

    id: int
    t: float
    box: Box
    center: tuple[float, float]
    size: float
    azimuth_deg: float
    elevation_deg: float
    still_s: float
    missed_s: float
    age_s: float
    hits: int
    score: float
    confirmed: bool

    def to_json(self) -> dict[str, Any]:
        r = round
        return {
            "id": self.id,
            "t": r(self.t, 3),
            "box": [r(v, 1) for v in self.box],
            "center": [r(self.center[0], 1), r(self.center[1], 1)],
            "size": r(self.size, 1),
            "azimuth_deg": r(self.azimuth_deg, 2),
            "elevation_deg": r(self.elevation_deg, 2),
            "still_s": r(self.still_s, 2),
            "missed_s": r(self.missed_s, 2),
            "age_s": r(self.age_s, 2),
            "hits": self.hits,
            "score": r(self.score, 3),
            "confirmed": self.confirmed,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Track:
        x, y, w, h = (float(v) for v in d["box"])
        cx, cy = (float(v) for v in d["center"])
        return cls(
            id=int(d["id"]),
            t=float(d["t"]),
            box=(x, y, w, h),
            center=(cx, cy),
            size=float(d["size"]),
            azimuth_deg=float(d["azimuth_deg"]),
            elevation_deg=float(d["elevation_deg"]),
            still_s=float(d["still_s"]),
            missed_s=float(d["missed_s"]),
            age_s=float(d["age_s"]),
            hits=int(d.get("hits", 0)),
            score=float(d["score"]),
            confirmed=bool(d["confirmed"]),
        )


@dataclass
class _State:
    id: int
    first_t: float
    last_t: float  # last detection
    box: Box
    cx: float
    cy: float
    size: float
    score: float
    anchor: tuple[float, float]
    still_since: float
    hits: int = 1


def _center(box: Box) -> tuple[float, float]:
    return box[0] + box[2] / 2.0, box[1] + box[3] / 2.0


class FaceTracker:
    """Keeps face tracks from one camera of the given geometry. Feed it every detection, in time order."""

    def __init__(self, camera: PinholeCamera, cfg: FaceTrackerConfig | None = None) -> None:
        self.camera = camera
        self.cfg = cfg or FaceTrackerConfig()
        self._tracks: list[_State] = []
        self._next_id = 1
        self._t = -math.inf
        self.last_ids: list[int] = []  # track id of each face of the last update, in its order

    def update(self, faces: Faces) -> list[Track]:
        """Take one frame's detections (at ``faces.t``); return the live tracks at that time."""
        t = faces.t
        if t < self._t:
            raise ValueError(f"detections out of time order: {t} after {self._t}")
        self._t = t
        cfg = self.cfg
        self._tracks = [
            s
            for s in self._tracks
            if t - s.last_t <= (cfg.max_miss_s if s.hits >= cfg.min_hits else cfg.tentative_miss_s)
        ]
        boxes = [f.box for f in faces.faces]
        pairs = self._assign(boxes, t)
        ids = [0] * len(boxes)
        for di, si in pairs:
            s = self._tracks[si]
            self._follow(s, boxes[di], faces.faces[di].score, t)
            ids[di] = s.id
        for di, box in enumerate(boxes):
            if ids[di] == 0:
                cx, cy = _center(box)
                s = _State(self._next_id, t, t, box, cx, cy, max(box[2], box[3]), faces.faces[di].score, (cx, cy), t)
                self._next_id += 1
                self._tracks.append(s)
                ids[di] = s.id
        self.last_ids = ids
        return self.tracks(t)

    def tracks(self, t: float) -> list[Track]:
        """The live tracks as of time ``t`` (at or after the last update), by id."""
        out = []
        for s in sorted(self._tracks, key=lambda s: s.id):
            limit = self.cfg.max_miss_s if s.hits >= self.cfg.min_hits else self.cfg.tentative_miss_s
            if t - s.last_t > limit:
                continue
            az = self.camera.azimuth_of_column(s.cx)
            el = math.degrees(
                math.atan2(self.camera.cy - s.cy, math.hypot(self.camera.focal_px, s.cx - self.camera.cx))
            )
            out.append(
                Track(
                    id=s.id,
                    t=t,
                    box=s.box,
                    center=(s.cx, s.cy),
                    size=s.size,
                    azimuth_deg=az,
                    elevation_deg=el,
                    still_s=max(0.0, t - s.still_since),
                    missed_s=max(0.0, t - s.last_t),
                    age_s=max(0.0, t - s.first_t),
                    hits=s.hits,
                    score=s.score,
                    confirmed=s.hits >= self.cfg.min_hits,
                )
            )
        return out

    def _assign(self, boxes: Sequence[Box], t: float) -> list[tuple[int, int]]:
        """(detection, track) pairs: the cheapest assignment within the gates."""
        if not boxes or not self._tracks:
            return []
        cfg = self.cfg
        big = 1e6
        cost = np.full((len(boxes), len(self._tracks)), big)
        for di, box in enumerate(boxes):
            cx, cy = _center(box)
            size = max(box[2], box[3], 1.0)
            for si, s in enumerate(self._tracks):
                ref = max(s.size, size)
                ratio = max(s.size, size) / max(min(s.size, size), 1e-6)
                # from the last detected position: the smoothed one lags behind a person leaning
                lx, ly = _center(s.box)
                d = math.hypot(cx - lx, cy - ly) / ref
                gate = cfg.gate + cfg.gate_growth_per_s * (t - s.last_t)
                if d <= gate and ratio <= cfg.max_size_ratio:
                    cost[di, si] = d + 0.1 * math.log(ratio) + (0.0 if s.hits >= cfg.min_hits else 0.2)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < big]

    def _follow(self, s: _State, box: Box, score: float, t: float) -> None:
        cx, cy = _center(box)
        size = max(box[2], box[3])
        a = 1.0 - math.exp(-max(0.0, t - s.last_t) / self.cfg.smooth_tau_s) if self.cfg.smooth_tau_s > 0 else 1.0
        s.cx += a * (cx - s.cx)
        s.cy += a * (cy - s.cy)
        s.size += a * (size - s.size)
        s.box, s.score, s.last_t = box, score, t
        s.hits += 1
        if math.hypot(s.cx - s.anchor[0], s.cy - s.anchor[1]) > self.cfg.still_frac * s.size:
            s.anchor, s.still_since = (s.cx, s.cy), t
