"""The live box on file sources: frames flow to the output, and a vanished device is reported and retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import scipy.io.wavfile

from appliance.box import RoomBox
from appliance.config import Config, DetectorConfig
from appliance.perception.faces import FaceDetector
from appliance.streaming.hub import EventBus, LatestFrame
from drivers.files import FileCamera, VideoFileWriter, WavMicArray


def write_video(path: Path, frames: int) -> None:
    w = VideoFileWriter(path, 640, 360, 15.0)
    for i in range(frames):
        img = np.full((360, 640, 3), 40, np.uint8)
        img[:, (i * 20) % 600:(i * 20) % 600 + 40] = 200
        w.write(img)
    w.close()


async def run_box(camera_path: Path, wav: Path, cfg: Config, make_camera_at: float | None,
                  realtime: bool = True, run_s: float = 4.0, retry_s: float = 0.2) -> list:
    events, frames = EventBus(queue_size=100_000), LatestFrame()
    seen = events.subscribe()
    with FaceDetector(cfg=cfg.detector) as detector:
        box = RoomBox(cfg, FileCamera(camera_path, realtime=realtime), WavMicArray(wav, realtime=True), detector,
                      frames, None, events, retry_s=retry_s)
        task = asyncio.create_task(box.run())
        if make_camera_at is not None:
            await asyncio.sleep(make_camera_at)
            write_video(camera_path, 10)
        await asyncio.sleep(run_s)
        task.cancel()
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            await asyncio.wait_for(task, 5.0)
        except asyncio.CancelledError:
            pass
        stop_s = loop.time() - began
    out = []
    while not seen.empty():
        out.append(seen.get_nowait())
    return out + [("frames", {"published": frames.published}), ("stopped", {"seconds": stop_s})]


def test_a_camera_that_vanishes_is_reported_and_retried(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scipy.io.wavfile.write(tmp_path / "a.wav", 16000, (rng.normal(0, 0.01, (16000, 6)) * 32767).astype(np.int16))
    cfg = Config(detector=DetectorConfig(tiles=(1, 1)))
    camera = tmp_path / "camera.mp4"  # not there yet: the camera is unplugged
    events = asyncio.run(run_box(camera, tmp_path / "a.wav", cfg, make_camera_at=0.5))

    states = [d["state"] for k, d in events if k == "device:camera"]
    details = [d["detail"] for k, d in events if k == "device:camera" and d["state"] == "lost"]
    assert states[:3] == ["starting", "lost", "retrying"]
    assert "no such file" in details[0]
    assert "running" in states  # plugged in: it came back
    assert any("end of file" in d for d in details)  # the 10-frame file ended: lost again, and retried
    camera_events = [d for k, d in events if k == "device:camera"]
    eof = next(i for i, d in enumerate(camera_events) if "end of file" in d["detail"])
    assert camera_events[eof + 1]["state"] == "retrying"
    shots = [d for k, d in events if k == "shot"]
    assert len(shots) >= 10 and events[-2][1]["published"] >= 10
    assert [d["state"] for k, d in events if k == "device:mic_array"][:2] == ["starting", "running"]


def test_a_camera_that_keeps_restarting_is_detected_after_each_start_and_stops_when_asked(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    scipy.io.wavfile.write(tmp_path / "a.wav", 16000, (rng.normal(0, 0.01, (48000, 6)) * 32767).astype(np.int16))
    camera = tmp_path / "camera.mp4"
    write_video(camera, 10)  # 0.67 s of video, read as fast as it decodes: it ends, and restarts, often
    cfg = Config(detector=DetectorConfig(tiles=(1, 1), interval_s=0.2))
    events = asyncio.run(run_box(camera, tmp_path / "a.wav", cfg, None, realtime=False, run_s=2.0, retry_s=0.05))

    starts = sum(1 for k, d in events if k == "device:camera" and d["state"] == "running")
    faces_at_zero = sum(1 for k, d in events if k == "faces" and d["t"] == 0.0)
    assert starts >= 3
    assert faces_at_zero >= starts - 1  # each new start of the file is searched for faces again
    states = [d["state"] for k, d in events if k == "device:camera"]
    assert states[-1] == "stopped"
    assert events[-1][1]["seconds"] < 2.0  # cancelled in the middle of reading: it still stops, promptly
