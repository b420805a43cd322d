"""The mic array's calibration against the camera: pure (no clock, no I/O).

The array hears directions in its own frame; the director matches them to faces in the camera's. When the
array sits turned (a round array put down at an angle, a bar mounted crooked) every azimuth it reports is off
by that rotation. The guided calibration fixes it from live data:

- for each **point** (``left``: the leftmost face in the picture; ``right``: the rightmost; ``centre``: the
  face nearest the picture's centre) one person talks alone for a few seconds; a :class:`PointCollector`
  takes the DOA blocks (:class:`appliance.messages.Doa`) and the face azimuths seen meanwhile, and gives a
  :class:`Point` (the median azimuth of the speech blocks, the median azimuth of that face) or refuses
  (:class:`CalibrationRefused`: too few speech blocks, the DOA spread too wide, two voices, no face);
- :func:`fit` turns the points into a :class:`Calibration`: with one point an offset (the array's
  rotation), with two or more a monotone piecewise-linear map from heard azimuth to camera azimuth (offset
  and scale between the points, the end points' offsets beyond them). A fit that would turn the array
  further than ``max_offset_deg`` (it would face away, behind the camera), that decreases (left and right
  swapped: a mirrored array) or whose points contradict each other (a scale outside
  ``min_scale..max_scale``) is refused with a one-line message.

:class:`Calibration.to_camera` maps one azimuth; :mod:`appliance.step` maps every DOA block through it before
the director sees it, so the live box and ``roombox process`` agree.

The same captures give the array's **gain** (:func:`speech_gain_db`): how far the talkers' speech reads from
the level the hearing is tuned for. It is saved as ``[calibration] gain_db`` and applied to the array's audio
before the hearing (:func:`appliance.perception.hearing.make_ears`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from appliance.messages import CalibrationPoint, Doa, Faces
from common.geometry import PinholeCamera

PointName = Literal["left", "right", "centre"]
POINT_NAMES: tuple[PointName, ...] = ("left", "right", "centre")
PROMPTS: dict[str, str] = {
    "left": "the person at the left end of the table (leftmost in the picture), please talk for a few seconds",
    "right": "the person at the right end of the table (rightmost in the picture), please talk for a few seconds",
    "centre": "the person nearest the middle of the picture, please talk for a few seconds",
}
_MAD_TO_SIGMA = 1.4826
# The level the hearing is tuned for: a talker in the calibration's places, speech at -30 dBFS (RMS) at the
# mics, reads -33 dBFS in the voice band (the hearing grid's 540 captures: median -32.9, 90 % within -35.7..-31.4)
TALKER_LEVEL_DB = -33.0
GAIN_TOLERANCE_DB = 4.0  # talkers this close to TALKER_LEVEL_DB keep the gain in force (voices and places vary)
MAX_GAIN_DB = 24.0
SILENT_DBFS = -100.0  # a speech block's level at or below this was not measured (Doa's default is -120)


class CalibrationRefused(ValueError):
    """A capture or a fit that cannot be used; the message (one line) says why."""


@dataclass(frozen=True)
class Limits:
    """What a capture needs and what a fit may be (the ``[calibration]`` section's keys)."""

    min_blocks: int = 12
    max_spread_deg: float = 8.0
    voice_gap_deg: float = 15.0
    max_offset_deg: float = 90.0
    min_scale: float = 0.25
    max_scale: float = 4.0
    min_separation_deg: float = 5.0


def wrap(deg: float) -> float:
    """An angle in [-180, 180)."""
    return (deg + 180.0) % 360.0 - 180.0


Point = CalibrationPoint  # one captured point (the wire form is the message's)


def _window(values: Sequence[float], centre: float, half: float) -> list[float]:
    return [v for v in values if abs(wrap(v - centre)) <= half]


def _densest(values: Sequence[float], half: float) -> tuple[float, list[float]]:
    """The azimuth with the most values within ``half`` degrees, and those values."""
    best: list[float] = []
    for c in values:
        near = _window(values, c, half)
        if len(near) > len(best):
            best = near
    ref = best[0]
    centre = wrap(ref + statistics.median(wrap(v - ref) for v in best))
    return centre, _window(values, centre, half)


def robust_azimuth(azimuths: Sequence[float], limits: Limits) -> tuple[float, float]:
    """The one talker's azimuth in a capture's speech blocks and their spread (1.4826 x the median absolute
    deviation, degrees); refused when there are too few, two voices or too wide a spread."""
    n = len(azimuths)
    if n < limits.min_blocks:
        raise CalibrationRefused(
            f"too few speech blocks: {n} with a direction, {limits.min_blocks} needed (talk louder or longer)"
        )
    half = max(limits.voice_gap_deg, 2.0 * limits.max_spread_deg) / 2.0
    centre, main = _densest(azimuths, half)
    rest = [a for a in azimuths if abs(wrap(a - centre)) > half]
    if len(rest) >= 0.25 * n:
        other, second = _densest(rest, half)
        if len(second) >= 0.2 * n:
            raise CalibrationRefused(
                f"two voices: {len(main)} blocks from {centre:+z.0f} deg and {len(second)} from {other:+z.0f} deg "
                "(one person at a time, please)"
            )
        spread = _MAD_TO_SIGMA * statistics.median(abs(wrap(a - centre)) for a in azimuths)
        raise CalibrationRefused(
            f"DOA spread too wide: {len(rest)} of {n} blocks more than {half:z.0f} deg away "
            f"(spread {spread:z.0f} deg; a noisy or echoing room, or the talker moved)"
        )
    spread = _MAD_TO_SIGMA * statistics.median(abs(wrap(a - centre)) for a in main)
    if spread > limits.max_spread_deg:
        raise CalibrationRefused(
            f"DOA spread too wide: {spread:z.1f} deg, at most {limits.max_spread_deg:g} (a noisy or echoing room, "
            "or the talker moved)"
        )
    return centre, spread


def face_azimuths(faces: Faces, hfov_deg: float) -> list[float]:
    """The azimuths (degrees, camera frame) of the faces of one detection, by the pinhole model."""
    if faces.width <= 0 or faces.height <= 0:
        return []
    cam = PinholeCamera(faces.width, faces.height, hfov_deg)
    return [cam.azimuth_of_column(f.center[0]) for f in faces.faces]


def _pick(name: str, azimuths: Sequence[float]) -> float:
    if name == "left":
        return min(azimuths)
    if name == "right":
        return max(azimuths)
    return min(azimuths, key=abs)


@dataclass
class PointCollector:
    """Collects one point's DOA blocks and face azimuths during its prompt; :meth:`point` gives the point
    or refuses."""

    name: str
    limits: Limits = field(default_factory=Limits)
    azimuths: list[float] = field(default_factory=list)  # speech blocks with a direction
    levels: list[float] = field(default_factory=list)  # their voice-band levels (dBFS)
    blocks: int = 0  # every block seen
    face_picks: list[float] = field(default_factory=list)  # the face at that end, one per detection
    detections: int = 0

    def __post_init__(self) -> None:
        if self.name not in POINT_NAMES:
            raise CalibrationRefused(f"no calibration point {self.name!r}: one of {', '.join(POINT_NAMES)}")

    def add_doas(self, doas: Iterable[Doa]) -> None:
        for d in doas:
            self.blocks += 1
            if d.speech and d.azimuth_deg is not None and math.isfinite(d.azimuth_deg):
                self.azimuths.append(float(d.azimuth_deg))
                if math.isfinite(d.level_db) and d.level_db > SILENT_DBFS:  # (-120: no level was measured)
                    self.levels.append(float(d.level_db))

    def add_faces(self, azimuths: Iterable[float]) -> None:
        """The face azimuths (camera frame, degrees) of one detection."""
        seen = [float(a) for a in azimuths if math.isfinite(a)]
        self.detections += 1
        if seen:
            self.face_picks.append(_pick(self.name, seen))

    def point(self) -> Point:
        if self.blocks == 0:
            raise CalibrationRefused("no audio came from the mic array during the capture")
        doa, spread = robust_azimuth(self.azimuths, self.limits)
        if not self.face_picks:
            raise CalibrationRefused(
                f"no face at the {self.name} end: the camera saw nobody during the capture"
                if self.detections
                else "no face detection ran during the capture (is the camera running?)"
            )
        camera = statistics.median(self.face_picks)
        level = statistics.median(self.levels) if self.levels else None
        return Point(self.name, doa, camera, len(self.azimuths), spread, len(self.face_picks), level)


@dataclass(frozen=True)
class Calibration:
    """A fitted map from heard azimuth to camera azimuth: ``knots`` are (heard, camera) pairs, the heard
    azimuths unwrapped and increasing; linear between them, the nearest end's offset beyond."""

    knots: tuple[tuple[float, float], ...]

    @property
    def rotation_deg(self) -> float:
        """The array's rotation: the mean offset camera - heard over the knots."""
        return statistics.fmean(c - d for d, c in self.knots)

    @property
    def scale(self) -> float:
        """Camera degrees per heard degree between the outer knots (1 with a single point)."""
        if len(self.knots) < 2:
            return 1.0
        (d0, c0), (d1, c1) = self.knots[0], self.knots[-1]
        return (c1 - c0) / (d1 - d0)

    def to_camera(self, azimuth_deg: float) -> float:
        """The camera azimuth of a heard azimuth, in [-180, 180)."""
        ks = self.knots
        mid = statistics.fmean(d for d, _ in ks)
        a = mid + wrap(azimuth_deg - mid)
        if a <= ks[0][0]:
            return wrap(a + ks[0][1] - ks[0][0])
        if a >= ks[-1][0]:
            return wrap(a + ks[-1][1] - ks[-1][0])
        for (d0, c0), (d1, c1) in zip(ks, ks[1:], strict=False):
            if a <= d1:
                return wrap(c0 + (a - d0) * (c1 - c0) / (d1 - d0))
        return wrap(a)  # not reached

    def describe(self) -> str:
        if len(self.knots) == 1:
            return f"array turned {self.rotation_deg:+z.1f} deg"
        return f"array turned {self.rotation_deg:+z.1f} deg, scale {self.scale:.2f} over {len(self.knots)} points"

    def to_json(self) -> dict[str, object]:
        return {
            "rotation_deg": round(self.rotation_deg, 2),
            "scale": round(self.scale, 3),
            "points": [[round(d, 2), round(c, 2)] for d, c in self.knots],
            "summary": self.describe(),
        }


def fit(points: Sequence[tuple[float, float]], limits: Limits = Limits()) -> Calibration:
    """The calibration through ``points`` ((heard azimuth, camera azimuth) pairs, degrees); refused with a
    one-line message when it is not plausible."""
    if not points:
        raise CalibrationRefused("no calibration points")
    knots: list[tuple[float, float]] = []
    for doa, cam in points:
        if not (math.isfinite(doa) and math.isfinite(cam)):
            raise CalibrationRefused(f"point ({doa}, {cam}) is not a pair of finite angles")
        if not -90.0 < cam < 90.0:
            raise CalibrationRefused(f"camera azimuth {cam:+z.1f} deg is outside the camera's view (-90..90)")
        offset = wrap(cam - doa)
        if abs(offset) > limits.max_offset_deg:
            why = (
                "it would face away from the camera"
                if abs(offset) > 90.0
                else "more than [calibration] max_offset_deg allows"
            )
            raise CalibrationRefused(
                f"the array would be turned {offset:+z.0f} deg (at most {limits.max_offset_deg:g}): {why}; check the "
                "mic array's positions or rotation in the config"
            )
        knots.append((cam - offset, cam))
    knots.sort(key=lambda k: k[1])
    for (d0, c0), (d1, c1) in zip(knots, knots[1:], strict=False):
        if c1 - c0 < limits.min_separation_deg:
            raise CalibrationRefused(
                f"two points only {c1 - c0:z.1f} deg apart in the picture (at least {limits.min_separation_deg:g}): "
                "use people further apart"
            )
        if d1 == d0:
            raise CalibrationRefused(
                f"the faces at {c0:+z.0f} and {c1:+z.0f} deg were both heard at {d0:+z.0f} deg: the array cannot tell "
                "them apart (a reflection heard instead of one of them, or the same voice twice)"
            )
        if d1 < d0:
            raise CalibrationRefused(
                f"the map would decrease: the face at {c0:+z.0f} deg was heard at {d0:+z.0f} deg, the one at "
                f"{c1:+z.0f} at {d1:+z.0f} (left and right swapped: is the array mirrored?)"
            )
        scale = (c1 - c0) / (d1 - d0)
        if not limits.min_scale <= scale <= limits.max_scale:
            raise CalibrationRefused(
                f"the points contradict each other: {c1 - c0:z.0f} deg apart in the picture but {d1 - d0:z.0f} deg "
                f"apart to the array (scale {scale:.2f}, plausible {limits.min_scale:g}..{limits.max_scale:g})"
            )
    return Calibration(tuple(knots))


def speech_gain_db(levels_db: Iterable[float | None], current_db: float = 0.0) -> float:
    """The gain (dB) on the array's audio that brings the calibration's talkers to :data:`TALKER_LEVEL_DB`:
    ``levels_db`` each point's speech level (:attr:`Point.level_db`, None when unknown), heard with
    ``current_db`` in force. The hearing (Silero's verdict above all) is tuned at that level: 10 dB quieter it
    loses half the speech of a noisy reverberant room, 10 dB louder it takes a chair scrape for a voice. Talkers
    within :data:`GAIN_TOLERANCE_DB` of it keep ``current_db``; no level keeps it too; at most
    :data:`MAX_GAIN_DB` either way."""
    known = [float(v) for v in levels_db if v is not None and math.isfinite(v)]
    if not known:
        return current_db
    off = TALKER_LEVEL_DB - statistics.median(known)
    if abs(off) <= GAIN_TOLERANCE_DB:
        return current_db
    return round(min(MAX_GAIN_DB, max(-MAX_GAIN_DB, current_db + off)), 1)
