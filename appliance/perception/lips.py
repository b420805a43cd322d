"""Lip motion: which of the faces in the picture is moving its mouth. Pure: frames and boxes in, values out.

Sound alone cannot always tell two neighbours apart: in a reverberant room a small array's direction is off by
several degrees (a wall behind the array pulls it; so does the late reverberation), and people around a table
sit 8-12 degrees apart as the camera sees them. The picture can: the talker's mouth opens and closes with
the syllables, a listener's does not. :class:`LipWatch` measures, for each face box of the latest detection,
how much the mouth region changes from frame to frame *beyond* how much the eyes' region changes (a head that
sways or leans, light, camera noise and compression move both alike), smoothed over about a syllable's length:

    motion = mean |mouth - mouth before| - mean |eyes - eyes before|     (grey levels, on 16 x 8 thumbnails)
    activity = exponential average of max(motion, 0), time constant ``tau_s``

The director (:mod:`appliance.director`) never takes lip motion for speech: it only uses it to give the
speech the microphones heard to the face whose mouth moves, among the faces near the heard direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from appliance.messages import Box

THUMB = (16, 8)  # (width, height) of the regions' thumbnails
MOUTH = (0.25, 0.66, 0.75, 0.98)  # the mouth region in face-box units (x0, y0, x1, y1)
EYES = (0.15, 0.18, 0.85, 0.5)  # the reference region: eyes and brows
MIN_FACE_PX = 16  # smaller faces give no lip reading
SAME_FACE = 0.5  # a box is the same face as one before when their centres are this share of a width apart
EYES_WEIGHT = 1.5  # the eyes' change taken off the mouth's: what moves the whole face is not the lips


@dataclass(frozen=True)
class LipReading:
    """One face's box and its lip activity (grey levels of mouth change per frame, smoothed); ``None`` when
    the face is too small or has only just been found."""

    box: Box
    activity: float | None


@dataclass(eq=False)  # holds arrays: compared by identity
class _Face:
    box: Box
    mouth: npt.NDArray[np.float32] | None = None
    eyes: npt.NDArray[np.float32] | None = None
    t: float = -math.inf
    activity: float = 0.0
    frames: int = 0


def _thumb(
    image: npt.NDArray[np.uint8], box: Box, part: tuple[float, float, float, float], size: tuple[int, int]
) -> npt.NDArray[np.float32]:
    x, y, w, h = box
    H, W = image.shape[:2]
    x0, x1 = max(0, round(x + part[0] * w)), min(W, round(x + part[2] * w))
    y0, y1 = max(0, round(y + part[1] * h)), min(H, round(y + part[3] * h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((size[1], size[0]), np.float32)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def _region(image: npt.NDArray[np.uint8], box: Box, part: tuple[float, float, float, float]) -> npt.NDArray[np.float32]:
    """The ``part`` of the face ``box`` of ``image`` (RGB or grey) as a grey thumbnail."""
    return _thumb(image, box, part, THUMB)


class LipWatch:
    """Lip activity of the faces of the latest detection, frame by frame (see the module docstring)."""

    def __init__(self, tau_s: float = 0.35) -> None:
        if tau_s <= 0:
            raise ValueError(f"tau_s must be positive, got {tau_s}")
        self.tau_s = float(tau_s)
        self._faces: list[_Face] = []

    def set_boxes(self, boxes: Sequence[Box]) -> None:
        """A new detection's face boxes: a box near one before keeps its history (the same face)."""
        kept: list[_Face] = []
        for b in boxes:
            cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
            near = [
                f
                for f in self._faces
                if math.hypot(f.box[0] + f.box[2] / 2 - cx, f.box[1] + f.box[3] / 2 - cy) <= SAME_FACE * b[2]
                and f not in kept
            ]
            if near:
                f = min(near, key=lambda f: abs(f.box[2] - b[2]))
                box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
                if box != f.box:  # the regions move with the box: the next frame starts them afresh
                    f.box, f.mouth, f.eyes = box, None, None
                kept.append(f)
            else:
                kept.append(_Face((float(b[0]), float(b[1]), float(b[2]), float(b[3]))))
        self._faces = kept

    def look(self, t: float, image: npt.NDArray[np.uint8]) -> list[LipReading]:
        """Read the lips of every face on the frame at ``t`` (RGB, or grey (h, w))."""
        if not self._faces:
            return []
        out = []
        for f in self._faces:
            if f.box[2] < MIN_FACE_PX:
                out.append(LipReading(f.box, None))
                continue
            mouth, eyes = _region(image, f.box, MOUTH), _region(image, f.box, EYES)
            if f.mouth is not None and f.eyes is not None and t > f.t:
                change = float(np.mean(np.abs(mouth - f.mouth)))
                motion = change - EYES_WEIGHT * float(np.mean(np.abs(eyes - f.eyes)))
                k = math.exp(-(t - f.t) / self.tau_s) if math.isfinite(f.t) else 0.0
                f.activity = k * f.activity + (1.0 - k) * max(motion, 0.0)
                f.frames += 1
            f.mouth, f.eyes, f.t = mouth, eyes, t
            out.append(LipReading(f.box, f.activity if f.frames >= 2 else None))
        return out
