"""Offline run over a recording: the live box's :class:`appliance.step.FrameStep`, frame by frame.

Deterministic: the recording's own times are the clock (seconds from its start); a detection runs on each
frame that falls due (every ``[detector] interval_s``) and its faces reach the director on that frame; each
frame takes the DOA blocks that ended at or before it, as in the live box.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.framing import render_shot
from appliance.step import FrameStep


def run_offline(
    video: Path,
    audio: Path,
    cfg: Config,
    out: Path | None = None,
    reference: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one track record per video frame: ``{"t", "crop", "mode", ...}``; write the framed video to
    ``out`` when given. ``reference`` is what the loudspeaker played (mono, sample-aligned with ``audio``).

    Inputs that can be used but not as the user may think are said through ``note`` (one line each), and
    the run goes on with a sensible shot: audio that ends before the video (the director hears nothing
    after it and goes to the group), a video that ends before the audio (the track covers the video), a
    video in which no face was ever found (the whole view throughout), a silent reference (nothing is
    marked far end)."""
    from appliance.perception.hearing import make_ears
    from appliance.perception.listening import read_reference
    from appliance.perception.watch import FaceWatcher
    from appliance.step import gain_of
    from drivers.files import VideoFileWriter, iter_video_frames, read_array_wav, video_rate

    say = note or (lambda _: None)
    samples = read_array_wav(audio, cfg.mic_array)
    playback = None if reference is None else read_reference(reference, samples, cfg.mic_array.sample_rate)
    if playback is not None and not float(abs(playback).max(initial=0.0)) > 0.0:
        say(f"{reference}: the playback reference is silent: no block is marked far end")
    audio_s = samples.shape[0] / cfg.mic_array.sample_rate
    frames = iter_video_frames(video)
    step = FrameStep(cfg)
    step.add_doas(make_ears(cfg.mic_array, cfg.doa, cfg.tracker, gain_of(cfg)).feed(samples, 0.0, playback))
    detector = FaceWatcher.from_config(cfg.detector, cfg.camera.hfov_deg)
    writer: VideoFileWriter | None = None
    last_t, frame_s, n_faces, detections = 0.0, 0.0, 0, 0
    try:
        for frame in frames:
            frame_s, last_t = frame.t - last_t, frame.t
            if writer is None and out is not None:
                writer = VideoFileWriter(out, cfg.stream.width, cfg.stream.height, video_rate(video))
            faces = detector.detect(frame.image, frame.t) if step.detection_due(frame.t) else None
            shot = step.step(frame.t, frame.width, frame.height, faces, image=frame.image)
            if writer is not None:
                writer.write(render_shot(frame.image, shot, cfg.stream.width, cfg.stream.height))
            record = shot.to_json()
            if faces is not None:
                record["faces"] = [f.to_json() for f in faces.faces]
                detections += 1
                n_faces += len(faces.faces)
            yield record
        video_s = last_t + frame_s
        if audio_s < video_s - max(frame_s, 0.1):
            say(
                f"{audio}: the audio ({audio_s:.1f} s) ends before the video ({video_s:.1f} s): nothing is heard "
                f"after {audio_s:.1f} s"
            )
        elif video_s < audio_s - max(frame_s, 0.1):
            say(f"{video}: the video ({video_s:.1f} s) ends before the audio ({audio_s:.1f} s): the track covers it")
        if detections and not n_faces:
            say(f"{video}: no face was found in the video ({detections} detections): the whole view throughout")
    finally:
        detector.close()
        if writer is not None:
            writer.close()
