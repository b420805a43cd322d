"""Render a scenario to files: ``render_to_dir(scenario_path, out_dir)``.

Writes ``room.mp4`` (H.264, yuv420p), ``array.wav`` (16-bit PCM, channel k = microphone k),
``config.toml`` (a roombox config matching the camera and the array), ``truth.jsonl`` (one line per
video frame: who speaks, each face box, whether the face can be seen (``"face"``: ``visible``, ``turned``
or ``hidden``) and each mouth's azimuth) and ``scenario.toml`` (a copy).
Each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import tomli_w

from common.atomic import write_atomic
from drivers.files import FileCameraConfig, VideoFileWriter, WavMicArrayConfig
from drivers.simroom.audio import render_audio
from drivers.simroom.scenario import Scenario, camera_geometry, load_scenario, mic_array_geometry
from drivers.simroom.video import RoomRenderer


def write_video(renderer: RoomRenderer, path: Path, n_frames: int, fps: float) -> None:
    """Encode ``n_frames`` rendered frames as H.264 (yuv420p) into ``path``, atomically."""
    with VideoFileWriter(path, renderer.cam.width, renderer.cam.height, fps) as writer:
        for k in range(n_frames):
            writer.write(renderer.render_frame(k / fps))


def device_config_toml(scn: Scenario) -> str:
    """The roombox config's device sections for the recording (``[cameras.main]`` a video file,
    ``[mic_arrays.main]`` a WAV file, with the scenario's geometry), validated by their drivers' models;
    the other sections are left out so that they keep their defaults and can be appended by hand."""
    camera = FileCameraConfig(**camera_geometry(scn))
    mics = WavMicArrayConfig(**mic_array_geometry(scn))
    return tomli_w.dumps(
        {
            "cameras": {"main": camera.model_dump(mode="json", exclude_none=True)},
            "mic_arrays": {"main": mics.model_dump(mode="json", exclude_none=True)},
        }
    )


def write_wav16(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write float samples (n, channels) in [-1, 1] as 16-bit PCM, atomically."""
    pcm = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    buf = io.BytesIO()
    scipy.io.wavfile.write(buf, rate, pcm)
    write_atomic(path, buf.getvalue())


def render_to_dir(
    scenario_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    duration_s: float | None = None,
    speech_root: Path | None = None,
) -> Path:
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
        states = renderer.face_states(t)
        people = [
            {
                "id": p.id,
                "box": [round(v, 1) for v in boxes[p.id]],
                "face": states[p.id],
                "azimuth_deg": round(azimuths[p.id], 2),
            }
            for p in scn.people
        ]
        lines.append(json.dumps({"t": round(t, 4), "talkers": audio.talkers_at(t), "people": people}))
    write_atomic(out / "truth.jsonl", "\n".join(lines) + "\n")
    write_atomic(out / "config.toml", device_config_toml(scn))
    text = src.read_text(encoding="utf-8")
    if duration_s is not None:
        text = f"# rendered with duration_s = {scn.duration_s}\n" + text
    write_atomic(out / "scenario.toml", text)
    return out
