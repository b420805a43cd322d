"""YuNet face detection (OpenCV's ``cv2.FaceDetectorYN``): ``YuNetDetector(cfg).detect(rgb, t) -> Faces``.

A search costs in proportion to the pixels searched, so the frame is searched on a downscaled copy (long side
``cfg.long_side``, 960 by default: the 1080p search costs a quarter of a full-size one and a 4K search
costs the same as a 1080p one; a frame where ``min_face_px`` would shrink under 12 px is searched at a larger
scale). Faces that come out small (under ``refine_below_px``) or uncertain (``candidate_score`` to
``min_score``) there are looked at again on full-resolution crops around them, all crops in one mosaic and
one network pass: such a face is kept when the crop finds it with ``min_score`` and either scale saw it with
``confirm_score``, with the crop's box. Candidates from both scales go through one non-maximum suppression.

:meth:`YuNetDetector.refine` is the same full-resolution look on boxes given from outside (the faces being
tracked), so that between whole-frame searches a tracker can follow faces for the price of a few crops.

The model file ships in ``appliance/perception/models/`` (with its licence) and is checked by sha256 when a
detector is created. OpenCV runs on one thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import YuNetConfig
from appliance.messages import Box, Face, Faces
from appliance.perception.facemodel import FaceModelError
from appliance.perception.faces import merge_faces
from common.pinned import read_pinned

MODEL_PATH = Path(__file__).parent / "models" / "yunet_s_640_640.onnx"
MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"

TOO_SMALL = 0.75  # a box under this fraction of min_face_px is dropped (a bowl, a button: never a face to frame)
MIN_SEEN_PX = 12.0  # a face narrower than this on the searched copy is mostly lost
CELL_PX = 80  # side of one crop in the refinement mosaic
GAP_PX = 16  # grey after each crop, so that no detection spans two; CELL_PX + GAP_PX is a multiple of
# YuNet's largest stride (32), so that every crop meets the network's grid the same way wherever it lies
CONTEXT = 2.0  # a crop is this many face sizes wide: YuNet wants some head around a face
MAX_ZOOM = 3.0  # a crop is enlarged at most this much
MOSAIC_COLS = 8
MAX_REFINE = 32  # crops per pass, the highest-scoring candidates first
MIN_CROP_FACE_PX = 28.0  # a crop is made as if the face were at least this wide (px of the frame)
SAME_FACE_DIST = 0.75  # a face found on a crop is the one asked about when its centre is this many sizes near
SAME_FACE_RATIO = 2.5  # ... and its size within this factor


def load_model(path: Path = MODEL_PATH, sha256: str = MODEL_SHA256) -> bytes:
    """The model's bytes, after checking them against ``sha256``; a missing or damaged file is a clear error."""
    return read_pinned(path, sha256, "the YuNet face model", FaceModelError)


class YuNetDetector:
    """YuNet on a downscaled copy of the frame, with small or uncertain faces refined at full resolution.

    Not thread-safe: give each worker its own detector. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, cfg: YuNetConfig | None = None, model_path: Path | None = None, sha256: str = MODEL_SHA256
    ) -> None:
        import cv2

        self.cfg = cfg or YuNetConfig()
        self.model_path = Path(model_path) if model_path else MODEL_PATH
        data = load_model(self.model_path, sha256)
        cv2.setNumThreads(1)
        quiet = cv2.utils.logging.getLogLevel()
        # OpenCV 5's DNN says on every creation that its new engine ignores the (default) target: not ours to fix
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net: Any = cv2.FaceDetectorYN.create(
                "onnx",
                np.frombuffer(data, np.uint8),
                np.empty(0, np.uint8),
                (320, 320),
                self.cfg.candidate_score,
                0.3,
                5000,
            )
        except cv2.error as e:
            raise FaceModelError(f"{self.model_path}: OpenCV cannot load this YuNet model: {e}") from None
        finally:
            cv2.utils.logging.setLogLevel(quiet)
        self._size = (320, 320)
        self.searches = 0  # whole-frame searches made
        self.refined = 0  # crops looked at

    def close(self) -> None:
        self._net = None

    def __enter__(self) -> YuNetDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scale_for(self, width: int, height: int) -> float:
        """The factor the frame is shrunk by for the whole-frame search (1 = full size)."""
        scale = min(1.0, self.cfg.long_side / max(width, height))
        return min(1.0, max(scale, MIN_SEEN_PX / self.cfg.min_face_px))

    def detect(self, rgb: np.ndarray, t: float) -> Faces:
        """Faces in an RGB uint8 (height, width, 3) picture taken at ``t``; boxes in its pixels."""
        import cv2

        _check_image(rgb)
        height, width = rgb.shape[:2]
        scale = self.scale_for(width, height)
        if scale < 1.0:
            small = cv2.resize(
                rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
            )
        else:
            small = rgb
        sx, sy = width / small.shape[1], height / small.shape[0]
        self.searches += 1
        least = TOO_SMALL * self.cfg.min_face_px  # far below the smallest face looked for: not a face to frame
        coarse = [
            Face((x * sx, y * sy, w * sx, h * sy), s)
            for x, y, w, h, s in self._run(small)
            if max(w * sx, h * sy) >= least
        ]
        doubtful = [
            i
            for i, f in enumerate(coarse)
            if f.score < self.cfg.min_score or max(f.box[2], f.box[3]) < self.cfg.refine_below_px
        ]
        doubtful.sort(key=lambda i: -coarse[i].score)  # the most promising first
        doubtful = doubtful[:MAX_REFINE]
        second = set(doubtful)
        faces = [f for i, f in enumerate(coarse) if i not in second]
        for i, better in zip(doubtful, self.refine(rgb, [coarse[i].box for i in doubtful]), strict=True):
            # the crop decides: found there with min_score, and seen with confirm_score at either scale
            if (
                better is not None
                and better.score >= self.cfg.min_score
                and max(better.score, coarse[i].score) >= self.cfg.confirm_score
            ):
                faces.append(Face(better.box, max(better.score, coarse[i].score)))
        kept = [f for f in faces if max(f.box[2], f.box[3]) >= least]
        return finish_faces(kept, self.cfg.min_score, t, width, height)

    def refine(self, rgb: np.ndarray, boxes: Sequence[Box]) -> list[Face | None]:
        """For each box, the face YuNet finds on a full-resolution crop around it (None when none is there).

        All crops go through the network at once, side by side in one mosaic. A face found counts for a box
        when its centre is within ``SAME_FACE_DIST`` of the box's size of the box's centre and its size is
        within a factor ``SAME_FACE_RATIO``.
        """
        import cv2

        _check_image(rgb)
        if not boxes:
            return []
        height, width = rgb.shape[:2]
        n = len(boxes)
        cols = min(n, MOSAIC_COLS)
        rows = math.ceil(n / cols)
        pitch = CELL_PX + GAP_PX
        mosaic = np.full((rows * pitch, cols * pitch, 3), 114, np.uint8)
        places: list[tuple[float, float, float, int, int]] = []  # crop x0, y0 in the frame, zoom, cell x, y
        for k, (bx, by, bw, bh) in enumerate(boxes):
            size = max(bw, bh, MIN_CROP_FACE_PX)  # a box from a tiny candidate may be too small or off
            zoom = min(MAX_ZOOM, CELL_PX / (CONTEXT * size))
            side = CELL_PX / zoom
            x0, y0 = bx + bw / 2.0 - side / 2.0, by + bh / 2.0 - side / 2.0
            cx, cy = (k % cols) * pitch, (k // cols) * pitch
            places.append((x0, y0, zoom, cx, cy))
            ix0, iy0 = max(0, math.ceil(x0)), max(0, math.ceil(y0))
            ix1, iy1 = min(width, math.floor(x0 + side)), min(height, math.floor(y0 + side))
            if ix1 - ix0 < 2 or iy1 - iy0 < 2:
                continue
            # the part of the crop inside the frame, resized so that frame pixel (ix0, iy0) lands where it should
            dx0, dy0 = max(0, round((ix0 - x0) * zoom)), max(0, round((iy0 - y0) * zoom))
            dw = min(CELL_PX - dx0, max(1, round((ix1 - ix0) * zoom)))
            dh = min(CELL_PX - dy0, max(1, round((iy1 - iy0) * zoom)))
            if dw < 1 or dh < 1:
                continue
            interp = cv2.INTER_AREA if zoom < 1.0 else cv2.INTER_LINEAR
            part = cv2.resize(rgb[iy0:iy1, ix0:ix1], (dw, dh), interpolation=interp)
            mosaic[cy + dy0 : cy + dy0 + dh, cx + dx0 : cx + dx0 + dw] = part
        self.refined += n
        best: list[Face | None] = [None] * n
        for x, y, w, h, s in self._run(mosaic):
            mx, my = x + w / 2.0, y + h / 2.0
            col, row = int(mx // pitch), int(my // pitch)
            k = row * cols + col
            if not (0 <= col < cols and 0 <= k < n):
                continue
            x0, y0, zoom, cx, cy = places[k]
            face = Face((x0 + (x - cx) / zoom, y0 + (y - cy) / zoom, w / zoom, h / zoom), s)
            if _same_face(face.box, boxes[k]) and (best[k] is None or s > best[k].score):  # type: ignore[union-attr]
                best[k] = face
        return best

    def _run(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """(x, y, w, h, score) of each face YuNet finds in ``rgb`` (its pixels), at or above candidate_score."""
        import cv2

        if self._net is None:
            raise RuntimeError("this YuNetDetector is closed")
        size = (rgb.shape[1], rgb.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, found = self._net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if found is None:
            return []
        return [(float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[14])) for r in found]


def _check_image(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"detect wants RGB uint8 (height, width, 3), got {rgb.dtype} {rgb.shape}")


def _same_face(found: Box, wanted: Box) -> bool:
    fx, fy = found[0] + found[2] / 2.0, found[1] + found[3] / 2.0
    wx, wy = wanted[0] + wanted[2] / 2.0, wanted[1] + wanted[3] / 2.0
    size = max(wanted[2], wanted[3], 1.0)
    ratio = max(found[2], found[3], 1e-3) / size
    return (
        math.hypot(fx - wx, fy - wy) <= SAME_FACE_DIST * max(size, MIN_CROP_FACE_PX)
        and 1 / SAME_FACE_RATIO <= ratio <= SAME_FACE_RATIO
    )


def finish_faces(faces: Sequence[Face], min_score: float, t: float, width: int, height: int) -> Faces:
    """Faces at or above ``min_score``, one per person (non-maximum suppression), clipped to the frame."""
    kept = []
    for f in merge_faces([(f, False) for f in faces if f.score >= min_score]):
        x0, y0 = max(0.0, f.box[0]), max(0.0, f.box[1])
        x1, y1 = min(float(width), f.box[0] + f.box[2]), min(float(height), f.box[1] + f.box[3])
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            kept.append(Face((x0, y0, x1 - x0, y1 - y0), min(1.0, f.score)))
    return Faces(t=t, faces=tuple(kept), width=width, height=height)
