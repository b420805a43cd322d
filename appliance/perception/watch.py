"""Detection and tracking on a schedule: ``FaceWatcher(detector, camera).step(rgb, t) -> (Faces, tracks)``.

Call :meth:`FaceWatcher.step` at the detection rate (``[detector] interval_s``), off the event loop. It
searches the whole frame every ``scan_interval_s`` (an empty room too: its cost is the search's); in between, a detector
that can (:class:`~appliance.perception.yunet.YuNetDetector`) only looks again at full-resolution crops
around the faces being tracked, which costs a few crops instead of a frame. A new face is therefore found
within ``scan_interval_s``; a known one is followed at every step. Detectors without ``refine`` (BlazeFace)
search the whole frame at every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.config import BlazeFaceConfig, YuNetConfig
from appliance.messages import Face, Faces
from appliance.perception.detectors import Detector
from appliance.perception.tracking import FaceTracker, Track, TrackerConfig
from appliance.perception.yunet import finish_faces
from common.geometry import PinholeCamera


class FaceWatcher:
    """A detector and a tracker, with whole-frame searches spaced ``scan_interval_s`` apart."""

    def __init__(self, detector: Detector, camera: PinholeCamera, scan_interval_s: float = 3.0,
                 tracker: TrackerConfig | None = None, min_score: float = 0.6) -> None:
        self.detector = detector
        self.tracker = FaceTracker(camera, tracker)
        self.scan_interval_s = scan_interval_s
        self.min_score = min_score
        self._last_scan = -float("inf")
        self.scans = 0
        self.refines = 0

    @classmethod
    def from_config(cls, detector: Detector, camera: PinholeCamera,
                    cfg: YuNetConfig | BlazeFaceConfig) -> FaceWatcher:
        scan = cfg.scan_interval_s if isinstance(cfg, YuNetConfig) else 0.0
        return cls(detector, camera, scan, min_score=cfg.min_score)

    def step(self, rgb: np.ndarray, t: float) -> tuple[Faces, list[Track]]:
        """Faces found in the frame taken at ``t`` (each face's track id in ``self.tracker.last_ids``) and the
        live tracks."""
        refine: Any = getattr(self.detector, "refine", None)
        live = self.tracker.tracks(t)
        if refine is None or t - self._last_scan >= self.scan_interval_s - 1e-9:
            faces = self.detector.detect(rgb, t)
            self._last_scan = t
            self.scans += 1
        else:
            found = refine(rgb, [tr.box for tr in live])
            self.refines += 1
            kept = [Face(f.box, f.score) for f in found if f is not None and f.score >= self.min_score]
            height, width = rgb.shape[:2]
            faces = finish_faces(kept, self.min_score, t, width, height)
        return faces, self.tracker.update(faces)
