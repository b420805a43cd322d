"""File sources: a video file as a camera, a WAV as a mic array, and their offline readers."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.io.wavfile

from common.clock import VirtualClock
from drivers.base import AudioSource, SourceLost, VideoSource
from drivers.files import (
    FileCamera,
    MediaFileError,
    VideoFileWriter,
    WavMicArray,
    iter_video_frames,
    read_wav,
)


def make_video(path: Path, n: int = 8, fps: int = 10, w: int = 64, h: int = 48) -> None:
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for k in range(n):
            img = np.full((h, w, 3), 20 * k, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = k
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def make_wav(path: Path, n: int = 1000, ch: int = 4, rate: int = 16000) -> np.ndarray:
    x = (np.arange(n * ch).reshape(n, ch) % 200 - 100).astype(np.int16) * 100
    scipy.io.wavfile.write(path, rate, x)
    return x


def test_iter_video_frames_reads_every_frame_with_times(tmp_path: Path) -> None:
    make_video(tmp_path / "v.mp4")
    frames = list(iter_video_frames(tmp_path / "v.mp4"))
    assert [round(f.t, 3) for f in frames] == [k / 10 for k in range(8)]
    assert frames[3].image.shape == (48, 64, 3) and abs(int(frames[3].image.mean()) - 60) <= 3


def test_video_file_writer_writes_what_reads_back(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "w.mp4"
    with VideoFileWriter(dest, 64, 48, 12.0) as w:
        for k in range(5):
            w.write(np.full((48, 64, 3), (40 * k, 100, 200 - 40 * k), np.uint8))
        assert not dest.exists()  # appears only when complete
    frames = list(iter_video_frames(dest))
    assert len(frames) == 5 and frames[4].t == pytest.approx(4 / 12, abs=1e-3)
    assert np.abs(frames[2].image.reshape(-1, 3).mean(axis=0) - (80, 100, 120)).max() < 6
    with pytest.raises(ValueError, match="frame"):
        VideoFileWriter(tmp_path / "x.mp4", 64, 48, 12.0).write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(RuntimeError), VideoFileWriter(tmp_path / "y.mp4", 64, 48, 12.0) as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("stop")
    assert not (tmp_path / "y.mp4").exists() and not list(tmp_path.glob(".y.mp4*"))


def test_read_wav_gives_float_channels(tmp_path: Path) -> None:
    x = make_wav(tmp_path / "a.wav")
    samples, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and samples.dtype == np.float32 and samples.shape == (1000, 4)
    assert samples[5, 2] == pytest.approx(x[5, 2] / 32768)


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(MediaFileError, match="nope.wav: no such file"):
        read_wav(tmp_path / "nope.wav")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "junk.wav").write_bytes(b"RIFF junk")
    with pytest.raises(MediaFileError, match="junk.mp4: cannot open as video: Invalid data found") as e:
        list(iter_video_frames(tmp_path / "junk.mp4"))
    assert "Errno" not in str(e.value)  # FFmpeg's error number and a second copy of the path are left out
    with pytest.raises(MediaFileError, match="junk.wav"):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(MediaFileError, match="nope.mp4"):
        asyncio.run(FileCamera(tmp_path / "nope.mp4").start())


def test_file_camera_ends_with_source_lost(tmp_path: Path) -> None:
    make_video(tmp_path / "v.mp4", n=6)

    async def run(realtime: bool) -> tuple[list[float], float]:
        clock = VirtualClock(50.0)
        cam = FileCamera(tmp_path / "v.mp4", realtime=realtime, clock=clock)
        assert isinstance(cam, VideoSource)
        await cam.start()
        ts = []
        with pytest.raises(SourceLost):
            while True:
                ts.append((await cam.recv()).t)
        await cam.stop()
        return ts, clock.now()

    # stamped on the capture clock from the start; paced on it only when realtime
    ts, now = asyncio.run(run(False))
    assert ts == pytest.approx([50.0 + k / 10 for k in range(6)]) and now == 50.0
    ts, now = asyncio.run(run(True))
    assert ts == pytest.approx([50.0 + k / 10 for k in range(6)]) and now == pytest.approx(50.5)


def test_wav_mic_array_blocks_cover_the_file(tmp_path: Path) -> None:
    make_wav(tmp_path / "a.wav", n=16000 // 2 + 100)

    async def run(realtime: bool) -> tuple[list[tuple[float, int]], float]:
        clock = VirtualClock(7.0)
        mics = WavMicArray(tmp_path / "a.wav", block_s=0.05, realtime=realtime, clock=clock)
        assert isinstance(mics, AudioSource)
        await mics.start()
        out = []
        with pytest.raises(SourceLost):
            while True:
                b = await mics.recv()
                out.append((b.t, b.samples.shape[0]))
                assert b.samples.shape[1] == 4 and b.sample_rate == 16000
                assert not realtime or clock.now() == pytest.approx(b.t + b.samples.shape[0] / 16000)
        await mics.stop()
        return out, clock.now()

    blocks, now = asyncio.run(run(False))
    assert [n for _, n in blocks] == [800] * 10 + [100]
    assert [t for t, _ in blocks] == pytest.approx([7.0 + k * 0.05 for k in range(11)]) and now == 7.0
    blocks, now = asyncio.run(run(True))
    assert len(blocks) == 11 and now == pytest.approx(7.0 + 8100 / 16000)  # each block once it is recorded
