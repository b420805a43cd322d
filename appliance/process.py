"""Offline run over a recording: the same perception and director as the live box, frame by frame.

Deterministic: detection runs on the frames that fall due every ``[detector] interval_s`` of video time,
and each video frame sees the DOA blocks that ended at or before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from appliance.config import Config
from appliance.director import Director
from appliance.framing import render_crop
from appliance.messages import Doa, Faces
from common.geometry import PinholeCamera


def run_offline(video: Path, audio: Path, cfg: Config, out: Path | None = None) -> Iterator[dict[str, Any]]:
    """Yield one track record per video frame: ``{"t", "crop", "mode", ...}``; write the framed video to
    ``out`` when given."""
    from appliance.perception.faces import FaceDetector
    from appliance.perception.hearing import Hearing
    from drivers.files import VideoFileWriter, iter_video_frames, read_array_wav, video_rate

    samples = read_array_wav(audio, cfg.mic_array)
    doas: list[Doa] = Hearing(cfg.mic_array, cfg.doa).feed(samples, 0.0)
    detector = FaceDetector(cfg=cfg.detector)
    director: Director | None = None
    writer: VideoFileWriter | None = None
    next_doa, next_detect = 0, 0.0
    try:
        for frame in iter_video_frames(video):
            if director is None:
                cam = PinholeCamera(frame.width, frame.height, cfg.camera.hfov_deg)
                director = Director(cam, cfg.director, cfg.stream.width / cfg.stream.height)
                if out is not None:
                    writer = VideoFileWriter(out, cfg.stream.width, cfg.stream.height, video_rate(video))
            faces: Faces | None = None
            if frame.t >= next_detect - 1e-6:
                faces = detector.detect(frame.image, frame.t)
                next_detect = frame.t + cfg.detector.interval_s
            start = next_doa
            while next_doa < len(doas) and doas[next_doa].t <= frame.t + 1e-9:
                next_doa += 1
            shot = director.step(faces, doas[start:next_doa], frame.t)
            if writer is not None:
                writer.write(render_crop(frame.image, shot.crop, cfg.stream.width, cfg.stream.height))
            record = shot.to_json()
            if faces is not None:
                record["faces"] = [f.to_json() for f in faces.faces]
            yield record
    finally:
        detector.close()
        if writer is not None:
            writer.close()


def write_track(records: Iterator[dict[str, Any]], dest: TextIO) -> int:
    n = 0
    for r in records:
        dest.write(json.dumps(r) + "\n")
        n += 1
    return n
