"""``roombox bench director``: the director over many rendered meetings on a grid of rooms, beside two
reference directors scored the same way.

Each meeting (:func:`drivers.simroom.meetings.make_meeting`: 3-8 people around a table, turns with gaps and
overlaps, A-B-A-B exchanges, the far end on a ceiling loudspeaker at a seated person's azimuth, a face
print on the back wall, a latecomer walking in) is rendered once as a
1080p15 video with its ground truth; its sound is rendered for each RT60 of the grid by the simulated
room's acoustics (:func:`drivers.simroom.audio.render_shoebox`) and mixed at each SNR with the hearing
bench's noise (diffuse HVAC noise and a projector fan, together ``snr_db`` below the speech power) and
impulses (the door as the latecomer comes in, a cough, typing); what the loudspeaker played is the
recording's ``reference.wav``, which the box's hearing takes as ``roombox process --reference`` does. The
array is a 4-mic square (``respeaker4`` of the hearing bench; ``python -m appliance.bench.director --array
circle6`` for another) 10 cm below the camera.

Three directors run on each recording and produce the same track lines as ``roombox process``, scored by
:func:`appliance.score.score` (``roombox score``):

- ``box``: the box's own pipeline exactly as ``roombox process`` runs it (:class:`appliance.step.FrameStep`
  fed by the configured hearing and :class:`~appliance.perception.watch.FaceWatcher`, on the same frames; the
  detections are cached per video, as they do not depend on the sound, and one recording per run is also
  processed by :func:`appliance.process.run_offline` itself, timed, and compared line by line);
- ``naive``: on every frame, a cut to the face nearest the direction of the loudest speech block (plain
  SRP-PHAT blocks, ``[doa] estimator = "srp-phat"``: the peak of each block, no tracking), no hold;
- ``oracle``: knows from the ground truth who talks, frames them (from the same detections) with the
  config's hold times (``min_hold_s``, ``silence_to_group_s``).

Renders are cached under ``<data dir>/cache/director`` (``ROOMBOX_DIRECTOR_CACHE``) by a hash of the meeting.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.bench.hearing import ARRAYS, SPEECH_DBFS, fan_sound, impulse_sound
from appliance.config import Config, DirectorConfig, DoaConfig, parse_config
from appliance.messages import Doa, Face, Faces
from appliance.perception.lips import LipReading
from appliance.score import Score, pooled, score
from common.atomic import write_atomic
from common.geometry import PinholeCamera, fit_aspect
from drivers.simroom.meetings import Meeting, MeetingRenderer, make_meeting

Row = tuple[str, float, str]

RT60S = (0.2, 0.4, 0.6, 0.8)
SNRS = (20.0, 10.0, 5.0)
SEEDS = (0, 1, 2)
RATE = 16000
SENSOR_NOISE_DBFS = -85.0
ARRAY = "respeaker4"  # the 4-mic square of the hearing bench; any of its ARRAYS can be chosen


def positions(array: str) -> list[tuple[float, float, float]]:
    """The hearing bench's array ``array``, 10 cm below the camera (camera frame: x right, y up, z forward)."""
    if array not in ARRAYS:
        raise ValueError(f"no array {array!r}: choose from {', '.join(ARRAYS)}")
    return [(x, y - 0.1, z) for x, y, z in ARRAYS[array]]


DIRECTORS = ("box", "naive", "oracle")
SOUND_VERSION = 2  # bump when the sound of a meeting changes: old cached sound is then ignored
# the detections are cached per video under a hash of the detector's config and of these modules' source
DETECTOR_MODULES = ("detectors", "watch", "yunet", "faces", "tracking", "facemodel", "lips")


@dataclass(frozen=True)
class Cell:
    rt60_s: float
    snr_db: float
    seed: int

    @property
    def name(self) -> str:
        return f"rt60 {self.rt60_s:.1f} snr {self.snr_db:g}"


@dataclass(frozen=True)
class Plan:
    """What a run measures: the cells, each seed's meeting length, and the picture size."""

    cells: tuple[Cell, ...]
    duration_s: Callable[[int], float]
    width: int = 1920
    height: int = 1080
    fps: float = 15.0
    n_people: int | None = None
    array: str = ARRAY


def full_duration(seed: int) -> float:
    """2-5 minutes, drawn from the seed."""
    return float(np.random.default_rng([seed, 5]).uniform(120.0, 300.0))


def plan(quick: bool = False) -> Plan:
    """The full grid (RT60 x SNR x 3 meetings of 2-5 min) or the quick one (2 cells, one 45 s meeting)."""
    if quick:
        return Plan((Cell(0.4, 20.0, 0), Cell(0.6, 10.0, 0), Cell(0.8, 5.0, 0)), lambda seed: 45.0)
    cells = tuple(Cell(rt, snr, seed) for seed in SEEDS for rt in RT60S for snr in SNRS)
    return Plan(cells, full_duration)


def cache_dir() -> Path:
    from common.paths import cache_dir as shared_cache_dir

    return shared_cache_dir("director", "ROOMBOX_DIRECTOR_CACHE")


# ---------------------------------------------------------------------------------------------------------
# rendering


@dataclass
class Recording:
    """One meeting's files: the video, the truth and the config (shared by its cells), and a cell's sound."""

    dir: Path
    audio: Path
    cfg: Config
    truth: list[dict[str, Any]]
    reference: Path | None = None  # what the far-end loudspeaker played (``reference.wav``), if it played

    @property
    def video(self) -> Path:
        return self.dir / "room.mp4"


def _meeting(seed: int, p: Plan) -> Meeting:
    mics = positions(p.array)
    return make_meeting(seed, p.duration_s(seed), p.n_people, p.width, p.height, p.fps, mics, sample_rate=RATE)


def _activity(meeting: Meeting) -> dict[str, list[tuple[float, float]]]:
    """Who speaks when at the array (dry speech, delayed by the propagation time), as the simulated room's
    own rendering computes it."""
    from drivers.simroom.audio import SPEED_OF_SOUND, dry_speech, speech_intervals

    scn = meeting.scenario
    centre = np.array(scn.mic_positions_room()).mean(axis=0)
    out = {}
    for p in scn.people:
        if p.id in meeting.prints:
            continue
        delay = float(np.linalg.norm(np.array(scn.mouth_room(p)) - centre)) / SPEED_OF_SOUND
        out[p.id] = speech_intervals(dry_speech(scn, p), scn.mic_array.sample_rate, offset_s=delay)
    return out


def render_video(meeting: Meeting, root: Path) -> Path:
    """The meeting's ``room.mp4``, ``truth.jsonl`` and ``config.toml`` under ``root/<key>`` (cached)."""
    from drivers.simroom.export import device_config_toml, write_video

    out = root / meeting.key()
    if (out / "room.mp4").is_file() and (out / "truth.jsonl").is_file() and (out / "config.toml").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    scn = meeting.scenario
    renderer = MeetingRenderer(meeting)
    n_frames = max(1, int(scn.duration_s * scn.camera.fps + 1e-9))
    write_video(renderer, out / "room.mp4", n_frames, scn.camera.fps)
    rows = meeting.truth_rows(renderer, _activity(meeting), n_frames)
    write_atomic(out / "truth.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_atomic(out / "config.toml", device_config_toml(scn))
    return out


def render_sound(meeting: Meeting, rt60_s: float, snrs: Sequence[float], out: Path) -> dict[float, Path]:
    """The array's sound for ``rt60_s`` at each SNR (``array-<rt60>-<snr>.wav`` in ``out``, cached)."""
    from drivers.simroom.audio import diffuse_noise, dry_speech, farend_track, playback_reference, render_shoebox
    from drivers.simroom.export import write_wav16

    paths = {snr: out / f"array-v{SOUND_VERSION}-{rt60_s:.2f}-{snr:g}.wav" for snr in snrs}
    if all(p.is_file() for p in paths.values()):
        return paths
    scn = meeting.scenario
    w, d, h = scn.room.size_m
    n = round(scn.duration_s * RATE)
    mics = np.array(scn.mic_positions_room(), np.float64)
    rng = np.random.default_rng([meeting.seed, int(rt60_s * 1000)])
    sources: list[tuple[np.ndarray, np.ndarray]] = []
    activity = _activity(meeting)
    for p in scn.people:
        x = dry_speech(scn, p)
        if p.id not in meeting.prints and np.any(x):
            sources.append((np.array(scn.mouth_room(p)), x))
    n_talk = len(sources)
    track = farend_track(scn)
    if scn.loudspeaker is not None and track is not None:  # the far end: as loud as a talker at level_db 0
        sources.append((np.array(scn.loudspeaker.position_m), track * 10 ** (scn.loudspeaker.level_db / 20)))
        write_wav16(out / "reference.wav", playback_reference(track)[:, None], RATE)
    n_voiced = len(sources)
    fan_at = np.array([w / 2 + rng.uniform(-0.5, 0.5), 2.5, h - 0.35])
    sources.append((fan_at, fan_sound(n, RATE, rng)))
    door_t = min((e.t_s - 0.3 for e in meeting.entries.values()), default=rng.uniform(0.2, 0.8) * scn.duration_s)
    events = [
        ("door", max(0.0, door_t), np.array([w - 0.75, d - 0.3, 1.0]), 6.0),
        ("cough", rng.uniform(0.1, 0.9) * scn.duration_s, np.array([w / 2 + 0.9, 2.0, 1.1]), 0.0),
        ("typing", rng.uniform(0.1, 0.9) * scn.duration_s, np.array([w / 2 - 0.6, 2.2, 0.78]), -6.0),
    ]
    spans = []
    for kind, onset, at, _ in events:
        s = impulse_sound(kind, RATE, rng)
        x = np.zeros(n)
        i = int(onset * RATE)
        m = max(0, min(len(s), n - i))
        x[i : i + m] = s[:m]
        sources.append((at, x))
        spans.append((i, i + m))
    wet = render_shoebox(scn.room.size_m, rt60_s, mics, RATE, sources, n, rng)
    speech = np.sum(wet[:n_talk], axis=0) if n_talk else np.zeros((n, len(mics)))
    far = np.sum(wet[n_talk:n_voiced], axis=0) if n_voiced > n_talk else np.zeros((n, len(mics)))
    active = np.zeros(n, bool)
    for talk in activity.values():
        for a, b in talk:
            active[int(a * RATE) : int(b * RATE)] = True
    p_speech = float(np.mean(speech[active] ** 2)) if active.any() else 1e-6
    gain = 10 ** (SPEECH_DBFS / 20) / math.sqrt(p_speech)
    fan = wet[n_voiced] / math.sqrt(float(np.mean(wet[n_voiced] ** 2)))
    bumps = np.zeros((n, len(mics)))
    for (a, b), y, (_, _, _, level_db) in zip(spans, wet[n_voiced + 1 :], events, strict=True):
        seg = y[a:b]
        if seg.size:
            bumps += y * math.sqrt(p_speech * 10 ** (level_db / 10) / (float(np.mean(seg**2)) + 1e-20))
    diffuse = diffuse_noise(mics, n, RATE, rng).astype(np.float64)
    sensor = rng.standard_normal((n, len(mics))) * 10 ** (SENSOR_NOISE_DBFS / 20)
    for snr, path in paths.items():
        noise = math.sqrt(p_speech / 10 ** (snr / 10) / 2)
        mix = (speech + far + bumps + noise * (fan + diffuse)) * gain + sensor
        write_wav16(path, np.clip(mix, -1.0, 1.0).astype(np.float32), RATE)
    return paths


def recordings(p: Plan, root: Path | None = None) -> Iterable[tuple[Cell, Recording]]:
    """Each cell's recording, rendered or from the cache; seed by seed, one RT60 rendered for all SNRs."""
    from drivers.files import read_jsonl

    root = cache_dir() if root is None else root
    meetings: dict[int, Meeting] = {}
    for cell in p.cells:
        if cell.seed not in meetings:
            meetings[cell.seed] = _meeting(cell.seed, p)
        m = meetings[cell.seed]
        out = render_video(m, root)
        snrs = sorted({c.snr_db for c in p.cells if (c.seed, c.rt60_s) == (cell.seed, cell.rt60_s)})
        audio = render_sound(m, cell.rt60_s, snrs, out)[cell.snr_db]
        cfg = parse_config(tomllib.loads((out / "config.toml").read_text()), str(out / "config.toml"))
        ref = out / "reference.wav"
        rec = Recording(out, audio, cfg, list(read_jsonl(out / "truth.jsonl")), ref if ref.is_file() else None)
        yield cell, rec


# ---------------------------------------------------------------------------------------------------------
# the directors


@dataclass(frozen=True)
class FrameInfo:
    t: float
    width: int
    height: int
    faces: Faces | None  # the detection that ended on this frame, if one was due
    lips: tuple[LipReading, ...] = ()  # the lips of the latest detection's faces, read on this frame


def detections(rec: Recording) -> tuple[list[FrameInfo], float]:
    """Every frame's time and size and the faces of the detections due on it, as ``roombox process`` runs
    them (the FrameStep's schedule, one FaceWatcher), cached in ``faces.jsonl`` next to the video; and the
    seconds the detector took (0 when cached)."""
    from appliance.perception.watch import FaceWatcher
    from appliance.step import FrameStep
    from drivers.files import iter_video_frames

    path = rec.dir / f"faces-{_detector_key(rec.cfg)}.jsonl"
    if path.is_file():
        out = []
        for line in path.read_text().splitlines():
            r = json.loads(line)
            g = r["f"]
            faces = (
                None if g is None else Faces(g["t"], tuple(Face(tuple(b[:4]), b[4]) for b in g["b"]), g["w"], g["h"])
            )
            lips = tuple(LipReading((x[0], x[1], x[2], x[3]), x[4]) for x in r.get("l", ()))
            out.append(FrameInfo(r["t"], r["w"], r["h"], faces, lips))
        return out, 0.0
    cfg = rec.cfg
    step = FrameStep(cfg)
    detector = FaceWatcher.from_config(cfg.detector, cfg.camera.hfov_deg)
    spent = 0.0
    out = []
    try:
        for frame in iter_video_frames(rec.video):
            faces = None
            if step.detection_due(frame.t):
                began = time.perf_counter()
                faces = detector.detect(frame.image, frame.t)
                spent += time.perf_counter() - began
            lips = tuple(step.read_lips(frame.t, frame.image, faces))
            out.append(FrameInfo(frame.t, frame.width, frame.height, faces, lips))
    finally:
        detector.close()
    lines = [
        json.dumps(
            {
                "t": f.t,
                "w": f.width,
                "h": f.height,
                "f": _faces_json(f.faces),
                "l": [[*x.box, x.activity] for x in f.lips],
            }
        )
        for f in out
    ]
    write_atomic(path, "\n".join(lines) + "\n")
    return out, spent


def _detector_key(cfg: Config) -> str:
    import hashlib

    import appliance.perception as perception

    h = hashlib.sha256(cfg.detector.model_dump_json().encode())
    for name in DETECTOR_MODULES:
        src = Path(perception.__file__).parent / f"{name}.py"
        h.update(src.read_bytes() if src.is_file() else name.encode())
    return h.hexdigest()[:16]


def _faces_json(faces: Faces | None) -> dict[str, Any] | None:
    """Faces at full precision (their wire form rounds the boxes, which would move the crops)."""
    if faces is None:
        return None
    return {"t": faces.t, "b": [[*f.box, f.score] for f in faces.faces], "w": faces.width, "h": faces.height}


def hear(rec: Recording, doa: DoaConfig | None = None) -> list[Doa]:
    """The configured hearing over the cell's sound, as ``roombox process`` feeds it (``doa``: another
    ``[doa]`` section)."""
    from appliance.perception.hearing import make_ears
    from appliance.perception.listening import read_reference
    from drivers.files import read_array_wav

    cfg = rec.cfg
    samples = read_array_wav(rec.audio, cfg.mic_array)
    playback = None if rec.reference is None else read_reference(rec.reference, samples, cfg.mic_array.sample_rate)
    return list(make_ears(cfg.mic_array, doa or cfg.doa, cfg.tracker).feed(samples, 0.0, playback))


def box_track(cfg: Config, frames: Sequence[FrameInfo], doas: Sequence[Doa]) -> list[dict[str, Any]]:
    """The box's track: :class:`FrameStep` on the frames with the detections and DOA blocks, as in
    :func:`appliance.process.run_offline`."""
    from appliance.step import FrameStep

    step = FrameStep(cfg)
    step.add_doas(doas)
    out = []
    for f in frames:
        step.detection_due(f.t)  # keeps the schedule as the offline run does
        record = step.step(f.t, f.width, f.height, f.faces, lips=f.lips).to_json()
        if f.faces is not None:
            record["faces"] = [x.to_json() for x in f.faces.faces]
        out.append(record)
    return out


class _Framer:
    """The speaker and group crops the way the director frames them (face widths, headroom, margins)."""

    def __init__(self, cfg: Config, width: int, height: int) -> None:
        self.cam = PinholeCamera(width, height, cfg.camera.hfov_deg)
        self.d: DirectorConfig = cfg.director
        self.aspect = cfg.stream.width / cfg.stream.height

    def speaker(self, face: Face) -> list[int]:
        cam, min_w = self.cam, self.d.min_crop_frac * self.cam.width
        x, y, w, h = face.box
        cw = max(w * self.d.face_widths, min_w)
        crop = fit_aspect(x + w / 2, y + h / 2 + 0.1 * cw / self.aspect, cw, self.aspect, cam.width, cam.height, min_w)
        return _even(crop)

    def group(self, faces: Sequence[Face]) -> list[int]:
        cam, min_w = self.cam, self.d.min_crop_frac * self.cam.width
        if not faces:
            return _even(fit_aspect(cam.cx, cam.cy, float(cam.width), self.aspect, cam.width, cam.height, min_w))
        boxes = np.array([f.box for f in faces])
        fw = float(np.median(boxes[:, 2]))
        m = self.d.group_margin * fw + fw
        x0, x1 = boxes[:, 0].min() - m, (boxes[:, 0] + boxes[:, 2]).max() + m
        y0, y1 = boxes[:, 1].min() - m, (boxes[:, 1] + boxes[:, 3]).max() + 2 * m
        cw = max(x1 - x0, (y1 - y0) * self.aspect)
        return _even(fit_aspect((x0 + x1) / 2, (y0 + y1) / 2, cw, self.aspect, cam.width, cam.height, min_w))

    def azimuth(self, face: Face) -> float:
        return self.cam.azimuth_of_column(face.center[0])


def _even(crop: tuple[float, float, float, float]) -> list[int]:
    x, y, w, h = (int(round(v)) for v in crop)
    return [x, y, w - (w % 2), h - (h % 2)]


def _record(t: float, crop: list[int], mode: str, cut: bool, reason: str) -> dict[str, Any]:
    return {"t": round(t, 4), "crop": crop, "mode": mode, "reason": reason, "cut": cut}


def naive_track(cfg: Config, frames: Sequence[FrameInfo], doas: Sequence[Doa]) -> list[dict[str, Any]]:
    """The naive director: each frame, the loudest speech block that arrived (by its level) picks the face
    nearest its direction (within ``match_deg``), and the shot cuts to that face at once; no hold."""
    out: list[dict[str, Any]] = []
    if not frames:
        return out
    fr = _Framer(cfg, frames[0].width, frames[0].height)
    faces: tuple[Face, ...] = ()
    target: float | None = None  # the framed face's azimuth
    crop, mode, i = fr.group(()), "wide", 0
    for f in frames:
        cut = False
        if f.faces is not None:
            faces = f.faces.faces
        due = []
        while i < len(doas) and doas[i].t <= f.t + 1e-9:
            due.append(doas[i])
            i += 1
        speech = [d for d in due if d.speech and d.azimuth_deg is not None]
        if speech and faces:
            loud = max(speech, key=lambda d: d.level_db)
            assert loud.azimuth_deg is not None
            near = min(faces, key=lambda x: abs(fr.azimuth(x) - float(loud.azimuth_deg)))  # type: ignore[arg-type]
            if abs(fr.azimuth(near) - loud.azimuth_deg) <= cfg.director.match_deg:
                cut = target is None or not _same(fr, near, target)
                target, mode = fr.azimuth(near), "speaker"
        if mode == "speaker" and target is not None and faces:
            followed = min(faces, key=lambda x: abs(fr.azimuth(x) - target))  # type: ignore[operator]
            if abs(fr.azimuth(followed) - target) <= cfg.director.match_deg:
                target = fr.azimuth(followed)
                crop = fr.speaker(followed)
        elif mode == "wide" and faces:
            crop = fr.group(faces)
        out.append(_record(f.t, crop, mode, cut, "naive: loudest direction"))
    return out


def _same(fr: _Framer, face: Face, target_az: float) -> bool:
    """Whether ``face`` is the framed person (the same face moved a little since the last detection)."""
    return abs(fr.azimuth(face) - target_az) < 2.0


def oracle_track(cfg: Config, frames: Sequence[FrameInfo], truth: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The oracle: who talks comes from the ground truth; it cuts to the talker (found among the detected
    faces by their true face box) once the shot has been held ``min_hold_s``, stays on a talker who keeps
    talking, and shows the group after ``silence_to_group_s`` without speech."""
    out: list[dict[str, Any]] = []
    if not frames:
        return out
    fr = _Framer(cfg, frames[0].width, frames[0].height)
    d = cfg.director
    tt = np.array([float(r["t"]) for r in truth])
    faces: tuple[Face, ...] = ()
    target: str | None = None
    mode, last_cut, last_speech = "wide", -math.inf, -math.inf
    started: dict[str, float] = {}
    crop = fr.group(())

    def face_of(pid: str, row: dict[str, Any]) -> Face | None:
        box = next((p["box"] for p in row["people"] if p["id"] == pid), None)
        if box is None or not faces:
            return None
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        best = min(faces, key=lambda x: math.hypot(x.center[0] - cx, x.center[1] - cy))
        ok = math.hypot(best.center[0] - cx, best.center[1] - cy) <= max(box[2], best.box[2])
        return best if ok else None

    for f in frames:
        if f.faces is not None:
            faces = f.faces.faces
        row = truth[int(np.argmin(np.abs(tt - f.t)))]
        talkers = [str(k) for k in row["talkers"]]
        started = {k: started.get(k, f.t) for k in talkers}
        cut, held = False, f.t - last_cut
        if talkers:
            last_speech = f.t
            if target not in talkers:
                for pid in sorted(talkers, key=lambda k: started[k]):
                    if face_of(pid, row) is not None and (held >= d.min_hold_s or mode != "speaker"):
                        target, mode, last_cut, cut = pid, "speaker", f.t, True
                        break
        elif mode == "speaker" and f.t - last_speech >= d.silence_to_group_s and held >= d.min_hold_s:
            target, mode, last_cut, cut = None, "group", f.t, True
        if mode == "wide" and faces:
            mode, last_cut, cut = "group", f.t, True
        if mode == "speaker" and target is not None:
            face = face_of(target, row)
            if face is not None:
                crop = fr.speaker(face)
        elif mode == "group":
            crop = fr.group(faces)
        out.append(_record(f.t, crop, mode, cut, f"oracle: {target or mode}"))
    return out


# ---------------------------------------------------------------------------------------------------------
# the run


@dataclass
class Result:
    """Scores per director and cell (seeds pooled), and the timing of ``roombox process``."""

    scores: dict[str, dict[str, Score]]  # director -> cell name -> pooled score
    cells: dict[str, Cell]
    process_x_realtime: float = math.nan
    detector_x_realtime: float = math.nan
    process_agrees: float = math.nan
    process_clip: str = ""
    detected: dict[str, tuple[float, float]] = field(default_factory=dict)  # cell -> (found, looked) talker-frames


def talkers_detected(frames: Sequence[FrameInfo], truth: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """On the frames with a detection: how many (frame, talker) pairs had the talker's face among the
    detections (a detection within a face width of the true face's centre), and how many pairs there were.
    What the oracle, which frames detected faces only, can reach."""
    tt = np.array([float(r["t"]) for r in truth])
    found = looked = 0
    for f in frames:
        if f.faces is None:
            continue
        row = truth[int(np.argmin(np.abs(tt - f.t)))]
        for p in row["people"]:
            if p["id"] not in row["talkers"]:
                continue
            x, y, w, h = p["box"]
            looked += 1
            found += any(math.hypot(g.center[0] - x - w / 2, g.center[1] - y - h / 2) <= w for g in f.faces.faces)
    return found, looked


def evaluate(
    p: Plan, root: Path | None = None, time_process: bool = True, progress: Callable[[str], None] | None = None
) -> Result:
    """Every director on every cell of ``p``; ``time_process``: also run :func:`appliance.process.run_offline`
    on the first recording, timed, and compare its lines with the box's track. ``progress`` hears of each
    recording done."""
    per: dict[str, dict[str, list[Score]]] = {name: {} for name in DIRECTORS}
    cells: dict[str, Cell] = {}
    res = Result({}, cells)
    frames_of: dict[Path, tuple[list[FrameInfo], float]] = {}
    for cell, rec in recordings(p, root):
        cells[cell.name] = cell
        if rec.dir not in frames_of:
            frames_of[rec.dir] = detections(rec)
        frames, detect_s = frames_of[rec.dir]
        doas = hear(rec)
        # the naive director hears the loudest direction of each block: plain SRP-PHAT, no tracking
        raw = hear(rec, rec.cfg.doa.model_copy(update={"estimator": "srp-phat"}))
        tracks = {
            "box": box_track(rec.cfg, frames, doas),
            "naive": naive_track(rec.cfg, frames, raw),
            "oracle": oracle_track(rec.cfg, frames, rec.truth),
        }
        for name, track in tracks.items():
            per[name].setdefault(cell.name, []).append(score(track, rec.truth))
        found, looked = talkers_detected(frames, rec.truth)
        a, b = res.detected.get(cell.name, (0.0, 0.0))
        res.detected[cell.name] = (a + found, b + looked)
        if progress is not None:
            progress(
                f"{cell.name} seed {cell.seed}: " + ", ".join(f"{k} {per[k][cell.name][-1].to_json()}" for k in per)
            )
        if time_process and math.isnan(res.process_x_realtime):
            _time_process(rec, tracks["box"], frames, detect_s, res)
    res.scores = {name: {c: pooled(s) for c, s in by_cell.items()} for name, by_cell in per.items()}
    return res


def _time_process(
    rec: Recording, track: list[dict[str, Any]], frames: list[FrameInfo], detect_s: float, res: Result
) -> None:
    from appliance.perception.watch import FaceWatcher
    from appliance.process import run_offline
    from drivers.files import iter_video_frames

    began = time.perf_counter()
    lines = list(run_offline(rec.video, rec.audio, rec.cfg, reference=rec.reference))
    wall = time.perf_counter() - began
    length = len(frames) / rec.cfg.camera.fps
    if detect_s <= 0.0:  # the detections came from the cache: time the detector alone here
        detector = FaceWatcher.from_config(rec.cfg.detector, rec.cfg.camera.hfov_deg)
        try:
            for frame, info in zip(iter_video_frames(rec.video), frames, strict=False):
                if info.faces is not None:
                    t0 = time.perf_counter()
                    detector.detect(frame.image, frame.t)
                    detect_s += time.perf_counter() - t0
        finally:
            detector.close()
    res.process_x_realtime = length / wall
    res.detector_x_realtime = length / max(detect_s, 1e-9)
    same = sum(a == b for a, b in zip(lines, track, strict=False))
    res.process_agrees = same / max(len(lines), len(track), 1)
    w, h = frames[0].width, frames[0].height
    res.process_clip = f"{w}x{h}@{rec.cfg.camera.fps:g}, {len(rec.cfg.mic_array.positions)} mics, {length:.0f} s"


def _if_exchange(s: Score, value: float) -> float:
    return value if s.exchange_s > 0 else math.nan  # no exchange in the cell: no figure


# (function of a Score, label, unit, higher is better)
FIGURES: tuple[tuple[Callable[[Score], float], str, str, bool], ...] = (
    (lambda s: s.framed_after_grace_frac, "talker in a close shot after 2 s", "fraction", True),
    (lambda s: s.latency_percentile(50), "switch latency median", "s", False),
    (lambda s: s.latency_percentile(95), "switch latency p95", "s", False),
    (lambda s: s.missed_turns / max(s.turns, 1), "turns never framed", "fraction", False),
    (lambda s: s.faceless_s, "no face in the shot, people present", "s", False),
    (lambda s: s.farend_moves_s, "camera moves during far-end speech", "s", False),
    (lambda s: s.print_close_s, "face print as subject of a close shot", "s", False),
    (lambda s: _if_exchange(s, s.exchange_cuts_per_min), "cuts per minute in A-B-A-B exchanges", "1/min", False),
    (lambda s: _if_exchange(s, s.exchange_both_frac), "both exchange talkers in the picture", "fraction", True),
    (lambda s: s.cuts_per_min, "cuts per minute", "1/min", False),
)


def rows_of(res: Result) -> list[Row]:
    """Per-cell rows for each director, then each director's worst cell up to RT60 0.6 s / SNR 10 dB and
    overall (per figure), then the speed of ``roombox process``."""
    rows: list[Row] = []
    for name, by_cell in res.scores.items():
        for cell_name, s in by_cell.items():
            for fn, label, unit, _ in FIGURES:
                rows.append((f"{name} {cell_name}: {label}", fn(s), unit))
    for name, by_cell in res.scores.items():
        moderate = {k: s for k, s in by_cell.items() if res.cells[k].rt60_s <= 0.6 + 1e-9 and res.cells[k].snr_db >= 10}
        for scope, subset in (("worst cell to rt60 0.6/snr 10", moderate), ("worst cell", by_cell)):
            for fn, label, unit, higher in FIGURES:
                vals = [(fn(s), k) for k, s in subset.items() if math.isfinite(fn(s))]
                if vals:
                    v, k = (min if higher else max)(vals)
                    rows.append((f"{name} {scope}: {label} ({k})", v, unit))
    for cell_name, (found, looked) in res.detected.items():
        rows.append(
            (
                f"detector {cell_name}: talkers' faces found (what the oracle can frame)",
                found / max(looked, 1),
                "fraction",
            )
        )
    if math.isfinite(res.process_x_realtime):
        rows.append((f"roombox process speed ({res.process_clip})", res.process_x_realtime, "x real time"))
        rows.append(("peer: the face detector alone, same frames", res.detector_x_realtime, "x real time"))
        rows.append(("roombox process lines equal to the bench's box track", res.process_agrees, "fraction"))
    return rows


def bench_director(quick: bool = False) -> list[Row]:
    """Rows for ``roombox bench director``."""
    return rows_of(evaluate(plan(quick)))


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="the director bench; rows as a table")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="*", help="only these seeds of the full grid")
    ap.add_argument("--rt60", type=float, nargs="*", help="only these RT60s")
    ap.add_argument("--snr", type=float, nargs="*", help="only these SNRs")
    ap.add_argument("--array", default=ARRAY, choices=sorted(ARRAYS), help="the mic array under the camera")
    args = ap.parse_args()
    base = plan(args.quick)
    cells = tuple(
        c
        for c in base.cells
        if (args.seeds is None or c.seed in args.seeds)
        and (args.rt60 is None or c.rt60_s in args.rt60)
        and (args.snr is None or c.snr_db in args.snr)
    )
    import sys

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    chosen = Plan(cells, base.duration_s, array=args.array)
    for figure, value, unit in rows_of(evaluate(chosen, progress=progress)):
        print(f"{figure:<86} {value:>9.3f}  {unit}", flush=True)


if __name__ == "__main__":
    _main()
