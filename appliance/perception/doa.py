"""Direction of arrival by SRP-PHAT (steered response power with the phase transform).

Pure core: arrays in, values out; no clock, no I/O. The array geometry comes from the microphone
positions alone (metres, camera frame: x right, y up, z forward), so any planar or linear array works.

Far-field model, horizontal plane: a talker at azimuth ``a`` lies along ``u(a) = (sin a, 0, cos a)``;
its wave reaches microphone ``m`` earlier than the origin by ``tau_m = p_m . u / c``, so
``X_m(w) = S(w) exp(+j w tau_m)``. SRP-PHAT whitens every channel (``X_m / |X_m|``), undoes the
delays of each candidate direction and sums: ``P(a) = sum_{frames, bins} |sum_m Xn_m exp(-j w tau_m)|^2``.
The self terms (``M`` per bin) are removed, which leaves the GCC-PHAT of all pairs summed; we report
it normalised so that a single coherent plane wave gives 1 at its direction.

Only the front half (-90..+90 degrees) is searched: talkers sit in front of the camera, and a linear
array could not tell front from back anyway.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from appliance.config import DoaConfig

SPEED_OF_SOUND = 343.0  # m/s, room temperature
SUBFRAME_S = 0.016  # sub-frame length averaged within a block; 16 ms still covers any delay of a box array

FloatArray = npt.NDArray[np.float64]


def _subframe_len(block_len: int, sample_rate: int) -> int:
    """A power of two near SUBFRAME_S, never longer than the block."""
    n = int(2 ** round(math.log2(max(8.0, SUBFRAME_S * sample_rate))))
    while n > block_len:
        n //= 2
    return max(n, 8)


class SrpPhat:
    """SRP-PHAT over an azimuth grid; the steering phases are computed once, here."""

    def __init__(self, positions: npt.ArrayLike, sample_rate: int, cfg: DoaConfig) -> None:
        pos = np.asarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 2:
            raise ValueError(f"positions must be (M, 3) with M >= 2, got shape {pos.shape}")
        if cfg.fmax_hz <= cfg.fmin_hz:
            raise ValueError(f"fmax_hz ({cfg.fmax_hz}) must be above fmin_hz ({cfg.fmin_hz})")
        self.positions = pos
        self.sample_rate = int(sample_rate)
        self.n_mics = int(pos.shape[0])
        self.block_len = max(8, round(cfg.block_ms * sample_rate / 1000.0))
        self.frame_len = _subframe_len(self.block_len, self.sample_rate)
        n_frames = max(1, 1 + (self.block_len - self.frame_len) // (self.frame_len // 2))
        # spread the sub-frames evenly over the whole block (50 % overlap or a little more)
        self._starts = np.linspace(0, self.block_len - self.frame_len, n_frames).round().astype(int)
        self._window = np.hanning(self.frame_len + 2)[1:-1].astype(np.float32)

        freqs = np.fft.rfftfreq(self.frame_len, 1.0 / self.sample_rate)
        nyquist = self.sample_rate / 2.0
        sel = np.flatnonzero((freqs >= cfg.fmin_hz) & (freqs <= min(cfg.fmax_hz, nyquist)) & (freqs > 0))
        if sel.size == 0:
            raise ValueError(f"no FFT bin between {cfg.fmin_hz} and {cfg.fmax_hz} Hz at {sample_rate} Hz")
        self._bins = sel
        self.freqs_hz: FloatArray = np.asarray(freqs[sel], dtype=np.float64)

        n_grid = int(math.floor(180.0 / cfg.grid_deg + 1e-9)) + 1
        self.grid_deg: FloatArray = -90.0 + cfg.grid_deg * np.arange(n_grid, dtype=np.float64)
        self.grid_step_deg = float(cfg.grid_deg)
        az = np.radians(self.grid_deg)
        directions = np.stack([np.sin(az), np.zeros_like(az), np.cos(az)], axis=1)  # (G, 3)
        tau = pos @ directions.T / SPEED_OF_SOUND  # (M, G): how much earlier mic m hears direction g
        omega = 2.0 * np.pi * self.freqs_hz
        # (K, M, G): exp(-j w tau) undoes the advance of each microphone
        self._steer = np.exp(-1j * omega[:, None, None] * tau[None, :, :]).astype(np.complex64)

    def _whitened(self, block: npt.ArrayLike) -> npt.NDArray[np.complex64]:
        x = np.asarray(block, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_mics:
            raise ValueError(f"block must be (samples, {self.n_mics}), got shape {x.shape}")
        if x.shape[0] < self.block_len:
            raise ValueError(f"block has {x.shape[0]} samples, need {self.block_len}")
        x = x[-self.block_len :]
        idx = self._starts[:, None] + np.arange(self.frame_len)[None, :]  # (F, N)
        frames = x[idx] * self._window[None, :, None]  # (F, N, M)
        spec = np.fft.rfft(frames, axis=1)[:, self._bins, :]  # (F, K, M)
        mag = np.abs(spec)
        floor = 1e-6 * (float(mag.max()) + 1e-20)  # silent bins stay near zero instead of exploding
        return (spec / (mag + floor)).astype(np.complex64)

    def spectrum(self, block: npt.ArrayLike) -> FloatArray:
        """Normalised SRP-PHAT power per grid angle (``grid_deg``): 1 for one ideal plane wave, ~0 for
        diffuse noise. ``block`` is (samples, M); its last ``block_len`` samples are analysed."""
        xn = self._whitened(block)  # (F, K, M)
        beams = np.matmul(xn.transpose(1, 0, 2), self._steer)  # (K, F, G)
        power = (beams.real**2 + beams.imag**2).astype(np.float64).mean(axis=(0, 1))
        # |X_m| = 1 after PHAT, so the self terms sum to M; what is left is the sum over ordered pairs
        m = self.n_mics
        return np.asarray((power - m) / (m * (m - 1)), dtype=np.float64)

    def estimate(self, block: npt.ArrayLike) -> tuple[float, float]:
        """Azimuth (degrees, refined between grid points) and a confidence in 0..1.

        The confidence is the height of the peak above the spectrum's mean, relative to the height an
        ideal plane wave would give: ~0 for noise, towards 1 for a clean, direct source.
        """
        p = self.spectrum(block)
        return self.peak(p)

    def peak(self, p: FloatArray) -> tuple[float, float]:
        """The refined azimuth and confidence of a spectrum from :meth:`spectrum`."""
        i = int(np.argmax(p))
        offset = 0.0
        if 0 < i < p.size - 1:
            left, mid, right = float(p[i - 1]), float(p[i]), float(p[i + 1])
            den = left - 2.0 * mid + right
            if den < 0.0:
                offset = min(0.5, max(-0.5, 0.5 * (left - right) / den))
        azimuth = float(self.grid_deg[i]) + offset * self.grid_step_deg
        mean = float(p.mean())
        confidence = (float(p[i]) - mean) / max(1.0 - mean, 1e-9)
        return azimuth, min(1.0, max(0.0, confidence))
