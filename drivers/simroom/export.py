"""Render a scenario to files: ``render_to_dir(scenario_path, out_dir)``.

Writes ``room.mp4`` (H.264, yuv420p), ``array.wav`` (16-bit PCM, channel k = microphone k),
``config.toml`` (a roombox config matching the camera and the array), ``truth.jsonl`` (one line per
video frame: who speaks, whether the far end does, each face box, whether the face can be seen
(``"face"``: ``visible``, ``turned`` or ``hidden``) and each mouth's azimuth),
``activity.json`` (the exact intervals: each person's speech and the far end's, as heard at the array)
and ``scenario.toml`` (a copy). With a loudspeaker in the scenario, also ``reference.wav``: what was sent
to it (16-bit PCM, mono, the array's rate and length, sample-aligned), the playback reference of
``roombox doa --reference``. The files are written into a temporary directory and moved into place when all are
complete.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io.wavfile
import tomli_w
from pydantic import ValidationError

from common.atomic import write_atomic
from common.settings import describe_errors
from drivers.files import FileCameraConfig, VideoFileWriter, WavMicArrayConfig
from drivers.simroom.audio import RenderedAudio, render_audio
from drivers.simroom.scenario import Scenario, ScenarioError, camera_geometry, load_scenario, mic_array_geometry
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


def activity_record(scn: Scenario, audio: RenderedAudio) -> dict[str, Any]:
    """``activity.json``: when each person speaks and when the far end does (``[start, end]`` seconds, as
    heard at the array's centre), and where the loudspeaker is (azimuth and elevation from the array's
    centre, camera frame, degrees; null without one)."""
    direction = scn.loudspeaker_direction_deg()
    return {
        "duration_s": scn.duration_s,
        "talkers": {pid: [list(span) for span in spans] for pid, spans in audio.activity.items()},
        "farend": [list(span) for span in audio.farend],
        "loudspeaker": None
        if direction is None or scn.loudspeaker is None
        else {
            "position_m": list(scn.loudspeaker.position_m),
            "azimuth_deg": round(direction[0], 2),
            "elevation_deg": round(direction[1], 2),
        },
    }


def render_to_dir(
    scenario_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    duration_s: float | None = None,
    speech_root: Path | None = None,
) -> Path:
    """Render the scenario (or its first ``duration_s`` seconds) into ``out_dir``; returns ``out_dir``.

    Everything is rendered into a temporary directory beside ``out_dir`` first and moved in only when all of
    it is written: a rendering that fails leaves ``out_dir`` as it was (an earlier rendering there whole)."""
    src = Path(scenario_path)
    scn = load_scenario(src)
    if duration_s is not None:
        if not math.isfinite(duration_s) or duration_s < 1.0 / scn.camera.fps:
            raise ValueError(
                f"--duration {duration_s}: give a number of seconds, at least one video frame "
                f"({1.0 / scn.camera.fps:.3f} s at {scn.camera.fps:g} frames/s)"
            )
        scn = scn.model_copy(update={"duration_s": min(duration_s, scn.duration_s)})
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        kind = "a file" if out.is_file() else "not a directory (a device or pipe)"
        raise ValueError(f"{out}: is {kind}; give a directory to render into")
    try:
        config = device_config_toml(scn)
    except ValidationError as e:  # the scenario's own checks should have refused it: say where
        raise ScenarioError(describe_errors(e, f"{src} (the rendering's config)")) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        names = _render_into(tmp, src, scn, config, duration_s, speech_root)
        out.mkdir(exist_ok=True)
        for name in names:
            os.replace(tmp / name, out / name)
        if "reference.wav" not in names:
            (out / "reference.wav").unlink(missing_ok=True)  # from an earlier rendering into the same directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _render_into(
    out: Path, src: Path, scn: Scenario, config: str, duration_s: float | None, speech_root: Path | None
) -> list[str]:
    """Write the rendering's files into ``out``; returns their names."""
    try:
        audio = render_audio(scn, speech_root)
    except ScenarioError as e:
        raise ScenarioError(f"{src}: {e}") from None
    names = ["array.wav", "room.mp4", "truth.jsonl", "activity.json", "config.toml", "scenario.toml"]
    write_wav16(out / "array.wav", audio.samples, audio.sample_rate)
    if audio.reference is not None:
        write_wav16(out / "reference.wav", audio.reference, audio.sample_rate)
        names.append("reference.wav")

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
        lines.append(
            json.dumps(
                {"t": round(t, 4), "talkers": audio.talkers_at(t), "farend": audio.farend_at(t), "people": people}
            )
        )
    write_atomic(out / "truth.jsonl", "\n".join(lines) + "\n")
    write_atomic(out / "activity.json", json.dumps(activity_record(scn, audio), indent=1) + "\n")
    write_atomic(out / "config.toml", config)
    text = src.read_text(encoding="utf-8")
    if text.startswith("# rendered with duration_s = "):  # a rendering's copy rendered again
        text = text.split("\n", 1)[1] if "\n" in text else ""
    if duration_s is not None:
        text = f"# rendered with duration_s = {scn.duration_s}\n" + text
    write_atomic(out / "scenario.toml", text)
    return names
