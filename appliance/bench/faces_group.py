"""``roombox bench faces``: the real group photo composited into room shots, for each detector of the suite.

The photo (:mod:`appliance.bench.group_photo`, six real faces 84-110 px wide) is scaled so that its faces
fall in one size band (24-40, 40-80 or 80-200 px) and pasted at a random place on a drawn room of
:mod:`appliance.bench.faces_suite` (wall photos as distractors), in 1920x1080 and 3840x2160 frames. Each
detector (YuNet, plain and tiled BlazeFace) gets the same shots and is scored with the suite's rules
(:func:`~appliance.bench.faces_suite.match`): recall per band, false faces per 100 frames, CPU ms per
detection, and YuNet with tracks amortised per camera frame on the photo swaying (as the suite measures it).
These are rows of their own ("group photo"), not added to the suite's per-band totals.
"""

from __future__ import annotations

import time

import numpy as np

from appliance.bench.faces_suite import BANDS, CAMERA_FPS, DETECT_HZ, Row, _band, _detectors, _room, _watched, match
from appliance.bench.group_photo import GROUP_FACES, GROUP_IGNORE, group_photo

Box = tuple[float, float, float, float]

# photo scales per frame size: faces 25-33, 30-40 | 42-55, 59-77 | 84-110 (and 147-193 at 4K) px
SCALES: dict[tuple[int, int], tuple[float, ...]] = {
    (1920, 1080): (0.3, 0.36, 0.5, 0.7, 1.0),
    (3840, 2160): (0.3, 0.36, 0.5, 0.7, 1.0, 1.75),
}
WATCH_SCALE = 0.5


def group_shot(
    size: tuple[int, int], scale: float, seed: int = 0, photo: np.ndarray | None = None
) -> tuple[np.ndarray, list[Box], list[Box], list[bool]]:
    """The group photo scaled by ``scale`` and pasted on a drawn room of ``size`` at a place set by ``seed``.

    Returns the picture, the true face boxes, the boxes where a detection counts for nothing (a portrait on
    the photo's wall) and, for each face, whether it is turned (three-quarter view).
    """
    import cv2

    width, height = size
    rng = np.random.default_rng(seed)
    img = _room(width, height, rng)
    src = group_photo() if photo is None else photo
    pw, ph = round(src.shape[1] * scale), round(src.shape[0] * scale)
    if pw > width or ph > height:
        raise ValueError(f"the group photo at scale {scale} ({pw}x{ph}) does not fit in {width}x{height}")
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    x0, y0 = int(rng.integers(0, width - pw + 1)), int(rng.integers(0, height - ph + 1))
    img[y0 : y0 + ph, x0 : x0 + pw] = cv2.resize(src, (pw, ph), interpolation=interp)

    def place(b: Box) -> Box:
        return (x0 + b[0] * scale, y0 + b[1] * scale, b[2] * scale, b[3] * scale)

    return img, [place(b) for _, b, _ in GROUP_FACES], [place(b) for b in GROUP_IGNORE], [t for *_, t in GROUP_FACES]


def _kept(found: list[Box], ignore: list[Box]) -> list[Box]:
    """The detections whose centre is outside every ignored box."""
    return [
        f
        for f in found
        if not any(a <= f[0] + f[2] / 2 <= a + c and b <= f[1] + f[3] / 2 <= b + d for a, b, c, d in ignore)
    ]


def bench_group(quick: bool = False) -> list[Row]:
    """Recall per band, of the turned faces, false faces per 100 frames and CPU ms per detection."""
    photo = group_photo()
    per_scale = 1 if quick else 2
    rows: list[Row] = []
    per_frame = DETECT_HZ / CAMERA_FPS
    for size, scales in SCALES.items():
        peers: dict[str, float] = {}
        res = f"{size[1]}p" if size[1] < 2000 else "4K"
        shots = [
            group_shot(size, s, seed=1000 * k + i, photo=photo) for k, s in enumerate(scales) for i in range(per_scale)
        ]
        for name, make in _detectors():
            det = make()
            try:
                det.detect(shots[0][0], 0.0)  # warm-up
                t0 = time.process_time()
                found = [det.detect(img, float(i)) for i, (img, *_) in enumerate(shots)]
                ms = (time.process_time() - t0) * 1000.0 / len(shots)
            finally:
                det.close()
            hits = [[0, 0] for _ in BANDS]
            turned = [0, 0]
            false = 0
            for faces, (_, truth, ignore, is_turned) in zip(found, shots, strict=True):
                hit, nf = match(_kept([f.box for f in faces.faces], ignore), truth)
                false += nf
                for h, b, tn in zip(hit, truth, is_turned, strict=True):
                    hits[_band(b[2])][0] += h
                    hits[_band(b[2])][1] += 1
                    if tn:
                        turned[0] += h
                        turned[1] += 1
            label = f"{name} {res} group photo"
            for (lo, hi), (nh, n) in zip(BANDS, hits, strict=True):
                if n:
                    rows.append((f"{label} recall {lo:.0f}-{hi:.0f} px ({n} faces)", round(100.0 * nh / n, 1), "%"))
            rows.append(
                (f"{label} recall of turned faces ({turned[1]} faces)", round(100.0 * turned[0] / turned[1], 1), "%")
            )
            rows.append(
                (f"{label} false faces ({len(shots)} frames)", round(100.0 * false / len(shots), 1), "per 100 frames")
            )
            rows.append((f"{label} search", round(ms, 1), "cpu ms/detection"))
            rows.append((f"{label} every detection a search, 5 Hz", round(ms * per_frame, 2), "cpu ms/frame"))
            peers[name] = ms * per_frame
        # YuNet with the watcher (search every 3 s, crops in between) on the photo swaying, faces 42-55 px
        watched = _watched(
            size, res, quick, shot=group_shot(size, WATCH_SCALE, seed=7, photo=photo)[:2], label=" group photo"
        )
        rows += watched
        for name in ("blazeface", "blazeface 5x3 tiles"):
            rows.append(
                (f"yunet+tracks / {name} {res} group photo, per frame", round(watched[0][1] / peers[name], 2), "x")
            )
    return rows
