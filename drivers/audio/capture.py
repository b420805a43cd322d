"""Capture from a sound card through PortAudio (python-sounddevice or PyAudio) as an ``AudioSource``.

**Threads.** PortAudio calls back on its own thread with each block. The callback only stamps the block,
copies it and hands it to the event loop (``loop.call_soon_threadsafe``) into a bounded queue; when the
consumer falls behind, the oldest block is dropped (counted in ``dropped_blocks``) and the stream goes on
from the next one (its stamp jumps by the dropped block; the resampler starts afresh there). ``recv()``
applies the channel map and resamples, on the event loop.

**Stamps (the capture clock).** A block's ``t`` is the time of its first sample on ``clock``:
``clock.now()`` read in the callback, minus how long ago PortAudio says the block's first sample was
captured (``time.currentTime - time.inputBufferAdcTime``, a difference on PortAudio's own clock, so its
time base does not matter). Where the host API gives no usable ADC time (0, negative or more than 0.5 s,
as some ALSA plugins do), the block's duration is subtracted instead. These raw stamps jitter with the
scheduling of the callback thread (always late, never early), so they are put on a timeline counted in
samples: ``t = anchor + n / rate``, where the anchor follows the earliest raw stamps (a lower envelope
that may rise by at most 1 ms per second, enough for a sound card's clock drift, and falls by at most half
a block per block, so that stamps always increase). After an overflow (PortAudio's input-overflow flag:
samples were lost), or when the raw stamps have run more than 50 ms late for 0.25 s (samples lost
unannounced, or a sound server that paused the stream; a callback thread that was merely held up catches
up within a few blocks), the timeline is anchored afresh (counted in ``gaps``; ``Hearing`` starts afresh
on such a jump in ``t``).

**Loss.** A device that vanishes (unplugged, its sound server gone) ends the PortAudio stream or stops
calling back; ``recv()`` then raises :class:`~drivers.base.SourceLost` naming the device: at once when
PortAudio reports the stream finished, else after ``stall_s`` seconds without a block. Opening and
closing run on a helper thread with a timeout, so a wedged device never hangs the box; the supervisor
reports the loss (``lost``, with the message) and retries ``start()`` with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from common.clock import SYSTEM_CLOCK, Clock
from common.errors import RoomboxError
from drivers.audio.resample import StreamResampler
from drivers.base import AudioBlock, SourceLost
from drivers.hotplug import Watch, sound_watches

log = logging.getLogger(__name__)

T = TypeVar("T")
OnBlock = Callable[[np.ndarray, "float | None", bool], None]

REANCHOR_S = 0.05  # raw stamps this much later than the timeline ...
REANCHOR_AFTER_S = 0.25  # ... for this long: samples were lost (or the source paused)
# PortAudio is one per process: listing its devices afresh (which ends and restarts it) and opening a stream
# take turns, whichever device's thread does them (a missing mic array's refresh broke a speaker opening).
PORTAUDIO_LOCK = threading.RLock()
# Set when a device that PortAudio can only list afresh was plugged in while streams of ours were open: they
# end (SourceLost, retried by their supervisors), and the first to open again lists the devices afresh.
PORTAUDIO_RESTART = threading.Event()
RESTARTING = "closed so that PortAudio can list a sound device plugged in since it started (it opens again)"

DRIFT = 1e-3  # the timeline's anchor may rise by this many seconds per second (clock drift)
MAX_ADC_LATENCY_S = 0.5


# what PortAudio says when the device or its sound server went away between listing and opening
_GONE = ("Error querying device", "Illegal combination of I/O devices", "host API not found", "not initialized")


def refusal(device: str, channels: int, tried: dict[int, str], error: type[Exception]) -> Exception:
    """The error for a device that took none of the rates ``tried`` (rate -> PortAudio's reason): a
    :class:`SourceLost` when PortAudio cannot reach the device at all (retrying may help), else ``error``
    (the config asks what the device cannot do)."""
    reasons = set(tried.values())
    if len(reasons) == 1 and any(g in (only := next(iter(reasons))) for g in _GONE):
        return SourceLost(f"{device} cannot be opened now: {only} (the device or its sound server went away?)")
    listed = "; ".join(f"{rate} Hz: {reason}" for rate, reason in tried.items())
    return error(f"{device} refuses {channels} channels at every rate tried ({listed})")


class _Listed(Protocol):
    """A device as PortAudio lists it, input or output."""

    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def channels(self) -> int: ...


D = TypeVar("D", bound=_Listed)


def same_device(found: D, devices: Sequence[D], before: D | None, wanted: str | int | None) -> D:
    """The device a config's index meant: once opened, a device given by its index is followed by its name,
    since the indexes move when PortAudio lists the devices afresh (a device plugged in before it). The one
    that took its index is never opened in its place: ``SourceLost`` (retried) until it is back."""
    if not isinstance(wanted, int) or before is None or found.name == before.name:
        return found
    same = [d for d in devices if d.name == before.name and d.channels > 0]
    if len(same) == 1:
        log.warning(
            "device %d is now %r: following %r, the device opened before, at index %d (give the device by "
            "its name in the config: indexes move when devices come and go)",
            wanted, found.name, before.name, same[0].index,
        )  # fmt: skip
        return same[0]
    where = "is not listed" if not same else f"is listed {len(same)} times"
    raise SourceLost(
        f"device {wanted} is now {found.name!r}, not {before.name!r}, which {where} (the devices were listed "
        f"afresh): waiting for it; give the device by its name in the config"
    )


class MicDeviceError(RoomboxError, ValueError):
    """A sound card that cannot be used as configured (missing package, no such channel count or rate);
    the message names the device and the reason."""


@dataclass(frozen=True)
class InputDevice:
    """An input device as PortAudio lists it."""

    index: int
    name: str
    channels: int
    default_rate: float
    host_api: str
    is_default: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "channels": self.channels,
            "default_rate": self.default_rate,
            "host_api": self.host_api,
            "default": self.is_default,
        }


ArrayBlock = AudioBlock  # a sound card's block: ``reference`` is the array's playback channel where it has one


class Stream(Protocol):
    def start(self) -> None: ...

    def close(self) -> None: ...

    def active(self) -> bool: ...


class Backend(Protocol):
    """One Python binding of PortAudio."""

    package: str

    def devices(self) -> list[InputDevice]: ...

    def refresh(self, wanted: str | int | None = None) -> None:
        """List the devices afresh; ``wanted``: the device looked for (it may be plugged in now)."""

    def check(self, index: int, channels: int, rate: int) -> str | None: ...

    def open(
        self, index: int, channels: int, rate: int, blocksize: int, on_block: OnBlock, on_finished: Callable[[], None]
    ) -> Stream: ...


def find_device(devices: Sequence[InputDevice], wanted: str | int | None, default: int | None) -> InputDevice:
    """The input device named by ``wanted``: an index, a part of its name (case-insensitive; an exact name
    wins over parts) or None for the default input. Raises ``SourceLost`` when none matches (it may be
    plugged in later) and ``MicDeviceError`` when the name is ambiguous."""
    inputs = [d for d in devices if d.channels > 0]
    listing = "; ".join(f"{d.index}: {d.name}" for d in inputs) or "none"
    if wanted is None:
        for d in inputs:
            if d.index == default or (default is None and d.is_default):
                return d
        raise SourceLost(f"no default input device (inputs: {listing})")
    if isinstance(wanted, int):
        for d in devices:
            if d.index == wanted:
                if d.channels <= 0:
                    raise MicDeviceError(f"device {wanted} ({d.name}) has no input channels")
                return d
        raise SourceLost(f"no input device {wanted} (inputs: {listing})")
    key = wanted.strip().lower()
    exact = [d for d in inputs if d.name.lower() == key]
    if exact:
        return exact[0]
    found = [d for d in inputs if key in d.name.lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceLost(f"no input device matching {wanted!r} (inputs: {listing})")
    names = "; ".join(f"{d.index}: {d.name}" for d in found)
    raise MicDeviceError(
        f"device {wanted!r} matches {len(found)} input devices ({names}): give more of the name, or the index"
    )


async def _in_thread(fn: Callable[[], T], timeout: float, what: str, cleanup: Callable[[T], None] | None = None) -> T:
    """``fn()`` on a daemon thread; ``SourceLost`` if it has not returned within ``timeout`` seconds (a
    late result is handed to ``cleanup``). A wedged driver call cannot hang the loop or the interpreter."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if fut.done():
            if error is None and cleanup is not None:
                cleanup(result)
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    def run() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as e:  # handed to the awaiting task
            error = e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is gone
            if error is None and cleanup is not None:
                cleanup(result)

    threading.Thread(target=run, daemon=True, name=f"roombox-audio-{what}").start()
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        raise SourceLost(f"{what} did not return within {timeout:g} s") from None


@dataclass
class _Item:
    t: float
    data: np.ndarray
    fresh: bool  # the samples before it are missing (first block, overflow, dropped block): resample afresh


class PortAudioMicArray:
    """An ``AudioSource`` over a sound card: ``recv()`` gives :class:`ArrayBlock` s with channel k =
    microphone k (``channel_map[k]`` of the device), at ``sample_rate``, stamped on ``clock``.

    ``device_rate`` None: the device is opened at ``sample_rate`` when it accepts it, else at its default
    rate (then 48000, 44100) and resampled. ``counters`` has ``overflows`` (PortAudio input overflows),
    ``dropped_blocks`` (the queue was full) and ``gaps`` (times the timeline was anchored afresh).
    """

    def __init__(
        self,
        backend: Backend,
        name: str,
        device: str | int | None,
        channels: int,
        channel_map: Sequence[int],
        sample_rate: int,
        playback_channel: int | None = None,
        device_rate: int | None = None,
        block_ms: float = 20.0,
        queue_blocks: int = 50,
        stall_s: float = 2.0,
        open_timeout_s: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not channel_map:
            raise ValueError(f"{name}: an empty channel map")
        for c in [*channel_map, *([] if playback_channel is None else [playback_channel])]:
            if not 0 <= c < channels:
                raise ValueError(f"{name}: channel {c} is outside the device's {channels} channels")
        self.backend = backend
        self.name = name
        self.device = device
        self.channels = int(channels)
        self.channel_map = [int(c) for c in channel_map]
        self.playback_channel = playback_channel
        self.sample_rate = int(sample_rate)
        self.wanted_device_rate = device_rate
        self.block_ms = float(block_ms)
        self.queue_blocks = int(queue_blocks)
        self.stall_s = float(stall_s)
        self.open_timeout_s = float(open_timeout_s)
        self.clock = clock
        self.device_info: InputDevice | None = None
        self.device_rate = 0
        self.overflows = 0
        self.dropped_blocks = 0
        self.gaps = 0
        self._stream: Stream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Item] = deque()
        self._ready = asyncio.Event()
        self._finished = False
        self._select = self.channel_map + ([] if playback_channel is None else [playback_channel])
        self._resampler: StreamResampler | None = None
        self._in_since_reset = 0
        # the stamping timeline (callback thread only)
        self._anchor: float | None = None
        self._n = 0
        self._late = 0
        self._gap_next = True

    @property
    def counters(self) -> dict[str, int]:
        return {"overflows": self.overflows, "dropped_blocks": self.dropped_blocks, "gaps": self.gaps}

    def _describe(self) -> str:
        d = self.device_info
        return f"{self.name}: device {d.index} ({d.name})" if d else f"{self.name}: device {self.device!r}"

    # -- opening -------------------------------------------------------------------------------------
    def _resolve(self) -> InputDevice:
        try:
            try:
                devices = self.backend.devices()
                found = find_device(devices, self.device, None)
            except SourceLost:
                self.backend.refresh(self.device)  # a device plugged in since PortAudio listed the devices
                devices = self.backend.devices()
                found = find_device(devices, self.device, None)
            return same_device(found, devices, self.device_info, self.device)
        except SourceLost as e:
            raise SourceLost(f"{self.name}: {e}") from None
        except MicDeviceError as e:
            raise MicDeviceError(f"{self.name}: {e}") from None

    def _pick_rate(self, dev: InputDevice) -> int:
        if self.wanted_device_rate is not None:
            reason = self.backend.check(dev.index, self.channels, self.wanted_device_rate)
            if reason is not None:
                raise MicDeviceError(
                    f"{self.name}: device {dev.index} ({dev.name}) refuses {self.channels} "
                    f"channels at device_rate {self.wanted_device_rate} Hz: {reason}"
                )
            return self.wanted_device_rate
        tried: dict[int, str] = {}
        candidates = [self.sample_rate, round(dev.default_rate), 48000, 44100]
        for rate in dict.fromkeys(r for r in candidates if r > 0):
            reason = self.backend.check(dev.index, self.channels, rate)
            if reason is None:
                return rate
            tried[rate] = reason
        raise refusal(f"{self.name}: device {dev.index} ({dev.name})", self.channels, tried, MicDeviceError)

    def _open(self) -> tuple[InputDevice, int, Stream]:
        with PORTAUDIO_LOCK:
            return self._open_now()

    def _open_now(self) -> tuple[InputDevice, int, Stream]:
        if PORTAUDIO_RESTART.is_set():  # the streams closed for a device plugged in: list afresh first
            self.backend.refresh()
        dev = self._resolve()
        if dev.channels < self.channels:
            raise MicDeviceError(
                f"{self.name}: device {dev.index} ({dev.name}) has {dev.channels} input "
                f"channels; the channel map needs {self.channels}"
            )
        rate = self._pick_rate(dev)
        self.device_rate = rate  # before the first callback, which stamps with it
        blocksize = max(16, round(self.block_ms * rate / 1000.0))
        stream = self.backend.open(dev.index, self.channels, rate, blocksize, self._on_block, self._on_finished)
        try:
            stream.start()
        except BaseException:
            stream.close()
            raise
        return dev, rate, stream

    def watches(self) -> list[Watch]:
        return sound_watches()

    async def start(self) -> None:
        if self._stream is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._loop = asyncio.get_running_loop()
        self._queue.clear()
        self._ready = asyncio.Event()
        self._finished = False
        self._anchor, self._n, self._late, self._gap_next = None, 0, 0, True
        try:
            dev, rate, stream = await _in_thread(
                self._open, self.open_timeout_s, f"{self.name}: opening", cleanup=lambda r: r[2].close()
            )
        except (SourceLost, MicDeviceError):
            raise
        except Exception as e:  # the binding's own errors (PortAudioError, OSError): name the device
            raise SourceLost(f"{self.name}: cannot open device {self.device!r}: {type(e).__name__}: {e}") from None
        self.device_info, self.device_rate, self._stream = dev, rate, stream
        self._resampler = StreamResampler(rate, self.sample_rate, len(self._select))
        self._in_since_reset = 0
        log.info("%s: capturing %d channels at %d Hz from %s", self.name, self.channels, rate, dev.name)

    # -- the callback thread -------------------------------------------------------------------------
    def _on_block(self, data: np.ndarray, latency_s: float | None, overflow: bool) -> None:
        now = self.clock.now()
        frames = data.shape[0]
        rate = self.device_rate or self.sample_rate
        if latency_s is None or not (0.0 <= latency_s < MAX_ADC_LATENCY_S) or not math.isfinite(latency_s):
            latency_s = frames / rate
        # the block's first sample is at least a block old when the block is handed over (ALSA's pulse device
        # reports 0.4 ms for 20-ms blocks: a sweep found every stamp a block late)
        latency_s = max(latency_s, frames / rate)
        raw = now - latency_s  # the first sample, as this callback sees it
        if overflow:
            self.overflows += 1
        line = self._n / rate
        anchor = self._anchor
        fresh = self._gap_next or anchor is None or overflow
        if anchor is None or fresh:
            anchor, self._late = raw - line, 0
            self.gaps += 1
        else:
            late = raw - (anchor + line)
            if late < 0.0:  # earlier than ever: the timeline moves back, by half a block at most per block,
                anchor += max(late, -0.5 * frames / rate)  # so that stamps keep increasing
                self._late = 0
            elif late > REANCHOR_S:
                self._late += frames
                if self._late >= REANCHOR_AFTER_S * rate:  # the samples go on: only the stamps jump
                    anchor, self._late = raw - line, 0
                    self.gaps += 1
            else:
                anchor += min(late, DRIFT * frames / rate)
                self._late = 0
        self._anchor = anchor
        self._gap_next = False
        item = _Item(anchor + line, data, fresh)
        self._n += frames
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._put, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _on_finished(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._finish)
            except RuntimeError:
                pass

    # -- the event loop ------------------------------------------------------------------------------
    def _put(self, item: _Item) -> None:
        if len(self._queue) >= self.queue_blocks:
            self._queue.popleft()
            self.dropped_blocks += 1
            (self._queue[0] if self._queue else item).fresh = True
        self._queue.append(item)
        self._ready.set()

    def _finish(self) -> None:
        self._finished = True
        self._ready.set()

    async def _next(self) -> _Item:
        waited = 0.0
        if PORTAUDIO_RESTART.is_set() and self.backend.package == "sounddevice" and self._stream is not None:
            raise SourceLost(f"{self._describe()}: {RESTARTING}")
        while not self._queue:
            if self._stream is None:
                raise RuntimeError(f"{self.name}: recv() before start()")
            if self._finished or not self._stream.active():
                raise SourceLost(f"{self._describe()}: the stream ended (device gone?)")
            if PORTAUDIO_RESTART.is_set() and self.backend.package == "sounddevice":
                raise SourceLost(f"{self._describe()}: {RESTARTING}")
            if waited >= self.stall_s:
                raise SourceLost(f"{self._describe()}: no audio for {waited:.1f} s (device gone?)")
            self._ready.clear()
            step = min(0.25, self.stall_s - waited)
            try:  # not wait_for: on Python 3.11 it swallows a cancel that comes with a block (stop() lost)
                async with asyncio.timeout(step):
                    await self._ready.wait()
            except TimeoutError:
                waited += step
        return self._queue.popleft()

    async def recv(self) -> ArrayBlock:
        while True:
            item = await self._next()
            rs = self._resampler
            assert rs is not None
            if item.fresh:
                rs.reset()
                self._in_since_reset = 0
            x = item.data[:, self._select]
            j0, i0 = rs.samples_out, self._in_since_reset
            y = rs.process(x)
            self._in_since_reset += x.shape[0]
            if not y.shape[0]:
                continue
            t = item.t + (rs.input_time(j0) - i0) / self.device_rate
            m = len(self.channel_map)
            ref = np.ascontiguousarray(y[:, m]) if self.playback_channel is not None else None
            return ArrayBlock(t=t, samples=np.ascontiguousarray(y[:, :m]), sample_rate=self.sample_rate, reference=ref)

    async def stop(self) -> None:
        stream, self._stream = self._stream, None
        self._loop = None
        self._queue.clear()
        if stream is None:
            return
        try:
            await _in_thread(stream.close, 5.0, f"{self.name}: closing")
        except Exception as e:  # a device that will not close is left to its thread (the error names it)
            log.warning("%s", e)
