"""Face-detection figures for ``roombox bench faces``, and the composited room shot the tests use.

``room_picture`` pastes a real photo's face at known places and sizes on a wall; ``bench_faces`` times the
whole-frame pass against the whole frame plus tiles on it and counts what each finds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.config import DetectorConfig
from appliance.messages import Box
from appliance.perception.faces import FaceDetector, _area, _inter


def room_picture(
    face_widths: Sequence[float] = (48, 64, 80, 120, 160), size: tuple[int, int] = (1920, 1080), seed: int = 0
) -> tuple[np.ndarray, list[Box]]:
    """A composited room shot: a wall with the astronaut's head pasted at known places and sizes.

    Returns the RGB picture and the true face boxes. Deterministic for a given ``seed``.
    """
    import cv2
    from skimage import data

    width, height = size
    rng = np.random.default_rng(seed)
    wall = np.linspace(150.0, 105.0, height)[:, None, None] + np.array([12.0, 0.0, -12.0])
    img = np.broadcast_to(wall, (height, width, 3)) + rng.normal(0.0, 3.0, (height, width, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    # the face is (34, 40, 104, 104) inside this crop of the astronaut
    head = data.astronaut()[30:230, 140:310]  # type: ignore[no-untyped-call]
    boxes: list[Box] = []
    slot = width / max(1, len(face_widths))
    for k, fw in enumerate(face_widths):
        s = fw / 104.0
        patch = cv2.resize(head, (round(170 * s), round(200 * s)), interpolation=cv2.INTER_AREA)
        ph, pw = patch.shape[:2]
        x = int(k * slot + (slot - pw) * rng.uniform(0.2, 0.8))
        y = int((height - ph) * rng.uniform(0.25, 0.75))
        img[y : y + ph, x : x + pw] = patch[: height - y, : width - x]
        boxes.append((x + 34 * s, y + 40 * s, 104 * s, 104 * s))
    return img, boxes


def bench_faces(
    cfg: DetectorConfig | None = None, frames: int | None = None, model_path: Path | None = None, quick: bool = False
) -> list[tuple[str, float, str]]:
    """Rows (name, value, unit) timing full-frame-only against full-frame + tiles on :func:`room_picture`.

    ``frames`` detections are timed for each (default 3 when ``quick``, else 10), after one warm-up.
    """
    cfg = cfg or DetectorConfig()
    frames = frames or (3 if quick else 10)
    img, truth = room_picture()
    cols, rows = cfg.tiles
    results: list[tuple[float, int]] = []
    for tiles in ((1, 1), (cols, rows)):
        with FaceDetector(model_path, cfg.model_copy(update={"tiles": tiles})) as det:
            det.detect(img, 0.0)  # warm-up
            t0 = time.perf_counter()
            for i in range(frames):
                faces = det.detect(img, float(i))
            ms = (time.perf_counter() - t0) * 1000.0 / frames
        found = sum(any(_inter(f.box, b) > 0.5 * _area(b) for f in faces.faces) for b in truth)
        results.append((ms, found))
    (full_ms, full_n), (tiled_ms, tiled_n) = results
    return [
        (f"faces {cfg.model} full frame", round(full_ms, 1), "ms/frame"),
        (f"faces {cfg.model} full frame + {cols}x{rows} tiles", round(tiled_ms, 1), "ms/frame"),
        ("faces tiled / full frame", round(tiled_ms / full_ms, 2), "x"),
        (f"faces found full frame ({len(truth)} pasted)", float(full_n), "faces"),
        (f"faces found tiled ({len(truth)} pasted)", float(tiled_n), "faces"),
    ]


def bench_faces_section(quick: bool = False) -> list[tuple[str, float, str]]:
    from appliance.bench.faces_group import bench_group
    from appliance.bench.faces_meeting import bench_meeting
    from appliance.bench.faces_suite import bench_detectors, bench_tracks

    return (
        bench_detectors(quick=quick) + bench_group(quick=quick) + bench_tracks(quick=quick) + bench_meeting(quick=quick)
    )
