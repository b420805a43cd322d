"""The program picture: what the meeting sees when a PTZ camera follows the director.

With ``[ptz_follow] enabled`` and the followed head's ``[ptz.NAME] camera = "CAM"``, the head's own camera
(``[cameras.CAM]``) is opened too. The director still frames on the main (wide) camera; the meeting sees the
PTZ camera's picture, scaled to ``[stream]`` width x height by a **centre crop** (no black bars; the head
is zoomed to the crop's horizontal span, so a camera at the stream's aspect loses nothing, a 4:3 one its
top and bottom). :class:`ProgramCamera` holds that source and says whether it is *live*: it delivered a
picture within ``program_timeout_s`` and the head answers (the follower is connected). While it is not
live (its source raised :class:`drivers.base.SourceLost` and is being retried, it stalls, or the head is
lost and so not where the director wants), the box puts the wide camera's crop instead, from its next
frame on, and goes back to the PTZ picture with the first one the camera delivers while live again.

:class:`appliance.box.RoomBox` pumps the source as the supervised device ``program_camera`` and reports
which picture goes out in :class:`appliance.messages.Stats` ``program`` ("ptz" or "crop").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.config import Config
from appliance.framing import render_crop
from appliance.ports import FrameSink
from common.clock import SYSTEM_CLOCK, Clock
from drivers.base import Frame, VideoSource
from drivers.registry import DriverContext, open_device


def centre_box(width: int, height: int, out_w: int, out_h: int) -> tuple[int, int, int, int]:
    """The largest (x, y, w, h) of a ``width`` x ``height`` picture at the aspect of ``out_w`` x ``out_h``,
    centred."""
    if width * out_h > height * out_w:  # wider than the output: cut the sides
        w = max(1, round(height * out_w / out_h))
        return (width - w) // 2, 0, w, height
    h = max(1, round(width * out_h / out_w))
    return 0, (height - h) // 2, width, h


def fill(image: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """``image`` at ``out_w`` x ``out_h``: its centre at the output's aspect, scaled."""
    return render_crop(image, centre_box(image.shape[1], image.shape[0], out_w, out_h), out_w, out_h)


class ProgramCamera:
    """The PTZ camera's picture as the program, while it is live.

    :meth:`take` is the handler of the source's frames (the box pumps ``source``); :meth:`gone` is called
    when the source stops delivering (lost, stopped). ``head`` says whether the PTZ head answers (None:
    no head to ask)."""

    def __init__(
        self,
        source: VideoSource,
        frames: FrameSink,
        width: int,
        height: int,
        clock: Clock = SYSTEM_CLOCK,
        timeout_s: float = 1.0,
        head: Callable[[], bool] | None = None,
    ) -> None:
        self.source, self.frames, self.width, self.height = source, frames, width, height
        self.clock, self.timeout_s, self.head = clock, timeout_s, head
        self._last = -math.inf  # when (clock) the source last delivered
        self.received = 0  # pictures the PTZ camera delivered
        self.shown = 0  # ... of which the meeting saw (put to ``frames``)

    def live(self) -> bool:
        """The PTZ picture is the program: a picture within ``timeout_s``, and the head answers."""
        if self.clock.now() - self._last > self.timeout_s:
            return False
        return self.head is None or self.head()

    def take(self, frame: Frame) -> None:
        self.received += 1
        self._last = self.clock.now()
        if self.live():
            self.frames.put(fill(frame.image, self.width, self.height), frame.t)
            self.shown += 1

    def gone(self) -> None:
        """The source stopped delivering: the crop goes out from the wide camera's next frame."""
        self._last = -math.inf


def program_from_config(
    cfg: Config,
    frames: FrameSink,
    context: DriverContext | None = None,
    head: Callable[[], bool] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> ProgramCamera | None:
    """The program camera ``[ptz_follow]`` implies (the followed ``[ptz.NAME]``'s ``camera``, opened through the
    driver registry, not started), or None when ``[ptz_follow]`` is off or its head names no camera.
    ``head`` is typically ``lambda: follower.connected``."""
    f = cfg.ptz_follow
    head_name = cfg.followed_ptz
    if not f.enabled or head_name is None:
        return None
    name: Any = getattr(cfg.ptz[head_name], "camera", None)
    if name is None:
        return None
    source = open_device("camera", name, cfg.cameras[name], context or DriverContext(clock=clock))
    s = cfg.stream
    return ProgramCamera(source, frames, s.width, s.height, clock, f.program_timeout_s, head)
