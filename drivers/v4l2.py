"""USB (UVC) cameras through V4L2: list them with their formats, pick a mode, capture on a reader thread.

``[cameras.NAME] type = "v4l2"``, ``device = "/dev/video0"`` (or a ``/dev/v4l/by-id/...`` path, or the
camera's name as the kernel reports it, e.g. ``"Logitech BRIO"``), ``pixel_format = "MJPG" | "YUYV" |
"auto"``, and ``width``, ``height``, ``fps`` from :class:`drivers.base.CameraSection`.

- Listing: ``v4l2-ctl --list-devices`` and ``v4l2-ctl --list-formats-ext`` (Debian ``v4l-utils``), parsed by
  :func:`parse_list_devices` and :func:`parse_list_formats` (tested against recorded answers of real
  cameras, ``tests/data/v4l2/``). ``roombox cameras`` prints :func:`list_cameras` as JSON lines.
- Mode choice: :func:`choose_mode` checks the configured size and rate against what the device lists, and
  refuses with a message that says what it offers (:class:`drivers.capture.CameraFormatError`).
- Capture: OpenCV's V4L2 backend on a reader thread (:mod:`drivers.capture`): every buffer is dequeued as
  it comes and stamped with ``clock.now()`` at dequeue; only the newest is decoded; the others are counted
  as dropped. An unplugged camera (the device node vanishes, a read fails) raises ``SourceLost``; the
  supervisor retries, and the camera is found again by name when it comes back under another node.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from common.clock import SYSTEM_CLOCK, Clock
from common.errors import RoomboxError
from drivers.base import CameraSection, SourceLost
from drivers.capture import CameraFormatError, LatestFrameCamera
from drivers.hotplug import Watch, video_watches
from drivers.registry import DriverContext, register

PixelFormat = Literal["MJPG", "YUYV", "auto"]


class V4l2CameraConfig(CameraSection):
    """A USB (UVC) camera. The mode (``pixel_format``, ``width``, ``height``, ``fps``) must be one the camera
    lists (``roombox cameras``); 1080p30 and 2160p30 take MJPG on USB 2 and most USB 3 cameras."""

    type: Literal["v4l2"] = "v4l2"
    device: str = Field(
        "/dev/video0",
        min_length=1,
        max_length=300,
        title="Device",
        description="A device path (/dev/video0, /dev/v4l/by-id/...) or the camera's name "
        "(as `roombox cameras` shows it)",
    )
    pixel_format: PixelFormat = Field(
        "auto",
        title="Pixel format",
        description="MJPG (compressed, any size at full rate), YUYV "
        "(uncompressed, small sizes only), or auto: MJPG when it has the mode",
    )
    stall_s: float = Field(3.0, gt=0.0, le=60.0, title="No picture for this long: the camera is lost (s)")


class V4l2Error(RoomboxError, ValueError):
    """A device that cannot be found or listed; the message names it and the reason."""


@dataclass(frozen=True)
class FrameSize:
    """One picture size of a format and its frame rates (frames/s, highest first). A stepwise size range is
    listed by its bounds (``max_width``/``max_height`` > ``width``/``height``, ``step``)."""

    width: int
    height: int
    fps: tuple[float, ...]
    max_width: int = 0
    max_height: int = 0
    step: tuple[int, int] = (0, 0)
    min_fps: float = 0.0  # a continuous/stepwise interval range: min_fps .. fps[0]

    def has_size(self, width: int, height: int) -> bool:
        if not self.max_width:
            return (width, height) == (self.width, self.height)
        sx, sy = max(1, self.step[0]), max(1, self.step[1])
        return (
            self.width <= width <= self.max_width
            and self.height <= height <= self.max_height
            and (width - self.width) % sx == 0
            and (height - self.height) % sy == 0
        )

    def has_rate(self, fps: float, tolerance: float = 0.05) -> bool:
        if self.min_fps:
            return self.min_fps - tolerance <= fps <= self.fps[0] + tolerance
        return any(abs(f - fps) <= max(tolerance, 0.01 * f) for f in self.fps)


@dataclass(frozen=True)
class Format:
    """One pixel format a device offers (fourcc such as ``MJPG``, ``YUYV``, ``H264``, ``NV12``)."""

    fourcc: str
    description: str
    sizes: tuple[FrameSize, ...]


@dataclass(frozen=True)
class Mode:
    fourcc: str
    width: int
    height: int
    fps: float


@dataclass
class V4l2Device:
    """A camera as ``roombox cameras`` lists it."""

    name: str
    bus: str
    device: str  # the capture node
    nodes: list[str] = field(default_factory=list)
    formats: list[Format] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["formats"] = [
            {"fourcc": f.fourcc, "description": f.description, "sizes": [_size_json(s) for s in f.sizes]}
            for f in self.formats
        ]
        return d


def _size_json(s: FrameSize) -> dict[str, Any]:
    d: dict[str, Any] = {"width": s.width, "height": s.height, "fps": list(s.fps)}
    if s.max_width:
        d.update(max_width=s.max_width, max_height=s.max_height, step=list(s.step))
    if s.min_fps:
        d["min_fps"] = s.min_fps
    return d


# --- parsing v4l2-ctl's answers ---

_FMT = re.compile(r"^\s*\[(\d+)\]: '(.{1,4})' \((.*)\)\s*$")
_DISCRETE = re.compile(r"^\s*Size: Discrete (\d+)x(\d+)\s*$")
_STEPWISE = re.compile(r"^\s*Size: (?:Stepwise|Continuous) (\d+)x(\d+) - (\d+)x(\d+)(?: with step (\d+)/(\d+))?")
_IV_DISCRETE = re.compile(r"^\s*Interval: Discrete [\d.]+s \(([\d.]+) fps\)")
_IV_RANGE = re.compile(r"^\s*Interval: (?:Stepwise|Continuous) .*\(([\d.]+)-([\d.]+) fps\)")


def parse_list_formats(text: str) -> list[Format]:
    """The formats in the output of ``v4l2-ctl --list-formats-ext``."""
    formats: list[Format] = []
    cur: tuple[str, str] | None = None
    sizes: list[FrameSize] = []
    size: dict[str, Any] | None = None
    rates: list[float] = []

    def end_size() -> None:
        nonlocal size, rates
        if size is not None:
            if "min_fps" not in size:
                size["fps"] = tuple(sorted(set(rates), reverse=True))
            sizes.append(FrameSize(**size))
        size, rates = None, []

    def end_format() -> None:
        nonlocal cur, sizes
        end_size()
        if cur is not None:
            formats.append(Format(cur[0].strip(), cur[1], tuple(sizes)))
        cur, sizes = None, []

    for line in text.splitlines():
        if m := _FMT.match(line):
            end_format()
            cur = (m.group(2), m.group(3))
        elif m := _DISCRETE.match(line):
            end_size()
            size = {"width": int(m.group(1)), "height": int(m.group(2)), "fps": ()}
        elif m := _STEPWISE.match(line):
            end_size()
            step = (int(m.group(5) or 1), int(m.group(6) or 1))
            size = {
                "width": int(m.group(1)),
                "height": int(m.group(2)),
                "fps": (),
                "max_width": int(m.group(3)),
                "max_height": int(m.group(4)),
                "step": step,
            }
        elif m := _IV_DISCRETE.match(line):
            rates.append(float(m.group(1)))
        elif (m := _IV_RANGE.match(line)) and size is not None:
            lo, hi = float(m.group(1)), float(m.group(2))
            size["fps"], size["min_fps"] = (hi,), lo
    end_format()
    return formats


def parse_list_devices(text: str) -> list[tuple[str, str, list[str]]]:
    """``(name, bus, nodes)`` per device in the output of ``v4l2-ctl --list-devices``."""
    out: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            head = line.rstrip().rstrip(":")
            m = re.match(r"^(.*?)\s*\(([^()]*)\)$", head)
            name, bus = (m.group(1), m.group(2)) if m else (head, "")
            out.append((name, bus, []))
        elif out:
            out[-1][2].append(line.strip())
    return out


# --- asking the device ---


def _v4l2_ctl(*args: str, timeout: float = 10.0) -> str:
    exe = shutil.which("v4l2-ctl")
    if exe is None:
        raise V4l2Error("v4l2-ctl not found: install the Debian package v4l-utils (scripts/setup does)")
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise V4l2Error(f"v4l2-ctl {' '.join(args)}: no answer within {timeout:g} s") from None
    if r.returncode != 0 and not r.stdout.strip():
        raise V4l2Error(f"v4l2-ctl {' '.join(args)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout


def list_formats(device: str) -> list[Format]:
    """The capture formats of one device node (``v4l2-ctl -d DEVICE --list-formats-ext``)."""
    return parse_list_formats(_v4l2_ctl("-d", device, "--list-formats-ext"))


def list_cameras() -> list[V4l2Device]:
    """Every V4L2 capture device: its name, bus, capture node and formats. UVC cameras show several nodes
    (video and metadata); the capture node is the first that lists formats."""
    if not glob.glob("/dev/video*"):
        return []
    cams = []
    for name, bus, nodes in parse_list_devices(_v4l2_ctl("--list-devices")):
        for node in (n for n in nodes if n.startswith("/dev/video")):
            try:
                formats = list_formats(node)
            except V4l2Error:
                continue
            if formats:
                cams.append(V4l2Device(name, bus, node, nodes, formats))
                break
    return cams


def resolve_device(device: str) -> str:
    """A device path as given (it must exist), or the capture node of the camera of that name."""
    if device.startswith("/"):
        if not os.path.exists(device):
            raise SourceLost(f"{device}: no such device (unplugged?)")
        return device
    cams = list_cameras()
    for cam in cams:
        if cam.name == device or cam.name.startswith(device):
            return cam.device
    seen = ", ".join(repr(c.name) for c in cams) or "none"
    raise SourceLost(f"no camera named {device!r} (cameras present: {seen})")


def choose_mode(
    formats: list[Format],
    width: int,
    height: int,
    fps: float,
    pixel_format: PixelFormat = "auto",
    device: str = "camera",
) -> Mode:
    """The mode to ask for; refuses (naming what the device offers) when it does not list it. ``auto``
    takes MJPG when it has the size and rate, else YUYV."""
    wanted = ["MJPG", "YUYV"] if pixel_format == "auto" else [pixel_format]
    by_cc = {f.fourcc: f for f in formats}
    offered = [cc for cc in wanted if cc in by_cc]
    if not offered:
        have = ", ".join(by_cc) or "none"
        raise CameraFormatError(f"{device}: does not offer {' or '.join(wanted)} (it offers {have})")
    for cc in offered:
        for s in by_cc[cc].sizes:
            if s.has_size(width, height) and s.has_rate(fps):
                return Mode(cc, width, height, _exact_rate(s, fps))
    # say what is wrong: the size, or the rate at that size
    for cc in offered:
        at_size = [s for s in by_cc[cc].sizes if s.has_size(width, height)]
        if at_size:
            rates = sorted({r for s in at_size for r in s.fps}, reverse=True)
            raise CameraFormatError(
                f"{device}: {cc} {width}x{height} runs at {_rates(rates)} fps, not {fps:g}; set fps to one of those"
            )
    sizes = sorted({(s.width, s.height) for cc in offered for s in by_cc[cc].sizes}, reverse=True)
    listed = ", ".join(f"{w}x{h}" for w, h in sizes)
    raise CameraFormatError(f"{device}: {'/'.join(offered)} has no {width}x{height} (it has {listed})")


def _exact_rate(s: FrameSize, fps: float) -> float:
    if s.min_fps:
        return fps
    return min(s.fps, key=lambda f: abs(f - fps))


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{r:g}" for r in rates)


def _fourcc(code: str) -> int:
    return sum(ord(c) << (8 * i) for i, c in enumerate(code))


# --- capture ---


class V4l2Grabber:
    """OpenCV's V4L2 backend over one device; every call on the reader thread."""

    def __init__(self, cfg: V4l2CameraConfig, name: str) -> None:
        self.cfg, self.name = cfg, name
        self.path = ""
        self.mode: Mode | None = None
        self._cap: Any = None

    def watches(self) -> list[Watch]:
        return video_watches()

    def open(self) -> None:
        import cv2

        cfg = self.cfg
        self.path = resolve_device(cfg.device)
        where = f"[cameras.{self.name}] {self.path}"
        formats: list[Format] | None = None
        if shutil.which("v4l2-ctl"):
            formats = list_formats(self.path)
        if formats:
            self.mode = choose_mode(formats, cfg.width, cfg.height, cfg.fps, cfg.pixel_format, where)
        else:  # cannot list: ask for the mode, check what the driver settled on below
            self.mode = Mode("MJPG" if cfg.pixel_format == "auto" else cfg.pixel_format, cfg.width, cfg.height, cfg.fps)
        cap = cv2.VideoCapture(self.path, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceLost(f"{where}: cannot open (unplugged, busy or no permission)")
        self._cap = cap
        m = self.mode
        cap.set(cv2.CAP_PROP_FOURCC, _fourcc(m.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, m.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, m.height)
        cap.set(cv2.CAP_PROP_FPS, m.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 2)
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cc = int(cap.get(cv2.CAP_PROP_FOURCC))
        got_cc = "".join(chr((cc >> (8 * i)) & 0xFF) for i in range(4))
        if got != (m.width, m.height) or got_cc != m.fourcc:
            raise CameraFormatError(
                f"{where}: asked for {m.fourcc} {m.width}x{m.height}, the device set "
                f"{got_cc} {got[0]}x{got[1]}; see `roombox cameras` for its modes"
            )

    def grab(self) -> bool:
        if not os.path.exists(self.path):
            raise SourceLost(f"{self.path}: the device node is gone (unplugged)")
        return bool(self._cap.grab())

    def retrieve(self) -> np.ndarray:
        import cv2

        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None:
            raise SourceLost(f"{self.path}: a picture could not be decoded")
        return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def open_v4l2(cfg: V4l2CameraConfig, name: str = "camera", clock: Clock = SYSTEM_CLOCK) -> LatestFrameCamera:
    """A VideoSource over a V4L2 camera."""
    return LatestFrameCamera(name, V4l2Grabber(cfg, name), clock, stall_s=cfg.stall_s, open_timeout_s=20.0)


@register("camera", "v4l2", V4l2CameraConfig)
def open_v4l2_camera(name: str, cfg: V4l2CameraConfig, ctx: DriverContext) -> LatestFrameCamera:
    return open_v4l2(cfg, name, ctx.clock)
