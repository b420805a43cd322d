"""The room's loudspeaker through PortAudio: ``[speakers.NAME] type = "sounddevice"``.

```toml
[speakers.room]
type = "sounddevice"
device = "USB Audio"      # part of the name, or the index, of an output device; left out: the default output
volume = 80               # 0 (silent) .. 100 (the samples as they are); linear amplitude
device_rate = 48000       # left out: the box's rate if the device takes it, else its default rate
```

:class:`PortAudioSpeaker` takes mono float32 samples at its ``sample_rate`` (the playback path sets it to the
mic array's rate) with :meth:`PortAudioSpeaker.write`, resamples them to the device's rate and queues them;
PortAudio's callback thread takes them from the queue (silence when there are none: an underrun, counted),
applies the volume, and hands **what it actually sent to the device** to ``on_played(t, samples, rate)`` on the
event loop, with ``t`` the time the block's first sample reaches the converter on the capture clock
(:mod:`common.clock`): ``clock.now()`` in the callback plus PortAudio's ``outputBufferDacTime -
currentTime``, smoothed on a timeline counted in samples. Blocks of pure silence are not handed over.

A device that vanishes (PortAudio finishes the stream, or the callback stops for ``stall_s``) makes
``write()`` / ``check()`` raise :class:`~drivers.base.SourceLost` naming the device, as the capture side does;
the box's supervisor reports it and starts again. An unknown device is ``SourceLost`` too (it may be plugged in
later); a device that refuses the configured rate or channels is :class:`SpeakerDeviceError` with a message
saying what it refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from common.clock import SYSTEM_CLOCK, Clock
from common.errors import RoomboxError
from common.settings import Section
from drivers.audio import devices as _devices
from drivers.audio.capture import PORTAUDIO_LOCK, PORTAUDIO_RESTART, RESTARTING, _in_thread, refusal, same_device
from drivers.audio.fifo import SampleFifo
from drivers.audio.resample import StreamResampler
from drivers.base import SourceLost
from drivers.hotplug import Watch, sound_watches
from drivers.registry import DriverContext, register

log = logging.getLogger(__name__)

OnPlayed = Callable[[float, np.ndarray, int], None]
MAX_DAC_LATENCY_S = 1.0
DEADBAND_S = 0.002  # the timeline stays put while the raw stamps are within this of it (their jitter)
REANCHOR_AFTER_S = 0.1  # a timeline off the raw stamps by more than DEADBAND_S for this long is set afresh
REANCHOR_AT_ONCE_S = 0.2  # no scheduling jitter is this large: the stream paused (or had not started)
FLOWING_S = 0.1  # callbacks this long after the first: the device consumes (PortAudio primes it at once)


class SpeakerDeviceError(RoomboxError, ValueError):
    """A loudspeaker that cannot be used as configured (a rate or channel count it refuses, an ambiguous
    name); the message names the device and the reason."""


@dataclass(frozen=True)
class OutputDevice:
    index: int
    name: str
    channels: int
    default_rate: float
    is_default: bool


class SpeakerSection(Section):
    """What every loudspeaker's config section has. Drivers add a ``type`` (see :mod:`drivers.registry`)."""

    device: str | int | None = Field(
        None,
        title="Output device",
        description="Its index or a part of its name; left out: the default output device.",
    )
    volume: float = Field(
        80.0, ge=0.0, le=100.0, title="Volume (0-100)", description="Linear: 50 is half the amplitude."
    )
    _device = field_validator("device")(_devices.check_device)
    channels: int | None = Field(
        None, ge=1, le=64, title="Channels", description="The sound goes to every one; left out: up to 2."
    )
    device_rate: int | None = Field(
        None,
        ge=8000,
        le=768000,
        title="Rate the device is opened at (Hz)",
        description="Left out: the box's rate if the device takes it, else its default rate (resampled).",
    )
    block_ms: float = Field(10.0, ge=2.0, le=100.0, title="PortAudio block (ms)")
    latency_ms: float = Field(40.0, ge=0.0, le=500.0, title="Output latency asked of PortAudio (ms)")
    prefill_ms: float = Field(40.0, ge=0.0, le=500.0, title="Queued before playing starts again after a gap (ms)")
    max_queue_ms: float = Field(
        300.0, ge=20.0, le=5000.0, title="Most sound queued (ms)", description="Beyond it the oldest is dropped."
    )
    stall_s: float = Field(2.0, ge=0.2, le=60.0, title="Callback silence taken as a lost device (s)")


class SoundDeviceSpeakerConfig(SpeakerSection):
    type: Literal["sounddevice"] = "sounddevice"


def find_output(devices: Sequence[OutputDevice], wanted: str | int | None) -> OutputDevice:
    """The output device named by ``wanted`` (an index, a part of its name, an exact name winning, or None
    for the default). ``SourceLost`` when none matches; ``SpeakerDeviceError`` when the name is ambiguous."""
    outputs = [d for d in devices if d.channels > 0]
    listing = "; ".join(f"{d.index}: {d.name}" for d in outputs) or "none"
    if wanted is None:
        found = [d for d in outputs if d.is_default]
        if not found:
            raise SourceLost(f"no default output device (outputs: {listing})")
        return found[0]
    if isinstance(wanted, int):
        found = [d for d in devices if d.index == wanted]
        if found and found[0].channels <= 0:
            raise SpeakerDeviceError(f"device {wanted} ({found[0].name}) has no output channels")
        if not found:
            raise SourceLost(f"no output device {wanted} (outputs: {listing})")
        return found[0]
    key = wanted.strip().lower()
    found = [d for d in outputs if d.name.lower() == key] or [d for d in outputs if key in d.name.lower()]
    if not found:
        raise SourceLost(f"no output device matching {wanted!r} (outputs: {listing})")
    if len(found) > 1:
        names = "; ".join(f"{d.index}: {d.name}" for d in found)
        raise SpeakerDeviceError(f"device {wanted!r} matches {len(found)} output devices ({names}): give the index")
    return found[0]


def list_output_devices() -> list[OutputDevice]:
    """The output devices PortAudio sees (through python-sounddevice)."""
    sd = _devices._import_sounddevice()
    default = sd.default.device[1]
    if default is None or default < 0:
        try:
            default = sd.query_devices(kind="output")["index"]
        except sd.PortAudioError:
            default = -1
    return [
        OutputDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            channels=int(d["max_output_channels"]),
            default_rate=float(d["default_samplerate"]),
            is_default=int(d["index"]) == default,
        )
        for d in sd.query_devices()
        if int(d["max_output_channels"]) > 0
    ]


class PortAudioSpeaker:
    """A loudspeaker: ``await start()``, ``write(mono samples at sample_rate)``, ``await stop()``.

    ``volume`` (0-100) may be changed while playing. ``counters``: ``underruns`` (blocks the queue could not
    fill), ``dropped_samples`` (queued beyond ``max_queue_ms``), ``device_underflows`` (PortAudio's flag),
    ``gaps`` (times the stamps' timeline was set afresh).
    """

    def __init__(
        self,
        name: str,
        device: str | int | None = None,
        sample_rate: int = 16000,
        volume: float = 80.0,
        channels: int | None = None,
        device_rate: int | None = None,
        block_ms: float = 10.0,
        latency_ms: float = 40.0,
        prefill_ms: float = 40.0,
        max_queue_ms: float = 300.0,
        stall_s: float = 2.0,
        open_timeout_s: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        on_played: OnPlayed | None = None,
    ) -> None:
        self.name = name
        self.device = device
        self.sample_rate = int(sample_rate)  # of what write() takes; set before start()
        self.volume = float(volume)
        self.wanted_channels = channels
        self.wanted_device_rate = device_rate
        self.block_ms, self.latency_ms, self.prefill_ms = float(block_ms), float(latency_ms), float(prefill_ms)
        self.max_queue_ms, self.stall_s, self.open_timeout_s = float(max_queue_ms), float(stall_s), open_timeout_s
        self.clock = clock
        self.on_played = on_played
        self.device_info: OutputDevice | None = None
        self.device_rate = 0
        self.channels = 0
        self.underruns = self.dropped_samples = self.device_underflows = self.gaps = 0
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._queue = SampleFifo()  # at the device's rate, written on the loop, taken by the callback
        self._starved = True
        self._finished = False
        self._last_callback = 0.0
        self._first_callback: float | None = None
        self._flowing = threading.Event()
        self._resampler: StreamResampler | None = None
        self._anchor: float | None = None
        self._n = 0
        self._off = 0

    @property
    def counters(self) -> dict[str, int]:
        return {
            "underruns": self.underruns,
            "dropped_samples": self.dropped_samples,
            "device_underflows": self.device_underflows,
            "gaps": self.gaps,
        }

    @property
    def queued_s(self) -> float:
        """Sound written but not yet taken by the device (s)."""
        return self._queue.size / self.device_rate if self.device_rate else 0.0

    def _describe(self) -> str:
        d = self.device_info
        return f"{self.name}: device {d.index} ({d.name})" if d else f"{self.name}: device {self.device!r}"

    # -- opening -------------------------------------------------------------------------------------
    def _resolve(self) -> OutputDevice:
        try:
            try:
                devices = list_output_devices()
                found = find_output(devices, self.device)
            except SourceLost:
                _devices._refresh_portaudio(self.device, "output")  # a device plugged in since PortAudio listed them
                devices = list_output_devices()
                found = find_output(devices, self.device)
            return same_device(found, devices, self.device_info, self.device)
        except SourceLost as e:
            raise SourceLost(f"{self.name}: {e}") from None
        except SpeakerDeviceError as e:
            raise SpeakerDeviceError(f"{self.name}: {e}") from None

    def _pick_rate(self, sd: Any, dev: OutputDevice, channels: int) -> int:
        def refused(rate: int) -> str | None:
            try:
                sd.check_output_settings(device=dev.index, channels=channels, samplerate=rate, dtype="float32")
            except (sd.PortAudioError, ValueError) as e:
                return str(e)
            return None

        if self.wanted_device_rate is not None:
            reason = refused(self.wanted_device_rate)
            if reason is not None:
                raise SpeakerDeviceError(
                    f"{self.name}: device {dev.index} ({dev.name}) refuses {channels} channels at device_rate "
                    f"{self.wanted_device_rate} Hz: {reason}"
                )
            return self.wanted_device_rate
        tried: dict[int, str] = {}
        for rate in dict.fromkeys(r for r in (self.sample_rate, round(dev.default_rate), 48000, 44100) if r > 0):
            reason = refused(rate)
            if reason is None:
                return rate
            tried[rate] = reason
        raise refusal(f"{self.name}: device {dev.index} ({dev.name})", channels, tried, SpeakerDeviceError)

    def _open(self) -> tuple[OutputDevice, int, int, Any]:
        with PORTAUDIO_LOCK:
            return self._open_now()

    def _open_now(self) -> tuple[OutputDevice, int, int, Any]:
        if PORTAUDIO_RESTART.is_set():  # the streams closed for a device plugged in: list afresh first
            _devices._refresh_portaudio()
        sd = _devices._import_sounddevice()
        dev = self._resolve()
        channels = self.wanted_channels or min(2, dev.channels)
        if channels > dev.channels:
            raise SpeakerDeviceError(
                f"{self.name}: device {dev.index} ({dev.name}) has {dev.channels} output channels, not {channels}"
            )
        rate = self._pick_rate(sd, dev, channels)
        self.device_rate, self.channels = rate, channels  # before the first callback
        stream = sd.OutputStream(
            device=dev.index,
            channels=channels,
            samplerate=rate,
            dtype="float32",
            blocksize=max(16, round(self.block_ms * rate / 1000.0)),
            latency=self.latency_ms / 1000.0,
            callback=self._callback,
            finished_callback=self._on_finished,
        )
        _devices._sd_open_streams += 1
        try:
            stream.start()
        except BaseException:
            _close(stream)
            raise
        return dev, rate, channels, stream

    def watches(self) -> list[Watch]:
        return sound_watches()

    async def start(self) -> None:
        if self._stream is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._loop = asyncio.get_running_loop()
        with self._lock:
            self._queue.clear()
            self._starved = True
        self._finished = False
        self._anchor, self._n, self._off = None, 0, 0
        self._last_callback = time.monotonic()
        self._first_callback = None
        self._flowing.clear()
        try:
            dev, rate, channels, stream = await _in_thread(
                self._open, self.open_timeout_s, f"{self.name}: opening", cleanup=lambda r: _close(r[3])
            )
        except (SourceLost, SpeakerDeviceError):
            raise
        except Exception as e:  # PortAudioError, OSError: name the device
            raise SourceLost(f"{self.name}: cannot open device {self.device!r}: {type(e).__name__}: {e}") from None
        self.device_info, self._stream = dev, stream
        self._resampler = StreamResampler(self.sample_rate, rate, 1)
        # PortAudio primes the device with a few callbacks at once; a sound server may take a while more
        # before it consumes: started once the callbacks come at the device's pace
        began = time.monotonic()
        while not self._flowing.is_set():
            if self._finished or time.monotonic() - began > self.open_timeout_s:
                await self.stop()
                raise SourceLost(f"{self._describe()}: opened but does not play (no callbacks)")
            await asyncio.sleep(0.01)
        self._last_callback = time.monotonic()
        log.info("%s: playing %d channels at %d Hz on %s", self.name, channels, rate, dev.name)

    # -- the event loop ------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise ``SourceLost`` when the device has gone (the stream finished, or no callback for ``stall_s``)."""
        if self._stream is None:
            raise RuntimeError(f"{self.name}: not started")
        if self._finished or not self._stream.active:
            raise SourceLost(f"{self._describe()}: the stream ended (device gone?)")
        if PORTAUDIO_RESTART.is_set():
            raise SourceLost(f"{self._describe()}: {RESTARTING}")
        quiet = time.monotonic() - self._last_callback
        if quiet > self.stall_s:
            raise SourceLost(f"{self._describe()}: no callback for {quiet:.1f} s (device gone?)")

    def write(self, samples: np.ndarray) -> None:
        """Queue mono float32 samples at ``sample_rate`` for the device."""
        self.check()
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not x.size:
            return
        rs = self._resampler
        assert rs is not None
        y = rs.process(x[:, None])[:, 0]
        if not y.size:
            return
        limit = round(self.max_queue_ms * self.device_rate / 1000.0)
        with self._lock:  # the far end runs ahead of the device: the oldest goes
            self._queue.push(y)
            self.dropped_samples += self._queue.drop_oldest(limit)

    async def stop(self) -> None:
        stream, self._stream = self._stream, None
        self._loop = None
        if stream is None:
            return
        try:
            await _in_thread(lambda: _close(stream), 5.0, f"{self.name}: closing")
        except Exception as e:  # a device that will not close is left to its thread
            log.warning("%s: %s", self.name, e)

    def _played(self, t: float, y: np.ndarray) -> None:
        if self.on_played is not None:
            self.on_played(t, y, self.device_rate)

    # -- the callback thread -------------------------------------------------------------------------
    def _take(self, frames: int) -> np.ndarray:
        with self._lock:
            if self._starved and self._queue.size < max(1, round(self.prefill_ms * self.device_rate / 1000.0)):
                return np.zeros(frames, dtype=np.float32)
            out, filled = self._queue.take(frames)
            self._starved = filled < frames
            if 0 < filled < frames:
                self.underruns += 1
        return out

    def _stamp(self, now: float, latency_s: float | None, frames: int, underflow: bool) -> float:
        """The time the block's first sample reaches the converter: a timeline counted in samples, set from
        the raw stamps (``now`` plus the DAC latency) at the start, after an underflow, and when they have
        been off it by more than their jitter (``DEADBAND_S``) for ``REANCHOR_AFTER_S`` (the sound server
        changed its buffering, or the clocks drifted apart): piecewise continuous, so the reference is."""
        rate = self.device_rate
        if latency_s is None or not (0.0 <= latency_s < MAX_DAC_LATENCY_S) or not math.isfinite(latency_s):
            latency_s = self.latency_ms / 1000.0
        raw = now + latency_s
        line = self._n / rate
        err = 0.0 if self._anchor is None else raw - (self._anchor + line)
        if self._anchor is not None and abs(err) > DEADBAND_S:
            self._off += frames
        else:
            self._off = 0
        if self._anchor is None or underflow or abs(err) > REANCHOR_AT_ONCE_S or self._off >= REANCHOR_AFTER_S * rate:
            self._anchor, self._off = raw - line, 0
            self.gaps += 1
        t = self._anchor + line
        self._n += frames
        return t

    def _callback(self, outdata: np.ndarray, frames: int, tinfo: Any, status: Any) -> None:
        now = self.clock.now()
        self._last_callback = mono = time.monotonic()
        if self._first_callback is None:
            self._first_callback = mono
        elif mono - self._first_callback >= FLOWING_S:
            self._flowing.set()
        underflow = bool(status.output_underflow)
        if underflow:
            self.device_underflows += 1
        y = self._take(frames) * np.float32(self.volume / 100.0)
        outdata[:] = y[:, None]
        dac, cur = float(tinfo.outputBufferDacTime), float(tinfo.currentTime)
        t = self._stamp(now, dac - cur if dac > 0.0 and cur > 0.0 else None, frames, underflow)
        loop = self._loop
        if loop is not None and y.any():
            try:
                loop.call_soon_threadsafe(self._played, t, y)
            except RuntimeError:  # the loop is closed
                pass

    def _on_finished(self) -> None:
        self._finished = True


def _close(stream: Any) -> None:
    try:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)
    finally:
        with PORTAUDIO_LOCK:
            _devices._sd_open_streams -= 1


@register("speaker", "sounddevice", SoundDeviceSpeakerConfig)
def open_sounddevice_speaker(name: str, cfg: SoundDeviceSpeakerConfig, ctx: DriverContext) -> PortAudioSpeaker:
    _devices._check_sounddevice()
    return PortAudioSpeaker(
        name,
        cfg.device,
        volume=cfg.volume,
        channels=cfg.channels,
        device_rate=cfg.device_rate,
        block_ms=cfg.block_ms,
        latency_ms=cfg.latency_ms,
        prefill_ms=cfg.prefill_ms,
        max_queue_ms=cfg.max_queue_ms,
        stall_s=cfg.stall_s,
        clock=ctx.clock,
    )
