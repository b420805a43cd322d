"""The per-frame step: faces, DOA blocks and a frame's time in; the shot out. Pure: no clock, no I/O.

The live box (:mod:`appliance.box`) and the offline run (:mod:`appliance.process`) both drive one
:class:`FrameStep`, so every figure ``roombox process`` measures holds for the live box:

- DOA blocks are queued as they come (:meth:`FrameStep.add_doas`); a frame at ``t`` takes those that ended at
  or before ``t`` (a block stamped later waits for a later frame);
- a detection falls due every ``[detector] interval_s`` of frame time (:meth:`FrameStep.detection_due`);
  its faces are handed to the first step after they are found;
- the director is made for the frame size it sees first, and made again when the size changes or the camera
  restarts (:meth:`FrameStep.restart`); the mode and the microphones' mute chosen on the panel carry over;
- the director follows face tracks: the detections it is handed are tracked
  (:class:`~appliance.perception.tracking.FaceTracker`), or tracks made elsewhere are handed in directly;
- the faces' lips are read on every frame (:class:`~appliance.perception.lips.LipWatch`) and handed to the
  director with the frame's DOA blocks;
- every DOA block's azimuth is mapped through the mic array's calibration (``[calibration]``,
  :mod:`appliance.calibration`) as it is queued: the director sees directions in the camera's frame
  (:meth:`FrameStep.to_camera`). A new calibration alone does not restart the director.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from appliance.calibration import Calibration, fit
from appliance.config import Config
from appliance.director import Director, Policy
from appliance.messages import Doa, Faces, Shot
from appliance.perception.lips import LipReading, LipWatch
from appliance.perception.tracking import Track
from common.geometry import PinholeCamera

_EPS = 1e-6


class FrameStep:
    """One camera's director with its detection schedule and DOA intake."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.director: Director | None = None
        self._size: tuple[int, int] | None = None
        self._doas: deque[Doa] = deque()
        self._next_detect = -math.inf
        self._policy: Policy = cfg.director.mode
        self._muted = False
        self.calibration = calibration_of(cfg)
        self.lips = LipWatch()

    def reconfigure(self, cfg: Config) -> None:
        """Take a new config: the next frame gets a director made with it (the chosen mode stays). A change
        of the calibration alone keeps the director."""
        only_calibration = cfg.model_copy(update={"calibration": self.cfg.calibration}) == self.cfg
        self.cfg = cfg
        self.calibration = calibration_of(cfg)
        if only_calibration:
            return
        if self.director is not None and self.director.policy != "manual":
            self._policy = self.director.policy
        self.director, self._size = None, None

    def set_mode(self, policy: Policy, now: float) -> None:
        """The framing mode from the panel (:meth:`appliance.director.Director.set_mode`)."""
        if self.director is not None:
            self.director.set_mode(policy, now)
        elif policy not in ("speaker", "group", "gallery", "off"):
            raise ValueError(f"mode {policy!r} needs a picture first")
        if policy != "manual":
            self._policy = policy  # kept for a director made anew (a restarted camera); manual is not

    def set_muted(self, muted: bool, now: float) -> None:
        """The room's microphones muted (or on again) from the panel
        (:meth:`appliance.director.Director.set_muted`): the group shot, and every shot says so."""
        self._muted = bool(muted)
        if self.director is not None:
            self.director.set_muted(self._muted, now)

    @property
    def muted(self) -> bool:
        return self._muted

    def manual_view(self, pan: float, tilt: float, zoom: float, now: float) -> None:
        """Manual pan-tilt-zoom from the panel (:meth:`appliance.director.Director.manual_view`)."""
        if self.director is None:
            raise ValueError("no picture yet: manual framing needs the camera running")
        self.director.manual_view(pan, tilt, zoom, now)

    @property
    def policy(self) -> Policy:
        return self.director.policy if self.director is not None else self._policy

    def restart(self) -> None:
        """The camera started again: a new director, and a detection on the next frame."""
        self.director, self._size, self._next_detect = None, None, -math.inf
        self.lips = LipWatch()

    def to_camera(self, doas: Iterable[Doa]) -> list[Doa]:
        """DOA blocks with their azimuths mapped through the calibration (the same blocks without one)."""
        cal = self.calibration
        if cal is None:
            return list(doas)
        return [d if d.azimuth_deg is None else replace(d, azimuth_deg=cal.to_camera(d.azimuth_deg)) for d in doas]

    def add_doas(self, doas: Iterable[Doa]) -> list[Doa]:
        """Queue DOA blocks (in the order they ended), mapped to the camera's frame (:meth:`to_camera`);
        returns them as queued."""
        mapped = self.to_camera(doas)
        self._doas.extend(mapped)
        return mapped

    def detection_due(self, t: float) -> bool:
        """Whether a detection should start on the frame at ``t``; when it says yes, the next one falls due
        ``interval_s`` later. The live box asks only while no detection is running."""
        if t < self._next_detect - _EPS:
            return False
        self._next_detect = t + self.cfg.detector.interval_s
        return True

    def step(
        self,
        t: float,
        width: int,
        height: int,
        faces: Faces | None,
        tracks: Sequence[Track] | None = None,
        image: npt.NDArray[np.uint8] | None = None,
        lips: Sequence[LipReading] | None = None,
    ) -> Shot:
        """The shot for the frame at ``t`` (``width`` x ``height``), with new ``faces`` if a detection ended
        (tracked by the director), or the live face ``tracks`` made elsewhere (then ``faces`` is not used).

        ``image`` (the frame, RGB): the faces' lips are read on it (:meth:`read_lips`); ``lips``: readings
        made elsewhere, by :meth:`read_lips` on the same frames (the director bench caches them)."""
        if self.director is None or self._size != (width, height):
            cam = PinholeCamera(width, height, self.cfg.camera.hfov_deg)
            self.director = Director(cam, self.cfg.director, self.cfg.stream.width / self.cfg.stream.height)
            if self._policy != self.cfg.director.mode:
                self.director.set_mode(self._policy, t)
            if self._muted:
                self.director.set_muted(True, t)
            self._size = (width, height)
        due: list[Doa] = []
        while self._doas and self._doas[0].t <= t + 1e-9:
            due.append(self._doas.popleft())
        if lips is None:
            lips = self.read_lips(t, image, faces, tracks) if image is not None and self.cfg.director.lips else ()
        if tracks is not None:
            return self.director.step_tracks(tracks, due, t, lips)
        return self.director.step(faces, due, t, lips)

    def read_lips(
        self, t: float, image: npt.NDArray[np.uint8], faces: Faces | None, tracks: Sequence[Track] | None = None
    ) -> list[LipReading]:
        """The lips of the latest detection's faces (``faces`` or ``tracks``: a new detection) on the frame at
        ``t``; :meth:`step` reads them when ``[director] lips`` is on."""
        if tracks is not None:
            self.lips.set_boxes([tr.box for tr in tracks])
        elif faces is not None:
            self.lips.set_boxes([f.box for f in faces.faces])
        return self.lips.look(t, image)


def _for_running_array(cfg: Config) -> bool:
    """Whether ``[calibration]`` was captured with the mic array in use (or names none)."""
    c = cfg.calibration
    return not c.mic_array or c.mic_array == next(iter(cfg.mic_arrays))


def gain_of(cfg: Config) -> float:
    """The gain (dB) on the array's audio in force: ``[calibration] gain_db`` when the calibration was captured
    with the mic array in use (or names none), else 0."""
    return float(cfg.calibration.gain_db) if _for_running_array(cfg) else 0.0


def calibration_of(cfg: Config) -> Calibration | None:
    """The mic array's calibration in force: ``[calibration] points`` when they were captured with the mic
    array in use (or name none), else None."""
    c = cfg.calibration
    if not c.points or not _for_running_array(cfg):
        return None
    return fit(c.points, c.limits)
