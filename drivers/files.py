"""Sources over files: a video file as a camera, a multichannel WAV as a mic array.

``FileCamera`` and ``WavMicArray`` honour the pulled-source contract of :mod:`drivers.base` and raise
:class:`drivers.base.SourceLost` at the end of the file. Both stamp what they deliver on the capture clock they
are given (:mod:`common.clock`): the file's own times, from the moment the source started. With
``realtime=True`` they pace themselves on that clock like a device; with ``realtime=False`` they go as fast
as the reader pulls. ``iter_video_frames`` and ``read_wav`` serve offline processing. Registered as the
``file`` camera and the ``wav`` mic array (:mod:`drivers.registry`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.io.wavfile
from pydantic import Field

from common.clock import SYSTEM_CLOCK, Clock
from drivers.base import AudioBlock, CameraSection, Frame, MicArraySection, SourceLost
from drivers.hotplug import Watch
from drivers.registry import DriverContext, register


class FileCameraConfig(CameraSection):
    """A video file as a camera. ``path`` may be left out where the file comes from the command line
    (``roombox process --video``); the geometry keys describe the recording's camera."""

    type: Literal["file"] = "file"
    path: str | None = Field(None, min_length=1, title="Video file")


class WavMicArrayConfig(MicArraySection):
    """A multichannel WAV file as a mic array (channel k = microphone k). ``path`` may be left out where the
    file comes from the command line (``roombox process --audio``)."""

    type: Literal["wav"] = "wav"
    path: str | None = Field(None, min_length=1, title="WAV file")


class MediaFileError(ValueError):
    """A media file that is missing or cannot be read; the message names the file and the reason."""


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaFileError(f"{p}: no such file")
    if not p.is_file():
        raise MediaFileError(f"{p}: not a file")
    return p


def _reason(e: Exception) -> str:
    """What went wrong, without FFmpeg's error number and the path the message already names."""
    return str(getattr(e, "strerror", None) or e)


def iter_video_frames(path: str | os.PathLike[str]) -> Iterator[Frame]:
    """Each frame of a video file as a :class:`Frame` (RGB uint8), ``t`` in seconds from its pts.

    The file is opened at once, so a missing or unreadable file fails here, not at the first frame.
    """
    import av

    p = _existing(path)
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError) as e:
        raise MediaFileError(f"{p}: cannot open as video: {_reason(e)}") from None
    if not container.streams.video:
        container.close()
        raise MediaFileError(f"{p}: has no video stream")
    return _decode(container, p)


def video_rate(path: str | os.PathLike[str]) -> float:
    """The average frame rate of a video file's first video stream (frames/s)."""
    import av

    p = _existing(path)
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise MediaFileError(f"{p}: has no video stream")
            rate = container.streams.video[0].average_rate
    except (av.error.FFmpegError, OSError) as e:
        raise MediaFileError(f"{p}: cannot open as video: {_reason(e)}") from None
    if not rate:
        raise MediaFileError(f"{p}: the video stream has no frame rate")
    return float(rate)


def _decode(container: Any, p: Path) -> Iterator[Frame]:
    import av

    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = stream.start_time or 0
        rate = float(stream.average_rate or 25)
        index = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and frame.time_base is not None:
                    t = float((frame.pts - start) * frame.time_base)
                else:
                    t = index / rate
                index += 1
                yield Frame(t=t, image=frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as e:
            raise MediaFileError(f"{p}: cannot decode frame {index}: {_reason(e)}") from None


def read_array_wav(path: str | os.PathLike[str], mic: MicArraySection) -> np.ndarray:
    """A mic-array recording as float32 (frames, channels), checked against the array's config: the
    sample rate must be ``mic.sample_rate`` and channel k is microphone k of ``mic.positions``."""
    samples, rate = read_wav(path)
    # a recording of a sound card's whole stream (a ReSpeaker's 6 channels, say): its channel map picks the mics
    channel_map, channels = getattr(mic, "channel_map", None), getattr(mic, "channels", None)
    if channel_map and channels and samples.shape[1] == channels != len(mic.positions):
        samples = samples[:, list(channel_map)]
    if rate != mic.sample_rate:
        raise MediaFileError(
            f"{path}: sample rate is {rate} Hz but the mic array's sample_rate is {mic.sample_rate} Hz"
        )
    if samples.shape[1] != len(mic.positions):
        raise MediaFileError(
            f"{path}: has {samples.shape[1]} channel{'s' if samples.shape[1] != 1 else ''} but the mic array's "
            f"positions has {len(mic.positions)} microphones"
            + (f" (and the device's channels = {channels}, which its channel_map reads)" if channel_map else "")
        )
    return samples


class JsonLines(list[Any]):
    """The records of a JSON-lines file; ``lines[i]`` is the line record ``i`` was on (blank lines are
    skipped, so that an error about a record can name its line)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []


def read_jsonl(path: str | os.PathLike[str]) -> JsonLines:
    """The records of a JSON-lines file (blank lines skipped)."""
    p = _existing(path)
    out = JsonLines()
    try:
        with p.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                    out.lines.append(n)
                except json.JSONDecodeError as e:
                    raise MediaFileError(f"{p}:{n}: not JSON: {e}") from None
                except RecursionError:
                    raise MediaFileError(f"{p}:{n}: not JSON this program reads: nested too deeply") from None
    except UnicodeDecodeError:
        raise MediaFileError(f"{p}: not UTF-8 text, so not a JSON-lines file") from None
    return out


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file (PNG, JPEG, ...) as RGB uint8 (height, width, 3)."""
    import cv2

    p = _existing(path)
    try:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    except cv2.error as e:  # e.g. a header claiming more pixels than OpenCV will allocate
        text = str(e)
        reason = (
            "its header claims more pixels than OpenCV reads (CV_IO_MAX_IMAGE_PIXELS)"
            if "CV_IO_MAX_IMAGE_PIXELS" in text
            else text.strip().splitlines()[-1]
            if text.strip()
            else "OpenCV refused it"
        )
        raise MediaFileError(f"{p}: not a readable image: {reason}") from None
    if bgr is None:
        raise MediaFileError(f"{p}: not a readable image (PNG, JPEG, ...)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def pcm_to_float(data: np.ndarray) -> np.ndarray:
    """WAV samples (int16, int32, uint8 or float) as float32 in [-1, 1]."""
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    raise ValueError(f"unsupported sample type {data.dtype}")


FLOAT_WAV_PEAK = 16.0  # a float WAV's full scale is 1.0; a mix may go over it, not by 24 dB


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """All samples of a WAV file as float32 (frames, channels) in [-1, 1], and the sample rate."""
    p = _existing(path)
    try:
        with warnings.catch_warnings():  # a chunk it skips: the errors below say what matters
            warnings.simplefilter("ignore", scipy.io.wavfile.WavFileWarning)
            rate, data = scipy.io.wavfile.read(p)
    except (ValueError, OSError) as e:
        if "cannot reshape" in str(e):  # numpy's words for data that ends within a frame
            raise MediaFileError(f"{p}: cannot read as WAV: the data ends within a frame (a cut file?)") from None
        raise MediaFileError(f"{p}: cannot read as WAV: {e}") from None
    except Exception:  # scipy's parser fails on some damaged headers with errors of its own
        raise MediaFileError(f"{p}: cannot read as WAV: a damaged header (no format or data chunk)") from None
    try:
        x = pcm_to_float(data)
    except ValueError as e:
        raise MediaFileError(f"{p}: {e}") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] == 0:
        why = ""
        if p.stat().st_size > 1024:  # a recorder stopped before it wrote its header's sizes
            size = p.stat().st_size
            why = f" (its header says its data is empty, but the file has {size} bytes: a recording cut off?)"
        raise MediaFileError(f"{p}: has no samples{why}")
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise MediaFileError(f"{p}: {bad} samples are not numbers (NaN or infinite)")
    if data.dtype.kind == "f" and (peak := float(np.max(np.abs(x)))) > FLOAT_WAV_PEAK:
        raise MediaFileError(
            f"{p}: float samples reach {peak:.6g}, where full scale is 1.0 (more than {FLOAT_WAV_PEAK:g} is no "
            "room's level): written as integers? divide by 32768 for 16-bit values"
        )
    return x, int(rate)


class VideoFileWriter:
    """Writes RGB frames to an H.264 (yuv420p) MP4 file; it appears under its name only when closed."""

    def __init__(
        self, path: str | os.PathLike[str], width: int, height: int, fps: float, crf: int = 20, preset: str = "veryfast"
    ) -> None:
        import av

        if width % 2 or height % 2:
            raise ValueError(f"yuv420p wants an even size, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.part")
        self.width, self.height = width, height
        self.frames = 0
        self._container: Any = av.open(str(self._tmp), mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.options = {"preset": preset, "crf": str(crf)}

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB uint8 (height, width, 3) picture."""
        import av

        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"{self.path}: frame {rgb.shape}, writer is {self.width}x{self.height}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        self.frames += 1
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and move the file into place."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            os.replace(self._tmp, self.path)
        finally:
            self._container = None
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Give up: close and delete the partial file."""
        if self._container is not None:
            self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoFileWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FileCamera:
    """A VideoSource over a video file; frame times come from the file's timestamps."""

    def __init__(
        self, path: str | os.PathLike[str], realtime: bool = True, name: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.name = name or f"file:{self.path.name}"
        self.clock = clock
        self._frames: Iterator[Frame] | None = None
        self._epoch = 0.0
        # one reader thread: a close() queued behind a read in flight waits for it to finish
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None

    async def _on_reader(self, fn: Any, *args: Any) -> Any:
        assert self._reader is not None
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    def watches(self) -> list[Watch]:
        return [Watch(self.path)]  # a file put in place (a share mounted, a recording copied in)

    async def start(self) -> None:
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self._frames = await self._on_reader(iter_video_frames, self.path)
        self._epoch = self.clock.now()

    def _next(self) -> Frame | None:
        assert self._frames is not None
        return next(self._frames, None)

    async def recv(self) -> Frame:
        if self._frames is None:
            raise RuntimeError(f"{self.name}: recv() before start()")
        frame: Frame | None = await self._on_reader(self._next)
        if frame is None:
            raise SourceLost(f"{self.name}: end of file")
        t = self._epoch + frame.t
        if self.realtime:
            await self.clock.sleep_until(t)
        return Frame(t=t, image=frame.image)

    async def stop(self) -> None:
        frames, reader = self._frames, self._reader
        self._frames, self._reader = None, None
        if reader is not None:
            if frames is not None:
                reader.submit(frames.close)  # type: ignore[attr-defined]
            await asyncio.get_running_loop().run_in_executor(None, reader.shutdown, True)


class WavMicArray:
    """An AudioSource over a multichannel WAV file in blocks of ``block_s`` seconds."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        block_s: float = 0.02,
        realtime: bool = True,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if block_s <= 0:
            raise ValueError(f"block_s must be positive, got {block_s}")
        self.path = Path(path)
        self.clock = clock
        self.block_s = block_s
        self.realtime = realtime
        self.name = name or f"wav:{self.path.name}"
        self.sample_rate = 0
        self._samples: np.ndarray | None = None
        self._pos = 0
        self._epoch = 0.0

    def watches(self) -> list[Watch]:
        return [Watch(self.path)]

    async def start(self) -> None:
        self._samples, self.sample_rate = await asyncio.to_thread(read_wav, self.path)
        self._pos = 0
        self._epoch = self.clock.now()

    async def recv(self) -> AudioBlock:
        if self._samples is None:
            raise RuntimeError(f"{self.name}: recv() before start()")
        n = max(1, round(self.block_s * self.sample_rate))
        start = self._pos
        if start >= len(self._samples):
            raise SourceLost(f"{self.name}: end of file")
        block = self._samples[start : start + n]
        self._pos = start + len(block)
        if self.realtime:  # a block is ready once it has been recorded
            await self.clock.sleep_until(self._epoch + self._pos / self.sample_rate)
        return AudioBlock(t=self._epoch + start / self.sample_rate, samples=block, sample_rate=self.sample_rate)

    async def stop(self) -> None:
        self._samples = None


def _needs_path(kind: str, name: str, path: str | None) -> str:
    if path is None:
        raise ValueError(f"[{kind}.{name}] path: a live {kind[:-1].replace('_', ' ')} over a file needs the file")
    return path


@register("camera", "file", FileCameraConfig)
def open_file_camera(name: str, cfg: FileCameraConfig, ctx: DriverContext) -> FileCamera:
    return FileCamera(_needs_path("cameras", name, cfg.path), realtime=True, name=name, clock=ctx.clock)


@register("mic_array", "wav", WavMicArrayConfig)
def open_wav_mic_array(name: str, cfg: WavMicArrayConfig, ctx: DriverContext) -> WavMicArray:
    return WavMicArray(_needs_path("mic_arrays", name, cfg.path), realtime=True, name=name, clock=ctx.clock)
