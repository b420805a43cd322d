"""Pinhole camera geometry: azimuth <-> image column, crops with a fixed aspect ratio.

Camera frame: x to the camera's right, y up, z forward along the optical axis, origin at the camera.
Azimuth 0 is the camera's axis, positive to the camera's right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PinholeCamera:
    """An undistorted pinhole camera of ``width`` x ``height`` pixels and horizontal field of view."""

    width: int
    height: int
    hfov_deg: float

    @property
    def focal_px(self) -> float:
        return (self.width / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    def column_of_azimuth(self, azimuth_deg: float) -> float:
        """Image column (pixels) seen at ``azimuth_deg``; may fall outside the picture."""
        return self.cx + self.focal_px * math.tan(math.radians(azimuth_deg))

    def azimuth_of_column(self, u: float) -> float:
        """Azimuth (degrees) of the ray through image column ``u``."""
        return math.degrees(math.atan2(u - self.cx, self.focal_px))

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """Pixel (u, v) of the camera-frame point (x, y, z); z must be positive."""
        if z <= 0:
            raise ValueError(f"point is behind the camera (z={z})")
        f = self.focal_px
        return self.cx + f * x / z, self.cy - f * y / z


def azimuth_of_point(x: float, z: float) -> float:
    """Azimuth (degrees) of a camera-frame point, positive to the right."""
    return math.degrees(math.atan2(x, z))


def fit_aspect(
    cx: float, cy: float, w: float, aspect: float, frame_w: int, frame_h: int, min_w: float
) -> tuple[float, float, float, float]:
    """A crop of ``aspect`` (w/h) centred near (cx, cy), at least ``min_w`` wide, kept inside the frame."""
    w = max(w, min_w)
    h = w / aspect
    if h > frame_h:
        h = float(frame_h)
        w = h * aspect
    if w > frame_w:
        w = float(frame_w)
        h = w / aspect
    x = min(max(cx - w / 2.0, 0.0), frame_w - w)
    y = min(max(cy - h / 2.0, 0.0), frame_h - h)
    return x, y, w, h
