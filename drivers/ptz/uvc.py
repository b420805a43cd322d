"""UVC pan/tilt/zoom through V4L2 controls (Logitech PTZ Pro, Rally, BRIO's digital PTZ, most USB PTZ cameras).

``[ptz.NAME] type = "uvc"``, ``device = "/dev/video0"`` (or the camera's name). The controls are
``V4L2_CID_PAN_ABSOLUTE`` / ``TILT_ABSOLUTE`` (arc seconds, 1/3600 degree) and ``ZOOM_ABSOLUTE`` (a
device-defined range), read and written with ``VIDIOC_QUERYCTRL`` / ``G_CTRL`` / ``S_CTRL`` ioctls (ctypes);
the ranges the device reports are the limits. The encoding (:func:`encode_angle`, :func:`encode_zoom`) is
pure and unit-tested; no UVC PTZ camera was at hand to run the ioctls against.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from drivers.base import SourceLost
from drivers.ptz.base import PtzError, PtzLimits, PtzPosition, PtzSection
from drivers.registry import DriverContext, register

V4L2_CID_CAMERA_CLASS_BASE = 0x009A0900
V4L2_CID_PAN_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 8
V4L2_CID_TILT_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 9
V4L2_CID_ZOOM_ABSOLUTE = V4L2_CID_CAMERA_CLASS_BASE + 13
V4L2_CTRL_FLAG_DISABLED = 0x0001
ARCSEC_PER_DEG = 3600


class v4l2_control(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("value", ctypes.c_int32)]


class v4l2_queryctrl(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("name", ctypes.c_uint8 * 32),
        ("minimum", ctypes.c_int32),
        ("maximum", ctypes.c_int32),
        ("step", ctypes.c_int32),
        ("default_value", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 2),
    ]


def _iowr(kind: str, nr: int, size: int) -> int:
    """Linux ``_IOWR(type, nr, size)``: direction read|write (3) << 30, size << 16, type << 8, nr."""
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


VIDIOC_G_CTRL = _iowr("V", 27, ctypes.sizeof(v4l2_control))
VIDIOC_S_CTRL = _iowr("V", 28, ctypes.sizeof(v4l2_control))
VIDIOC_QUERYCTRL = _iowr("V", 36, ctypes.sizeof(v4l2_queryctrl))


@dataclass(frozen=True)
class ControlRange:
    minimum: int
    maximum: int
    step: int = 1
    default: int = 0

    def snap(self, value: float) -> int:
        """The nearest value on the control's grid (minimum + k step), inside its range."""
        step = max(1, self.step)
        k = round((value - self.minimum) / step)
        return (
            max(self.minimum, min(self.maximum, self.minimum + k * step))
            if self.maximum >= self.minimum
            else self.minimum
        )


def encode_angle(deg: float, rng: ControlRange) -> int:
    """Degrees as a pan/tilt control value (arc seconds, snapped to the control's step and range)."""
    return rng.snap(deg * ARCSEC_PER_DEG)


def decode_angle(value: int) -> float:
    return value / ARCSEC_PER_DEG


def encode_zoom(zoom: float, rng: ControlRange) -> int:
    """A normalised zoom (0 widest .. 1 tightest) as a zoom control value."""
    return rng.snap(rng.minimum + min(max(zoom, 0.0), 1.0) * (rng.maximum - rng.minimum))


def decode_zoom(value: int, rng: ControlRange) -> float:
    span = rng.maximum - rng.minimum
    return (value - rng.minimum) / span if span > 0 else 0.0


class UvcPtzConfig(PtzSection):
    type: Literal["uvc"] = "uvc"
    device: str = Field(
        "/dev/video0",
        min_length=1,
        max_length=300,
        title="Device",
        description="A device path or the camera's name (as `roombox cameras` shows it)",
    )


class UvcPtz:
    """A :class:`drivers.ptz.base.PtzControl` over a UVC camera's absolute pan/tilt/zoom controls. Axes the
    camera lacks stay at 0; limits are the tighter of the config's and the device's."""

    def __init__(self, name: str, cfg: UvcPtzConfig) -> None:
        self.name, self.cfg = name, cfg
        self.limits: PtzLimits = cfg.limits
        self.ranges: dict[int, ControlRange] = {}
        self._fd = -1
        self._where = f"[ptz.{name}] {cfg.device}"

    def _ioctl(self, request: int, arg: ctypes.Structure, what: str) -> None:
        try:
            fcntl.ioctl(self._fd, request, arg)
        except OSError as e:
            if e.errno == errno.ENOTTY:
                raise PtzError(f"{self._where}: not a V4L2 device") from None
            if e.errno in (errno.ENODEV, errno.EIO):
                raise PtzError(f"{self._where}: the camera is gone (unplugged?)") from None
            raise PtzError(f"{self._where}: {what}: {e.strerror}") from None

    def _query(self, cid: int) -> ControlRange | None:
        q = v4l2_queryctrl(id=cid)
        try:
            fcntl.ioctl(self._fd, VIDIOC_QUERYCTRL, q)
        except OSError as e:
            if e.errno == errno.EINVAL:  # the camera has no such control
                return None
            self._ioctl(VIDIOC_QUERYCTRL, q, "query a control")  # raises with the reason
        if q.flags & V4L2_CTRL_FLAG_DISABLED:
            return None
        return ControlRange(q.minimum, q.maximum, q.step, q.default_value)

    def _open(self) -> None:
        from drivers.v4l2 import resolve_device

        try:
            path = resolve_device(self.cfg.device)
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except (SourceLost, OSError, ValueError) as e:
            raise PtzError(f"{self._where}: cannot open: {e}") from None
        try:
            for cid in (V4L2_CID_PAN_ABSOLUTE, V4L2_CID_TILT_ABSOLUTE, V4L2_CID_ZOOM_ABSOLUTE):
                if (rng := self._query(cid)) is not None:
                    self.ranges[cid] = rng
            if not self.ranges:
                raise PtzError(f"{self._where}: the camera has no pan, tilt or zoom control")
        except BaseException:
            self._close()
            raise
        pan, tilt = self.ranges.get(V4L2_CID_PAN_ABSOLUTE), self.ranges.get(V4L2_CID_TILT_ABSOLUTE)
        lim = self.cfg.limits
        self.limits = PtzLimits(
            (max(lim.pan_deg[0], decode_angle(pan.minimum)), min(lim.pan_deg[1], decode_angle(pan.maximum)))
            if pan
            else (0.0, 0.0),
            (max(lim.tilt_deg[0], decode_angle(tilt.minimum)), min(lim.tilt_deg[1], decode_angle(tilt.maximum)))
            if tilt
            else (0.0, 0.0),
        )

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def open(self) -> None:
        if self._fd < 0:
            await asyncio.to_thread(self._open)

    async def close(self) -> None:
        self._close()

    def _set(self, values: dict[int, int]) -> None:
        for cid, value in values.items():
            self._ioctl(VIDIOC_S_CTRL, v4l2_control(id=cid, value=value), f"set control 0x{cid:08x}")

    def _get(self) -> dict[int, int]:
        out = {}
        for cid in self.ranges:
            c = v4l2_control(id=cid)
            self._ioctl(VIDIOC_G_CTRL, c, f"read control 0x{cid:08x}")
            out[cid] = int(c.value)
        return out

    async def move_to(self, pan_deg: float, tilt_deg: float, zoom: float, wait: bool = False) -> PtzPosition:
        """Set the absolute controls (UVC gives no completion: ``wait`` changes nothing)."""
        await self.open()
        pos = self.limits.clamp(pan_deg, tilt_deg, zoom)
        values = {}
        for cid, rng in self.ranges.items():
            if cid == V4L2_CID_PAN_ABSOLUTE:
                values[cid] = encode_angle(pos.pan_deg, rng)
            elif cid == V4L2_CID_TILT_ABSOLUTE:
                values[cid] = encode_angle(pos.tilt_deg, rng)
            else:
                values[cid] = encode_zoom(pos.zoom, rng)
        await asyncio.to_thread(self._set, values)
        return pos

    async def position(self) -> PtzPosition:
        await self.open()
        v = await asyncio.to_thread(self._get)
        zoom_rng = self.ranges.get(V4L2_CID_ZOOM_ABSOLUTE)
        return PtzPosition(
            decode_angle(v.get(V4L2_CID_PAN_ABSOLUTE, 0)),
            decode_angle(v.get(V4L2_CID_TILT_ABSOLUTE, 0)),
            decode_zoom(v[V4L2_CID_ZOOM_ABSOLUTE], zoom_rng) if zoom_rng else 0.0,
        )

    async def stop(self) -> None:
        """Absolute UVC moves cannot be interrupted; hold where the camera is."""
        await self.move_to(**vars(await self.position()))


@register("ptz", "uvc", UvcPtzConfig)
def open_uvc_ptz(name: str, cfg: UvcPtzConfig, ctx: DriverContext) -> UvcPtz:
    return UvcPtz(name, cfg)
