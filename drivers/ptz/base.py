"""The PTZ interface the director drives, its config section, and where a PTZ camera looks in the room.

Angles are degrees in the camera mount's frame: pan positive to the right, tilt positive up, (0, 0) the
home position (the axis the room geometry calls azimuth 0). Zoom is normalised: 0 the widest view, 1 the
tightest; :meth:`PtzSection.hfov_at` gives the field of view at a zoom, :func:`room_direction` turns a
direction in the PTZ camera's picture into room azimuth/elevation, so faces seen by a camera that has
moved stay in the room frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import Field, model_validator

from common.errors import RoomboxError
from common.settings import Section


class PtzError(RoomboxError, RuntimeError):
    """A PTZ camera that does not answer, answers garbage or refuses a command; the message names the camera,
    its address and what went wrong. The box reports it and keeps running (degraded: no camera moves)."""


class PtzRefused(PtzError):
    """The camera answered but refused one command (VISCA "command not executable", "command buffer full",
    ...): the connection is fine and the next command may well be taken; the caller reports the refusal and
    goes on, rather than treating the head as lost."""


@dataclass(frozen=True)
class PtzPosition:
    pan_deg: float
    tilt_deg: float
    zoom: float  # 0 (widest) .. 1 (tightest)


@dataclass(frozen=True)
class PtzLimits:
    pan_deg: tuple[float, float] = (-170.0, 170.0)
    tilt_deg: tuple[float, float] = (-30.0, 90.0)

    def clamp(self, pan_deg: float, tilt_deg: float, zoom: float) -> PtzPosition:
        if not all(math.isfinite(v) for v in (pan_deg, tilt_deg, zoom)):
            raise ValueError(f"not a position: pan {pan_deg}, tilt {tilt_deg}, zoom {zoom}")
        return PtzPosition(
            min(max(pan_deg, self.pan_deg[0]), self.pan_deg[1]),
            min(max(tilt_deg, self.tilt_deg[0]), self.tilt_deg[1]),
            min(max(zoom, 0.0), 1.0),
        )


@runtime_checkable
class PtzControl(Protocol):
    """A pan/tilt/zoom camera. ``move_to`` returns once the camera has accepted the move (``wait=True``: once
    it has arrived); a position outside ``limits`` is clamped. Every call is bounded by the driver's timeout
    and raises :class:`PtzError` rather than hang."""

    name: str
    limits: PtzLimits

    async def open(self) -> None: ...

    async def move_to(self, pan_deg: float, tilt_deg: float, zoom: float, wait: bool = False) -> PtzPosition: ...

    async def position(self) -> PtzPosition: ...

    async def stop(self) -> None: ...

    async def close(self) -> None: ...


class PtzSection(Section):
    """What every PTZ camera's config section has: its travel and its optics. Drivers add their own keys and
    a ``type`` (``[ptz.NAME] type = "visca-ip"``)."""

    camera: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$",
        title="Camera it moves",
        description="The [cameras.NAME] whose picture this PTZ head moves",
    )
    pan_min_deg: float = Field(-170.0, ge=-180.0, le=0.0, title="Leftmost pan (degrees)")
    pan_max_deg: float = Field(170.0, ge=0.0, le=180.0, title="Rightmost pan (degrees)")
    tilt_min_deg: float = Field(-30.0, ge=-90.0, le=0.0, title="Lowest tilt (degrees)")
    tilt_max_deg: float = Field(90.0, ge=0.0, le=90.0, title="Highest tilt (degrees)")
    hfov_wide_deg: float = Field(60.0, gt=1.0, lt=180.0, title="Field of view at the widest zoom (degrees)")
    optical_zoom: float = Field(12.0, ge=1.0, le=60.0, title="Optical zoom ratio")

    @model_validator(mode="after")
    def _ranges(self) -> PtzSection:
        if self.pan_min_deg >= self.pan_max_deg or self.tilt_min_deg >= self.tilt_max_deg:
            raise ValueError("pan_min_deg/tilt_min_deg must be below pan_max_deg/tilt_max_deg")
        return self

    @property
    def limits(self) -> PtzLimits:
        return PtzLimits((self.pan_min_deg, self.pan_max_deg), (self.tilt_min_deg, self.tilt_max_deg))

    def hfov_at(self, zoom: float) -> float:
        """The horizontal field of view (degrees) at a normalised zoom: the focal length grows geometrically
        from 1x to ``optical_zoom`` (a zoom lens' position is close to logarithmic in focal length)."""
        return hfov_at(self.hfov_wide_deg, self.optical_zoom, zoom)


def hfov_at(hfov_wide_deg: float, optical_zoom: float, zoom: float) -> float:
    mag = optical_zoom ** min(max(zoom, 0.0), 1.0)
    return math.degrees(2.0 * math.atan(math.tan(math.radians(hfov_wide_deg) / 2.0) / mag))


def room_direction(pos: PtzPosition, azimuth_deg: float, elevation_deg: float = 0.0) -> tuple[float, float]:
    """The room (azimuth, elevation) in degrees of a direction seen at (``azimuth_deg``, ``elevation_deg``)
    from the centre of a PTZ camera's picture while it is at ``pos``: the picture's ray rotated by the tilt
    (about the x axis), then by the pan (about the y axis). x right, y up, z forward, as the room frame."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    x, y, z = math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)
    t = math.radians(pos.tilt_deg)
    y, z = y * math.cos(t) + z * math.sin(t), -y * math.sin(t) + z * math.cos(t)
    p = math.radians(pos.pan_deg)
    x, z = x * math.cos(p) + z * math.sin(p), -x * math.sin(p) + z * math.cos(p)
    return math.degrees(math.atan2(x, z)), math.degrees(math.asin(max(-1.0, min(1.0, y))))
