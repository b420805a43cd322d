"""Render a scenario to files: ``render_to_dir(scenario_path, out_dir)``.

Writes ``room.mp4`` (H.264, yuv420p), ``array.wav`` (16-bit PCM, channel k = microphone k),
``config.toml`` (a roombox config matching the camera and the array), ``truth.jsonl`` (one line per
video frame: who speaks, each face box and each mouth's azimuth) and ``scenario.toml`` (a copy).
Each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import tomli_w

from appliance.atomic import write_atomic
from appliance.config import parse_config
from drivers.files import VideoFileWriter
from drivers.simroom.audio import render_audio
from drivers.simroom.scenario import Scenario, load_scenario, scenario_config
from drivers.simroom.video import RoomRenderer


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


def write_video(renderer: RoomRenderer, path: Path, n_frames: int, fps: float) -> None:
    """Encode ``n_frames`` rendered frames as H.264 (yuv420p) into ``path``, atomically."""
    with VideoFileWriter(path, renderer.cam.width, renderer.cam.height, fps) as writer:
        for k in range(n_frames):
            writer.write(renderer.render_frame(k / fps))


def device_config_toml(scn: Scenario) -> str:
    """The roombox config's [camera] and [mic_array] sections for the scenario, validated; the other
    sections are left out so that they keep their defaults and can be appended by hand."""
    data = scenario_config(scn).model_dump(mode="json", include={"camera", "mic_array"})
    parse_config(data, "rendered config.toml")
    return tomli_w.dumps(data)


def write_wav16(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write float samples (n, channels) in [-1, 1] as 16-bit PCM, atomically."""
    tmp = _tmp(path)
    pcm = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    try:
        scipy.io.wavfile.write(tmp, rate, pcm)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def render_to_dir(scenario_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  duration_s: float | None = None, speech_root: Path | None = None) -> Path:
    """Render the scenario (or its first ``duration_s`` seconds) into ``out_dir``; returns ``out_dir``."""
    src = Path(scenario_path)
    scn = load_scenario(src)
    if duration_s is not None:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        scn = scn.model_copy(update={"duration_s": min(duration_s, scn.duration_s)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    audio = render_audio(scn, speech_root)
    write_wav16(out / "array.wav", audio.samples, audio.sample_rate)

    renderer = RoomRenderer(scn)
    fps = scn.camera.fps
    n_frames = max(1, int(scn.duration_s * fps + 1e-9))
    write_video(renderer, out / "room.mp4", n_frames, fps)

    azimuths = {p.id: scn.mouth_azimuth_deg(p) for p in scn.people}
    lines = []
    for k in range(n_frames):
        t = k / fps
        boxes = renderer.face_boxes(t)
        people = [{"id": p.id, "box": [round(v, 1) for v in boxes[p.id]],
                   "azimuth_deg": round(azimuths[p.id], 2)} for p in scn.people]
        lines.append(json.dumps({"t": round(t, 4), "talkers": audio.talkers_at(t), "people": people}))
    write_atomic(out / "truth.jsonl", "\n".join(lines) + "\n")
    write_atomic(out / "config.toml", device_config_toml(scn))
    text = src.read_text(encoding="utf-8")
    if duration_s is not None:
        text = f"# rendered with duration_s = {scn.duration_s}\n" + text
    write_atomic(out / "scenario.toml", text)
    return out

