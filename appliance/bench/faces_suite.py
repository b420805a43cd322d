"""``roombox bench faces``: YuNet beside plain and tiled BlazeFace on composited room shots, and track figures.

Room shots: a drawn room (wall, table, photos from scikit-image on the wall as distractors) with real face
photos composited on it (scikit-image's astronaut and LFW faces, as heads from the simulated room's
``drivers.simroom.faces``), faces 24-200 px wide, in 1920x1080 and 3840x2160 frames. Each detector gets the
same shots: recall per face-size band, false faces per 100 frames, and milliseconds per detection (CPU time
of the process, all its threads: on a shared, loaded machine wall-clock time says more about the
neighbours than about the detector; BlazeFace's peer figures are measured the same way). The cost
per camera frame is amortised at a 5 Hz detection rate on a 30 fps camera (6 frames per detection),
tracking included; YuNet's runs with :class:`~appliance.perception.watch.FaceWatcher` (a whole-frame search
every ``scan_interval_s``, tracked faces refined on crops in between) on a sequence of swaying shots.
The real group photo's shots, scored the same way, are in :mod:`appliance.bench.faces_group`.

Track figures: a scripted 5-minute meeting of six seated people (sway, leaning, turning away, missed and
false detections, one 1 s miss each) and a poster on the wall through :class:`FaceTracker`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from appliance.config import BlazeFaceConfig, YuNetConfig
from appliance.messages import Box, Face, Faces
from appliance.perception.detectors import Detector
from appliance.perception.tracking import FaceTracker, FaceTrackerConfig
from common.geometry import PinholeCamera

Row = tuple[str, float, str]
BANDS = ((24.0, 40.0), (40.0, 80.0), (80.0, 200.0))
DETECT_HZ, CAMERA_FPS = 5.0, 30.0
_WALL_PHOTOS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "coins", "brick")


def _face_sources(rng: np.random.Generator, n: int) -> list[str]:
    # lfw_subset: the first 100 are faces; the astronaut now and then
    return ["astronaut" if rng.random() < 0.15 else f"lfw:{int(rng.integers(0, 100))}" for _ in range(n)]


def _room(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A drawn meeting room: shaded wall, framed photos on it, a table."""
    import cv2
    from skimage import data

    k = width / 1920.0
    wall = np.linspace(170.0, 120.0, height)[:, None, None] + rng.uniform(-15, 15, 3)
    img = np.broadcast_to(wall, (height, width, 3)) + rng.normal(0.0, 3.0, (height, width, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(3):  # photos on the wall: things a detector must not call faces
        photo = getattr(data, str(rng.choice(_WALL_PHOTOS)))()
        if photo.ndim == 2:
            photo = np.repeat(photo[:, :, None], 3, axis=2)
        pw = int(rng.uniform(150, 320) * k)
        ph = int(pw * photo.shape[0] / photo.shape[1])
        x, y = int(rng.uniform(0, width - pw)), int(rng.uniform(0, height * 0.35))
        img[y : y + ph, x : x + pw] = cv2.resize(photo[:, :, :3], (pw, ph), interpolation=cv2.INTER_AREA)
    top = int(height * 0.72)
    img[top:] = (np.array([95, 70, 50]) + rng.normal(0, 4, (height - top, width, 3))).clip(0, 255)
    return img


def room_shot(
    size: tuple[int, int], face_widths: Sequence[float], seed: int = 0, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, list[Box]]:
    """A room shot of ``size`` with real faces of the given widths; returns the picture and the face boxes.

    Heads are placed without overlap (deterministic for ``seed``); ``shift`` moves them all by (dx, dy) px,
    for a sequence of frames of the same people swaying.
    """
    from drivers.simroom.faces import head_patch

    width, height = size
    rng = np.random.default_rng(seed)
    img = _room(width, height, rng).astype(np.float32)
    sources = _face_sources(rng, len(face_widths))
    taken: list[tuple[float, float, float, float]] = []
    boxes: list[Box] = []
    for fw, src in sorted(zip(face_widths, sources, strict=True), reverse=True):
        head = head_patch(src, round(fw))
        ph, pw = head.rgb.shape[:2]
        for _ in range(200):
            x = float(rng.uniform(0, width - pw - 1))
            y = float(rng.uniform(height * 0.1, max(height * 0.1 + 1, height * 0.9 - ph)))
            if all(x + pw < a or a + c < x or y + ph < b or b + d < y for a, b, c, d in taken):
                break
        taken.append((x - 8, y - 8, pw + 16, ph + 16))
        xi = int(min(max(0.0, x + shift[0]), width - pw - 1))
        yi = int(min(max(0.0, y + shift[1]), height - ph - 1))
        region = img[yi : yi + ph, xi : xi + pw]
        img[yi : yi + ph, xi : xi + pw] = region * (1.0 - head.alpha) + head.rgb
        fx, fy, fww, fh = head.face_box
        boxes.append((xi + fx, yi + fy, fww, fh))
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def _widths(rng: np.random.Generator, per_band: Sequence[int]) -> list[float]:
    out = []
    for (lo, hi), n in zip(BANDS, per_band, strict=True):
        out += [float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) for _ in range(n)]
    return out


def match(found: Sequence[Box], truth: Sequence[Box]) -> tuple[list[bool], int]:
    """(whether each true face was found, number of false faces). A detection finds a face when its centre
    lies within half the face's width of the face's centre and its width is within a factor 2."""
    used = [False] * len(found)
    hit = []
    for tx, ty, tw, th in truth:
        best, best_d = -1, math.inf
        for i, (x, y, w, h) in enumerate(found):
            d = math.hypot(x + w / 2 - tx - tw / 2, y + h / 2 - ty - th / 2)
            if not used[i] and d <= 0.5 * tw and 0.5 <= w / tw <= 2.0 and d < best_d:
                best, best_d = i, d
        if best >= 0:
            used[best] = True
        hit.append(best >= 0)
    return hit, used.count(False)


def _band(w: float) -> int:
    return next((i for i, (lo, hi) in enumerate(BANDS) if w < hi), len(BANDS) - 1)


def _detectors() -> list[tuple[str, Callable[[], Detector]]]:
    from appliance.perception.detectors import make_detector

    return [
        ("yunet", lambda: make_detector(YuNetConfig())),
        ("blazeface", lambda: make_detector(BlazeFaceConfig(tiles=(1, 1)))),
        ("blazeface 5x3 tiles", lambda: make_detector(BlazeFaceConfig(tiles=(5, 3)))),
    ]


def bench_detectors(quick: bool = False) -> list[Row]:
    """Recall per band, false faces per 100 frames and ms per detection; amortised ms per camera frame."""
    shots = 3 if quick else 12
    rows: list[Row] = []
    per_frame = DETECT_HZ / CAMERA_FPS
    for size in ((1920, 1080), (3840, 2160)):
        peers: dict[str, float] = {}
        res = f"{size[1]}p" if size[1] < 2000 else "4K"
        rng = np.random.default_rng(size[0])
        pictures = [room_shot(size, _widths(rng, (3, 3, 2)), seed=100 * size[0] + i) for i in range(shots)]
        for name, make in _detectors():
            det = make()
            try:
                det.detect(pictures[0][0], 0.0)  # warm-up
                hits = [[0, 0] for _ in BANDS]
                false = 0
                t0, w0 = time.process_time(), time.perf_counter()
                found = [det.detect(img, float(i)) for i, (img, _) in enumerate(pictures)]
                ms = (time.process_time() - t0) * 1000.0 / len(pictures)
                wall = (time.perf_counter() - w0) * 1000.0 / len(pictures)
            finally:
                det.close()
            for faces, (_, truth) in zip(found, pictures, strict=True):
                hit, nf = match([f.box for f in faces.faces], truth)
                false += nf
                for h, b in zip(hit, truth, strict=True):
                    hits[_band(b[2])][0] += h
                    hits[_band(b[2])][1] += 1
            for (lo, hi), (nh, n) in zip(BANDS, hits, strict=True):
                rows.append((f"{name} {res} recall {lo:.0f}-{hi:.0f} px ({n} faces)", round(100.0 * nh / n, 1), "%"))
            rows.append((f"{name} {res} false faces", round(100.0 * false / len(pictures), 1), "per 100 frames"))
            rows.append((f"{name} {res} search", round(ms, 1), "cpu ms/detection"))
            rows.append((f"{name} {res} search, wall clock", round(wall, 1), "ms/detection"))
            rows.append((f"{name} {res} every detection a search, 5 Hz", round(ms * per_frame, 2), "cpu ms/frame"))
            peers[name] = ms * per_frame
        watched = _watched(size, res, quick)
        rows += watched
        ours = watched[0][1]
        for name in ("blazeface", "blazeface 5x3 tiles"):
            rows.append((f"yunet+tracks / {name} {res}, per frame", round(ours / peers[name], 2), "x"))
    return rows


def _watched(
    size: tuple[int, int], res: str, quick: bool, shot: tuple[np.ndarray, list[Box]] | None = None, label: str = ""
) -> list[Row]:
    """YuNet with the watcher over a swaying sequence at 5 Hz: amortised ms per camera frame and recall.

    The sequence sways ``shot`` (picture, face boxes), by default a room shot of six faces, two per band;
    ``label`` goes after the resolution in the rows' names."""
    from appliance.perception.watch import FaceWatcher
    from appliance.perception.yunet import YuNetDetector

    cfg = YuNetConfig()
    steps = 30 if quick else 150  # whole multiples of the 3 s search interval
    if shot is None:
        shot = room_shot(size, _widths(np.random.default_rng(7), (2, 2, 2)), seed=11)
    room, boxes = shot
    res += label
    frames = []
    for k in range(steps):  # the room sways: the whole picture moves a few pixels, faces with it
        t = k / DETECT_HZ
        dx, dy = round(6.0 * math.sin(2 * math.pi * t / 4.0)), round(3.0 * math.sin(2 * math.pi * t / 3.0))
        frames.append((t, np.roll(room, (dy, dx), axis=(0, 1)), [(x + dx, y + dy, w, h) for x, y, w, h in boxes]))
    with YuNetDetector(cfg) as det:
        det.detect(frames[0][1], 0.0)  # warm-up
        watcher = FaceWatcher.from_config(cfg, 90.0, det)
        ids: list[list[int]] = [[] for _ in boxes]
        hits = total = false = 0
        t0, w0 = time.process_time(), time.perf_counter()
        results = []
        for t, img, _ in frames:
            faces, _tracks = watcher.step(img, t)
            results.append((faces, list(watcher.track_ids)))
        ms = (time.process_time() - t0) * 1000.0 / steps
        wall = (time.perf_counter() - w0) * 1000.0 / steps
    for (faces, last), (_, _, truth) in zip(results, frames, strict=True):
        hit, nf = match([f.box for f in faces.faces], truth)
        hits += sum(hit)
        total += len(truth)
        false += nf
        for p, tb in enumerate(truth):
            for f, tid in zip(faces.faces, last, strict=True):
                if match([f.box], [tb])[0][0]:
                    ids[p].append(tid)
    switches = sum(sum(a != b for a, b in zip(s, s[1:], strict=False)) for s in ids)
    per_frame = DETECT_HZ / CAMERA_FPS
    return [
        (
            f"yunet+tracks {res} {steps} steps at 5 Hz, search every {cfg.scan_interval_s:g} s",
            round(ms * per_frame, 2),
            "cpu ms/frame",
        ),
        (f"yunet+tracks {res} the same, wall clock", round(wall * per_frame, 2), "ms/frame"),
        (f"yunet+tracks {res} recall over the sequence ({total} faces)", round(100.0 * hits / total, 1), "%"),
        (f"yunet+tracks {res} false faces", round(100.0 * false / steps, 1), "per 100 frames"),
        (f"yunet+tracks {res} identity switches", float(switches), "switches"),
    ]


# ---- the scripted meeting: tracker figures without a detector ----


def scripted_meeting(
    duration_s: float = 300.0, seed: int = 1, people: int = 6
) -> tuple[list[Faces], list[list[int]], list[tuple[float, float]]]:
    """Detections at 5 Hz of ``people`` seated people and a poster, 1920x1080.

    Returns the frames' Faces, for each frame the person index of each face (-1 poster, -2 false), and each
    person's forced 1 s miss (start, end).
    """
    rng = np.random.default_rng(seed)
    xs = np.linspace(260, 1660, people)
    sizes = rng.uniform(40, 90, people)
    ys = 430 + rng.uniform(-40, 40, people)
    phase = rng.uniform(0, 2 * math.pi, (people, 2))
    misses = [(20.0 + 40.0 * p, 21.0 + 40.0 * p) for p in range(people)]
    turned = [0.0] * people
    lean = [(0.0, 0.0, 0.0)] * people  # start, end, direction
    frames, who = [], []
    for k in range(int(duration_s * DETECT_HZ)):
        t = k / DETECT_HZ
        faces: list[Face] = []
        labels: list[int] = []
        for p in range(people):
            s = sizes[p]
            if rng.random() < 0.01:  # leans towards a neighbour for a few seconds
                lean[p] = (t, t + rng.uniform(2, 6), float(rng.choice([-1.0, 1.0])))
            if rng.random() < 0.01:  # turns away
                turned[p] = t + rng.uniform(0.3, 1.2)
            ls, le, ld = lean[p]
            amount = 0.0 if not ls <= t <= le else min(1.0, (t - ls), (le - t)) * 0.6 * ld * s
            cx = xs[p] + amount + 0.15 * s * math.sin(0.7 * t + phase[p, 0])
            cy = ys[p] + 0.08 * s * math.sin(0.5 * t + phase[p, 1]) + abs(amount) * 0.3
            if t < turned[p] or misses[p][0] <= t < misses[p][1] or rng.random() < 0.1:
                continue
            w = s * (1 + rng.normal(0, 0.05))
            faces.append(Face((cx + rng.normal(0, 0.03 * s) - w / 2, cy + rng.normal(0, 0.03 * s) - w / 2, w, w), 0.9))
            labels.append(p)
        if rng.random() < 0.97:  # the poster
            faces.append(Face((1780.0, 150.0, 60.0, 60.0), 0.8))
            labels.append(-1)
        if rng.random() < 0.01:  # a false face somewhere
            faces.append(Face((float(rng.uniform(0, 1800)), float(rng.uniform(0, 1000))) + (50.0, 50.0), 0.65))
            labels.append(-2)
        frames.append(Faces(t=t, faces=tuple(faces), width=1920, height=1080))
        who.append(labels)
    return frames, who, misses


def bench_tracks(quick: bool = False) -> list[Row]:
    duration = 300.0
    frames, who, misses = scripted_meeting(duration)
    tracker = FaceTracker(PinholeCamera(1920, 1080, 90.0), FaceTrackerConfig())
    people = max(max((p for p in w), default=0) for w in who) + 1
    ids: list[list[tuple[float, int]]] = [[] for _ in range(people)]
    poster_still = 0.0
    person_still: list[float] = []
    t0 = time.process_time()
    for faces, labels in zip(frames, who, strict=True):
        tracks = tracker.update(faces)
        by_id = {tr.id: tr for tr in tracks}
        for label, tid in zip(labels, tracker.last_ids, strict=True):
            if label >= 0 and by_id[tid].confirmed:  # a switch is a change of confirmed identity
                ids[label].append((faces.t, tid))
                person_still.append(by_id[tid].still_s)
            elif label == -1:
                poster_still = by_id[tid].still_s
    ms = (time.process_time() - t0) * 1000.0 / len(frames)
    switches = sum(sum(a[1] != b[1] for a, b in zip(s, s[1:], strict=False)) for s in ids)
    survived = 0
    for p, (m0, m1) in enumerate(misses):
        before = [i for t, i in ids[p] if t < m0]
        after = [i for t, i in ids[p] if t >= m1]
        survived += bool(before and after and before[-1] == after[0])
    return [
        (
            f"tracks: identity switches, {people} seated people, {duration / 60:.0f} min scripted meeting",
            float(switches),
            "switches",
        ),
        (f"tracks: survived a 1 s miss (of {people})", float(survived), "tracks"),
        ("tracks: poster's still time at the end", round(poster_still, 1), "s"),
        ("tracks: people's still time, 95th percentile", round(float(np.percentile(person_still, 95)), 1), "s"),
        ("tracks: update, 7 faces", round(ms, 3), "cpu ms/detection"),
    ]
