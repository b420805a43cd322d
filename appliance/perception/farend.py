"""Is this block the far end? How much of the array's sound the playback reference explains.

Pure core: a function of a window of array samples and the playback reference (what was sent to the room's
loudspeaker: mono, same rate, sample-aligned with the array recording); no clock. :class:`FarendMeter` gives
the same figures over a stream of overlapping windows, keeping the spectra of the frames it has seen.

The loudspeaker reaches the mics through an unknown room path: a delay (distance, converter latency) and
reverberation. :func:`farend_share`

1. finds the delay by GCC-PHAT between the mics' mean and the reference, searched over 0..``max_delay``
   samples (the reference window carries that much history before the array window);
2. aligns the reference by it and, over half-overlapping 32 ms frames, estimates per frequency the
   magnitude-squared coherence between the mics and the reference: the share of the mics' power at that
   frequency a linear filter of the reference can explain (the direct sound and early reflections);
3. sums those shares weighted by the mics' power over the speech band, and removes the share unrelated
   signals reach by chance over that few frames.

Far-end-only speech gives a large share (its late reverberation and the room's noise are what is left
unexplained), local talk with a silent or unrelated reference about 0, double talk in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft

BAND_HZ = (200.0, 4000.0)
FRAME_S = 0.032
SILENT_DB = -70.0  # a reference quieter than this (dBFS) plays nothing


@dataclass(frozen=True)
class FarendEstimate:
    """``share``: 0..1 of the mics' band power explained by the reference; ``delay`` in samples from the
    reference to the mics; ``reference_db``: the reference's level over the window (dBFS)."""

    share: float
    delay: int
    reference_db: float


def power_db(power: float) -> float:
    """A mean power in dB (dBFS for full-scale samples); -120 for none."""
    return 10.0 * math.log10(power) if power > 1e-12 else -120.0


def farend_share(
    mics: npt.ArrayLike,
    reference: npt.ArrayLike,
    sample_rate: int,
    max_delay: int,
    delay: int | None = None,
    frame_s: float = FRAME_S,
) -> FarendEstimate:
    """How much of ``mics`` (n, M) the playback ``reference`` explains.

    ``reference`` is 1-D with ``n + max_delay`` samples: its last ``n`` are simultaneous with ``mics``
    and the ``max_delay`` before them are its history. ``delay`` skips the search and uses that delay.
    """
    return FarendMeter(sample_rate, max_delay, frame_s).share(mics, reference, 0, delay)


class FarendMeter:
    """:func:`farend_share` over a stream of overlapping windows, with the same figures.

    Each call names where its window starts in the stream (``start``, in samples). The spectra of the
    frames already analysed (the mics' mean, and the reference at each delay it was aligned by) are kept,
    so a window that moved on by a hop computes only its new frames. :meth:`reset` when the stream's sample
    indices start again.
    """

    def __init__(self, sample_rate: int, max_delay: int, frame_s: float = FRAME_S) -> None:
        if max_delay < 0:
            raise ValueError(f"max_delay must be >= 0, got {max_delay}")
        self.sample_rate = sample_rate
        self.max_delay = max_delay
        # at most frame_s: at 48 kHz 1024 samples, not 2048, so that a block of 64 ms holds two frames
        self.frame = int(2 ** math.floor(math.log2(frame_s * sample_rate) + 1e-9))
        self.hop = self.frame // 2
        self._window = np.hanning(self.frame + 2)[1:-1]
        freqs = np.fft.rfftfreq(self.frame, 1.0 / sample_rate)
        self._band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
        self._mics: dict[int, npt.NDArray[np.complex128]] = {}  # frame start in the stream -> band spectrum
        self._ref: dict[int, npt.NDArray[np.complex128]] = {}  # the same for the reference

    def reset(self) -> None:
        """Forget the frames seen (the stream's sample indices start again)."""
        self._mics.clear()
        self._ref.clear()

    def _spectra(self, signal: npt.NDArray[np.float64], at: npt.NDArray[np.int_]) -> npt.NDArray[np.complex128]:
        """The band spectra of the frames of ``signal`` starting at ``at`` (one row each)."""
        frames = signal[at[:, None] + np.arange(self.frame)[None, :]] * self._window
        out: npt.NDArray[np.complex128] = scipy.fft.rfft(frames, axis=1)[:, self._band]
        return out

    def share(
        self, mics: npt.ArrayLike, reference: npt.ArrayLike, start: int, delay: int | None = None
    ) -> FarendEstimate:
        """:func:`farend_share` of the window of ``mics`` (n, M) whose first sample is sample ``start`` of
        the stream; ``reference`` as there (``n + max_delay`` samples, ending with the window)."""
        max_delay, frame, hop = self.max_delay, self.frame, self.hop
        x = np.asarray(mics)
        if x.ndim == 1:
            x = x[:, None]
        r = np.asarray(reference, dtype=np.float64).reshape(-1)
        n = x.shape[0]
        if r.size != n + max_delay:
            raise ValueError(f"reference has {r.size} samples, need {n + max_delay} (the window plus max_delay)")
        if n < 2 * frame:
            raise ValueError(f"window of {n} samples is too short: need at least {2 * frame}")
        ref_db = power_db(float(np.mean(r[max_delay:] ** 2)))
        if ref_db < SILENT_DB:
            return FarendEstimate(0.0, 0 if delay is None else delay, ref_db)

        if delay is None:
            y = np.asarray(x, dtype=np.float64).mean(axis=1)
            nfft = scipy.fft.next_fast_len(n + r.size)
            ys = scipy.fft.rfft(y, nfft)
            rs = scipy.fft.rfft(r, nfft)
            freqs = np.fft.rfftfreq(nfft, 1.0 / self.sample_rate)
            cross = ys * np.conj(rs)
            cross /= np.abs(cross) + 1e-12
            cross[(freqs < BAND_HZ[0]) | (freqs > BAND_HZ[1])] = 0.0
            cc = scipy.fft.irfft(cross, nfft)
            # y[t] = r[t + max_delay - d]: the correlation peaks at lag d - max_delay (wrapped)
            lags = (np.arange(max_delay + 1) - max_delay) % nfft
            delay = int(np.argmax(cc[lags]))
        delay = min(max(int(delay), 0), max_delay)

        starts = range(0, n - frame + 1, hop)
        # the frames not seen before, each transformed once (all in one call)
        mics_new = [s for s in starts if start + s not in self._mics]
        if mics_new:
            y = np.asarray(x[mics_new[0] : mics_new[-1] + frame], dtype=np.float64).mean(axis=1)
            at = np.array(mics_new) - mics_new[0]
            spectra = self._spectra(y, at)
            for s, f in zip(mics_new, spectra, strict=True):
                self._mics[start + s] = f
        ref_new = [s for s in starts if start + s - delay not in self._ref]  # aligned: in the stream's samples
        if ref_new:
            spectra = self._spectra(r, np.array(ref_new) + (max_delay - delay))
            for s, f in zip(ref_new, spectra, strict=True):
                self._ref[start + s - delay] = f
        yf = np.array([self._mics[start + s] for s in starts])
        rf = np.array([self._ref[start + s - delay] for s in starts])
        oldest = start - max_delay
        for cache in (self._mics, self._ref):
            for key in [k for k in cache if k < oldest]:
                del cache[key]

        syr = np.abs((yf * np.conj(rf)).sum(axis=0)) ** 2
        syy = (np.abs(yf) ** 2).sum(axis=0)
        srr = (np.abs(rf) ** 2).sum(axis=0)
        total = float(syy.sum())
        if total <= 1e-20:
            return FarendEstimate(0.0, delay, ref_db)
        explained = float((syr / np.maximum(srr, 1e-20)).sum())
        share = explained / total
        chance = 1.0 / len(starts)
        share = (share - chance) / (1.0 - chance)
        return FarendEstimate(min(1.0, max(0.0, share)), delay, ref_db)
