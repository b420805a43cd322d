"""Is this block the far end? How much of the array's sound the playback reference explains.

Pure core: a function of a window of array samples and the playback reference (what was sent to the room's
loudspeaker: mono, same rate, sample-aligned with the array recording); no state, no clock.

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
    x = np.asarray(mics, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    if max_delay < 0:
        raise ValueError(f"max_delay must be >= 0, got {max_delay}")
    if r.size != n + max_delay:
        raise ValueError(f"reference has {r.size} samples, need {n + max_delay} (the window plus max_delay)")
    y = x.mean(axis=1)
    frame = int(2 ** round(math.log2(frame_s * sample_rate)))
    if n < 2 * frame:
        raise ValueError(f"window of {n} samples is too short: need at least {2 * frame}")
    ref_db = power_db(float(np.mean(r[max_delay:] ** 2)))
    if ref_db < SILENT_DB:
        return FarendEstimate(0.0, 0 if delay is None else delay, ref_db)

    if delay is None:
        nfft = scipy.fft.next_fast_len(n + r.size)
        ys = scipy.fft.rfft(y, nfft)
        rs = scipy.fft.rfft(r, nfft)
        freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
        cross = ys * np.conj(rs)
        cross /= np.abs(cross) + 1e-12
        cross[(freqs < BAND_HZ[0]) | (freqs > BAND_HZ[1])] = 0.0
        cc = scipy.fft.irfft(cross, nfft)
        # y[t] = r[t + max_delay - d]: the correlation peaks at lag d - max_delay (wrapped)
        lags = (np.arange(max_delay + 1) - max_delay) % nfft
        delay = int(np.argmax(cc[lags]))
    delay = min(max(int(delay), 0), max_delay)
    aligned = r[max_delay - delay : max_delay - delay + n]

    hop = frame // 2
    starts = np.arange(0, n - frame + 1, hop)
    idx = starts[:, None] + np.arange(frame)[None, :]
    window = np.hanning(frame + 2)[1:-1]
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    yf = scipy.fft.rfft(y[idx] * window, axis=1)[:, band]
    rf = scipy.fft.rfft(aligned[idx] * window, axis=1)[:, band]
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
