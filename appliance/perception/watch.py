"""Detection and tracking on a schedule: ``FaceWatcher(detector, hfov_deg).detect(rgb, t) -> Faces``.

A :class:`FaceWatcher` is itself a :class:`appliance.ports.Detector`: call it at the detection rate
(``[detector] interval_s``), on a worker thread. It searches the whole frame every ``scan_interval_s`` (an
empty room too: that is its whole cost); in between, a detector that can
(:class:`~appliance.perception.yunet.YuNetDetector`) only looks again at full-resolution crops around the
faces being tracked, which costs a few crops instead of a frame. A new face is therefore found within
``scan_interval_s``; a known one is followed at every call. A face followed at the last call that its crop
no longer shows (it moved fast, or turned away) is looked for at once on a crop half as wide again, so a quick
lean does not lose its track. Detectors without ``refine`` (BlazeFace) search the whole frame at every call. After each
call, ``tracks`` holds the live tracks and ``track_ids`` the track of each face returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.config import BlazeFaceConfig, YuNetConfig
from appliance.messages import Box, Face, Faces
from appliance.perception.detectors import make_detector
from appliance.perception.tracking import FaceTracker, FaceTrackerConfig, Track
from appliance.perception.yunet import finish_faces
from appliance.ports import Detector
from common.geometry import PinholeCamera

LOST_WIDEN = 1.5  # a face lost from its crop is looked for on a crop this many times as wide


def _widen(box: Box, k: float) -> Box:
    x, y, w, h = box
    return (x + w / 2.0 - k * w / 2.0, y + h / 2.0 - k * h / 2.0, k * w, k * h)


class FaceWatcher:
    """A detector and a tracker, with whole-frame searches spaced ``scan_interval_s`` apart.

    ``hfov_deg`` is the camera's horizontal field of view (the tracks' directions); the tracker takes the
    frame size from the first frame, and starts afresh if the size changes.
    """

    def __init__(
        self,
        detector: Detector,
        hfov_deg: float = 90.0,
        scan_interval_s: float = 3.0,
        tracker: FaceTrackerConfig | None = None,
        min_score: float = 0.6,
    ) -> None:
        self.detector = detector
        self.hfov_deg = hfov_deg
        self.scan_interval_s = scan_interval_s
        self.min_score = min_score
        self._tracker_cfg = tracker or FaceTrackerConfig()
        self.tracker: FaceTracker | None = None
        self.tracks: list[Track] = []
        self.track_ids: list[int] = []
        self._last_scan = -float("inf")
        self._last_t = -float("inf")
        self.scans = 0
        self.widened = 0  # faces looked for again on a wider crop
        self.refines = 0

    @classmethod
    def from_config(
        cls, cfg: YuNetConfig | BlazeFaceConfig, hfov_deg: float, detector: Detector | None = None
    ) -> FaceWatcher:
        """The watcher for a ``[detector]`` section (its own detector from :func:`make_detector` unless given)."""
        scan = cfg.scan_interval_s if isinstance(cfg, YuNetConfig) else 0.0
        return cls(detector or make_detector(cfg), hfov_deg, scan, min_score=cfg.min_score)

    def detect(self, image: np.ndarray, t: float) -> Faces:
        return self.step(image, t)[0]

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> FaceWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self, rgb: np.ndarray, t: float) -> tuple[Faces, list[Track]]:
        """Faces found in the frame taken at ``t`` and the live tracks."""
        height, width = rgb.shape[:2]
        tracker = self.tracker
        if tracker is None or (tracker.camera.width, tracker.camera.height) != (width, height):
            tracker = self.tracker = FaceTracker(PinholeCamera(width, height, self.hfov_deg), self._tracker_cfg)
            self._last_scan = -float("inf")
        refine: Any = getattr(self.detector, "refine", None)
        live = tracker.tracks(t)
        if refine is None or t - self._last_scan >= self.scan_interval_s - 1e-9:
            faces = self.detector.detect(rgb, t)
            self._last_scan = t
            self.scans += 1
        else:
            found = refine(rgb, [tr.box for tr in live])
            self.refines += 1
            found = list(found)
            lost = [
                i
                for i, (f, tr) in enumerate(zip(found, live, strict=True))
                if (f is None or f.score < self.min_score)
                and tr.confirmed
                and abs(tr.missed_s - (t - self._last_t)) < 1e-6
            ]
            if lost:  # seen at the last call, not on its crop now: look again on a crop half as wide again
                self.widened += len(lost)
                wide = refine(rgb, [_widen(live[i].box, LOST_WIDEN) for i in lost])
                for i, f in zip(lost, wide, strict=True):
                    if f is not None and f.score >= self.min_score:
                        found[i] = f
            kept = [Face(f.box, f.score) for f in found if f is not None and f.score >= self.min_score]
            faces = finish_faces(kept, self.min_score, t, width, height)
        self._last_t = t
        self.tracks = tracker.update(faces)
        self.track_ids = list(tracker.last_ids)
        return faces, self.tracks
