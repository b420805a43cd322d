"""Whole-room face detection with MediaPipe's BlazeFace: ``FaceDetector(cfg).detect(rgb, t) -> Faces``.

BlazeFace sees the picture at 192x192 (full range) or 128x128 (short range), so in a 1920x1080 room shot a
face narrower than about a tenth of the searched area is lost. The detector therefore searches the whole
frame (large, near faces) and a grid of overlapping tiles (small, far faces), and merges the results.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import DetectorConfig, DetectorSection
from appliance.messages import Box, Face, Faces
from appliance.perception.facemodel import FaceModelError
from common.paths import data_dir

TILE_OVERLAP = 0.2  # fraction of a tile shared with its neighbour
MIN_TILE_PX = 256  # smaller tiles would be upscaled to the model's input: no gain, more false faces
_EDGE_PX = 2.0  # a box this close to a tile's inner edge is probably a cut face


def default_model_path(cfg: DetectorConfig) -> Path:
    """The provisioned model for ``cfg.model`` under the data directory."""
    return data_dir() / "models" / f"blazeface_{cfg.model}.tflite"


def tile_grid(
    width: int, height: int, cols: int, rows: int, overlap: float = TILE_OVERLAP, min_tile: int = MIN_TILE_PX
) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles (x, y, w, h) that cover a ``width`` x ``height`` picture, ``cols`` x ``rows``.

    A small picture gets fewer columns or rows, so that no tile is narrower or lower than ``min_tile``.
    """
    if cols < 1 or rows < 1:
        raise ValueError(f"tiles must be at least 1x1, got {cols}x{rows}")

    def spans(size: int, n: int) -> list[tuple[int, int]]:
        n = max(1, min(n, math.floor((size / min_tile - overlap) / (1 - overlap))))
        if n == 1:
            return [(0, size)]
        span = min(size, math.ceil(size / (n - (n - 1) * overlap)))
        return [(round(i * (size - span) / (n - 1)), span) for i in range(n)]

    return [(x, y, w, h) for y, h in spans(height, rows) for x, w in spans(width, cols)]


def _area(b: Box) -> float:
    return max(0.0, b[2]) * max(0.0, b[3])


def _inter(a: Box, b: Box) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def merge_faces(candidates: Sequence[tuple[Face, bool]], iou: float = 0.3, containment: float = 0.6) -> list[Face]:
    """Greedy non-maximum suppression over (face, cut) pairs; deterministic.

    A face is dropped when it overlaps a kept one by more than ``iou`` (intersection over union) or when
    more than ``containment`` of the smaller box lies in the other. Faces ``cut`` by a tile's inner edge
    come after whole ones whatever their scores, and are dropped if they touch a kept face at all (the
    model extrapolates a cut face's box, so it overlaps the whole one only in part). Ties go by position.
    """
    order = sorted(candidates, key=lambda fc: (fc[1], -fc[0].score, fc[0].box))
    kept: list[Face] = []
    for face, cut in order:
        for k in kept:
            i = _inter(face.box, k.box)
            small = min(_area(face.box), _area(k.box))
            if (
                (cut and i > 0)
                or i > iou * (_area(face.box) + _area(k.box) - i)
                or (small > 0 and i > containment * small)
            ):
                break
        else:
            kept.append(face)
    return sorted(kept, key=lambda f: (f.box[0], f.box[1]))


class FaceDetector:
    """BlazeFace through MediaPipe Tasks, on the whole frame and on ``cfg.tiles`` overlapping tiles.

    Not thread-safe: give each worker its own detector. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, model_path: Path | None = None, cfg: DetectorSection | None = None) -> None:
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        if cfg is not None and not isinstance(cfg, DetectorConfig):
            raise TypeError(
                f"BlazeFace's FaceDetector cannot run a {type(cfg).__name__}: use "
                "appliance.perception.detectors.make_detector"
            )
        self.cfg = cfg or DetectorConfig()
        self.model_path = Path(model_path) if model_path else default_model_path(self.cfg)
        if not self.model_path.is_file():
            raise FileNotFoundError(
                f"{self.model_path}: face-detection model missing; run scripts/setup "
                "(or python -m appliance.provision) to provision it"
            )
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=self.cfg.min_score,
        )
        try:
            self._task = vision.FaceDetector.create_from_options(options)
        except Exception as e:  # mediapipe raises RuntimeError/ValueError with its own status text
            raise FaceModelError(f"{self.model_path}: mediapipe cannot load this face model: {e}") from e

    def close(self) -> None:
        self._task.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(self, rgb: np.ndarray, t: float) -> Faces:
        """Faces in an RGB uint8 (height, width, 3) picture taken at ``t``; boxes in its pixels."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect wants RGB uint8 (height, width, 3), got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        candidates = [(f, False) for f in self._run(rgb, 0, 0)]
        cols, rows = self.cfg.tiles
        if cols * rows > 1:
            for x, y, w, h in tile_grid(width, height, cols, rows):
                inner = (x > 0, y > 0, x + w < width, y + h < height)
                for f in self._run(rgb[y : y + h, x : x + w], x, y):
                    candidates.append((f, _touches_inner_edge(f.box, (x, y, w, h), inner)))
        faces = []
        for f in merge_faces(candidates):
            box = _clip(f.box, width, height)
            if f.score >= self.cfg.min_score and box[2] >= 1 and box[3] >= 1:
                faces.append(Face(box=box, score=f.score))
        return Faces(t=t, faces=tuple(faces), width=width, height=height)

    def _run(self, rgb: np.ndarray, ox: int, oy: int) -> list[Face]:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._task.detect(image)
        out = []
        for d in result.detections:
            b = d.bounding_box
            score = max((c.score for c in d.categories), default=0.0)
            out.append(
                Face(
                    box=(float(b.origin_x + ox), float(b.origin_y + oy), float(b.width), float(b.height)),
                    score=float(score),
                )
            )
        return out


def _touches_inner_edge(box: Box, tile: tuple[int, int, int, int], inner: tuple[bool, bool, bool, bool]) -> bool:
    x, y, w, h = box
    tx, ty, tw, th = tile
    left, top, right, bottom = inner
    return (
        (left and x <= tx + _EDGE_PX)
        or (top and y <= ty + _EDGE_PX)
        or (right and x + w >= tx + tw - _EDGE_PX)
        or (bottom and y + h >= ty + th - _EDGE_PX)
    )


def _clip(box: Box, width: int, height: int) -> Box:
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(float(width), box[0] + box[2]), min(float(height), box[1] + box[3])
    return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))


def iter_face_records(
    image: Path | None,
    video: Path | None,
    cfg: DetectorSection | None = None,
    every: int = 1,
    model_path: Path | None = None,
    hfov_deg: float = 90.0,
) -> Iterator[dict[str, Any]]:
    """``Faces.to_json()`` records for one image (t = 0) or every ``every``-th frame of a video.

    ``cfg`` is any ``[detector]`` section (default: BlazeFace, as before detectors were plugins). On a
    video each face also gets ``"track"``, the id of the :class:`~appliance.perception.tracking.FaceTracker`
    track it belongs to (``hfov_deg``: the camera's field of view, for the tracks' directions).
    """
    from appliance.perception.detectors import make_detector
    from appliance.perception.tracking import FaceTracker
    from common.geometry import PinholeCamera
    from drivers.files import iter_video_frames, read_image

    cfg = cfg or DetectorConfig()

    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    if image is not None and video is None:
        frames: Iterator[tuple[float, np.ndarray]] = iter([(0.0, read_image(image))])
    elif video is not None and image is None:
        frames = ((f.t, f.image) for i, f in enumerate(iter_video_frames(video)) if i % every == 0)
    else:
        raise ValueError("give exactly one of an image or a video")
    detector = make_detector(cfg, model_path)
    try:
        if video is None:
            for t, rgb in frames:
                yield detector.detect(rgb, t).to_json()
            return
        tracker: FaceTracker | None = None
        for t, rgb in frames:
            faces = detector.detect(rgb, t)
            if tracker is None:
                tracker = FaceTracker(PinholeCamera(faces.width, faces.height, hfov_deg))
            tracker.update(faces)
            record = faces.to_json()
            for face, track_id in zip(record["faces"], tracker.last_ids, strict=True):
                face["track"] = track_id
            yield record
    finally:
        detector.close()
