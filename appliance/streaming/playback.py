"""The far end's sound on the room's loudspeaker, and what was played kept as the hearing's playback reference.

:class:`Playback` (a supervised task of the box, ``await playback.run(started)``) every ``tick_s``:

1. reads the new chunks of every far-end audio hub ``sources()`` returns (each Janus participant's
   :class:`~appliance.streaming.janus.FarEnd` ``audio``: :func:`far_end_audio`), resamples each to the mic
   array's rate and mixes them;
2. writes the mix to the speaker (:class:`drivers.audio.speaker.PortAudioSpeaker`, which resamples it to the
   device's rate and applies the volume);
3. the speaker hands back, from its callback, the samples it actually sent to the device, stamped with the
   time they reach its converter on the capture clock; they go into :class:`PlaybackReference` (at the mic
   array's rate).

The box then gives the hearing, for each captured mic block ``(t, samples)``, the reference covering the same
span: ``playback.reference.reference_for(block.t, len(block.samples))`` (None while nothing was played, which
the Listener takes as silence), as ``ears.feed(block.samples, block.t, reference=...)``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from appliance.streaming.hub import AudioHub
from common.clock import SYSTEM_CLOCK, Clock
from drivers.audio.fifo import SampleFifo
from drivers.audio.resample import StreamResampler

log = logging.getLogger(__name__)

CONTIGUOUS_S = 0.0005  # a chunk starting this close to where the last one ended continues it


class PlaybackReference:
    """What the loudspeaker played, as (t, mono float32 samples at ``sample_rate``) chunks on the capture
    clock, for the last ``keep_s`` seconds. ``add`` takes chunks at any rate (resampled, continuous while the
    chunks follow each other); ``window(t0, n)`` gives the ``n`` samples from ``t0`` on, zeros where nothing
    was played. Not thread-safe: used on the event loop."""

    def __init__(self, sample_rate: int, keep_s: float = 10.0) -> None:
        if sample_rate <= 0 or keep_s <= 0:
            raise ValueError(f"sample_rate {sample_rate} and keep_s {keep_s} must be > 0")
        self.sample_rate = int(sample_rate)
        self.keep_s = float(keep_s)
        self._starts: list[float] = []
        self._chunks: list[np.ndarray] = []
        self._resampler: StreamResampler | None = None
        self._next_in: float | None = None  # where the next input chunk continues the last one
        self._t_in0 = 0.0  # time of input sample 0 since the resampler's reset
        self.added = 0  # samples stored

    def add(self, t: float, samples: np.ndarray, rate: int | None = None) -> None:
        """Store what was played from ``t`` on: mono ``samples`` at ``rate`` (default: ``sample_rate``)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        rate = self.sample_rate if rate is None else int(rate)
        if not x.size:
            return
        if rate != self.sample_rate:
            rs = self._resampler
            if rs is None or rs.in_rate != rate or self._next_in is None or abs(t - self._next_in) > CONTIGUOUS_S:
                rs = self._resampler = StreamResampler(rate, self.sample_rate, 1)  # a gap: afresh
                self._t_in0 = t
            self._next_in = t + x.size / rate
            j0 = rs.samples_out
            y = rs.process(x[:, None])[:, 0]
            if not y.size:
                return
            t, x = self._t_in0 + rs.input_time(j0) / rate, y
        self._store(float(t), x)

    def _store(self, t: float, x: np.ndarray) -> None:
        last = self.last_t
        if last is not None and abs(t - last) <= CONTIGUOUS_S:  # the stamps' timeline nudged: no jump
            t = last
        if self._starts and t < self._starts[-1]:  # stamps that went back (a timeline set afresh): newest wins
            i = bisect.bisect_right(self._starts, t)
            del self._starts[i:], self._chunks[i:]
        if self._starts:  # the previous chunk ends where this one starts at the latest
            keep = max(0, round((t - self._starts[-1]) * self.sample_rate))
            if keep < self._chunks[-1].size:
                self._chunks[-1] = self._chunks[-1][:keep]
        self._starts.append(t)
        self._chunks.append(x)
        self.added += x.size
        horizon = t - self.keep_s
        drop = 0
        while (
            drop < len(self._starts) - 1 and self._starts[drop] + self._chunks[drop].size / self.sample_rate < horizon
        ):
            drop += 1
        if drop:
            del self._starts[:drop], self._chunks[:drop]

    @property
    def last_t(self) -> float | None:
        """The end of the newest chunk (the time up to which something was played), None before any."""
        if not self._starts:
            return None
        return self._starts[-1] + self._chunks[-1].size / self.sample_rate

    def window(self, t0: float, n: int) -> np.ndarray:
        """The ``n`` samples played from ``t0`` on (float32), zeros where nothing was played."""
        out = np.zeros(max(0, int(n)), dtype=np.float32)
        fs = self.sample_rate
        t1 = t0 + n / fs
        i = max(0, bisect.bisect_right(self._starts, t0) - 1)
        while i < len(self._starts) and self._starts[i] < t1:
            x = self._chunks[i]
            at = round((self._starts[i] - t0) * fs)  # where the chunk's first sample falls in the window
            a, b = max(0, at), min(out.size, at + x.size)
            if b > a:
                out[a:b] = x[a - at : b - at]
            i += 1
        return out

    def reference_for(self, t0: float, n: int, margin_s: float = 1.0) -> np.ndarray | None:
        """``window(t0, n)``, or None when nothing was played from ``margin_s`` before ``t0`` to its end (the
        hearing then has no far end to look for and spares the work)."""
        last = self.last_t
        if last is None or last < t0 - margin_s:
            return None
        i = bisect.bisect_right(self._starts, t0 + n / self.sample_rate)
        if i == 0:
            return None
        return self.window(t0, n)


class Speaker(Protocol):
    """What the playback path needs of a loudspeaker driver (:class:`drivers.audio.speaker.PortAudioSpeaker`)."""

    name: str
    sample_rate: int
    on_played: Callable[[float, np.ndarray, int], None] | None

    async def start(self) -> None: ...

    def write(self, samples: np.ndarray) -> None: ...

    def check(self) -> None: ...

    async def stop(self) -> None: ...


def far_end_audio(connectors: Iterable[Any]) -> list[AudioHub]:
    """The audio hubs of every far end the connectors receive (a connector with ``far_ends``, each with an
    ``audio`` :class:`AudioHub`: the Janus VideoRoom's participants)."""
    hubs: list[AudioHub] = []
    for c in connectors:
        for far in list(getattr(c, "far_ends", {}).values()):
            audio = getattr(far, "audio", None)
            if isinstance(audio, AudioHub):
                hubs.append(audio)
    return hubs


class _Input:
    """One far end's sound: its hub cursor, its resampler to the mix rate, what is waiting to be mixed."""

    def __init__(self) -> None:
        self.cursor = 0
        self.resampler: StreamResampler | None = None
        self.pending = SampleFifo()

    def take(self, hub: AudioHub, rate: int) -> None:
        self.cursor, chunks = hub.read(self.cursor)
        for c in chunks:
            if self.resampler is None or self.resampler.in_rate != c.sample_rate:
                self.resampler = StreamResampler(c.sample_rate, rate, 1)
            self.pending.push(self.resampler.process((c.samples.astype(np.float32) / 32768.0)[:, None])[:, 0])


class Playback:
    """The far ends' sound mixed onto ``speaker`` at ``sample_rate`` (the mic array's), and the reference.

    ``sources()`` returns the far-end audio hubs now (e.g. ``lambda: far_end_audio(connectors)``).
    """

    def __init__(
        self,
        speaker: Speaker,
        sample_rate: int,
        sources: Callable[[], Iterable[AudioHub]],
        clock: Clock = SYSTEM_CLOCK,
        tick_s: float = 0.01,
        keep_s: float = 10.0,
    ) -> None:
        self.speaker = speaker
        self.sample_rate = int(sample_rate)
        self.sources = sources
        self.clock = clock
        self.tick_s = tick_s
        self.reference = PlaybackReference(self.sample_rate, keep_s)
        speaker.sample_rate = self.sample_rate
        speaker.on_played = self.reference.add
        self._inputs: dict[AudioHub, _Input] = {}
        self.written = 0  # samples written to the speaker since start

    def mix(self) -> np.ndarray:
        """The far ends' new sound, mixed (float32 mono at ``sample_rate``); empty when there is none."""
        hubs = list(self.sources())
        for gone in [h for h in self._inputs if h not in hubs]:  # a far end that left
            del self._inputs[gone]
        for hub in hubs:
            self._inputs.setdefault(hub, _Input()).take(hub, self.sample_rate)
        n = max((i.pending.size for i in self._inputs.values()), default=0)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        out = np.zeros(n, dtype=np.float32)
        for i in self._inputs.values():
            if i.pending.size:
                out += i.pending.take(n)[0]
        return np.clip(out, -1.0, 1.0)

    def step(self) -> int:
        """Mix what arrived and write it to the speaker; returns the samples written."""
        x = self.mix()
        if x.size:
            self.speaker.write(x)
            self.written += x.size
        else:
            self.speaker.check()
        return int(x.size)

    async def run(self, started: Callable[[], None]) -> None:
        """Play until cancelled (for :func:`appliance.supervisor.supervise`): a lost speaker raises."""
        await self.speaker.start()
        try:
            self._inputs.clear()
            for h in self.sources():  # what arrived before the speaker was there is not played late
                self._inputs.setdefault(h, _Input()).cursor = h.seq
            self.written = 0
            started()
            while True:
                self.step()
                await self.clock.sleep_until(self.clock.now() + self.tick_s)
        finally:
            await self.speaker.stop()
