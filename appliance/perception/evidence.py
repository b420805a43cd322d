"""Soft DOA evidence: every block gives up to a few direction estimates, each weighted by its trust.

Pure core: arrays in, values out; no clock, no I/O. The only state is a per-frequency noise floor (a fan,
air conditioning) learnt block by block, as :class:`appliance.perception.vad.EnergyVad` learns its level.

Per block (``block_ms`` of samples, cut into half-overlapping sub-frames of ~16 ms):

1. **Time-frequency weights.** Each sub-frame bin is weighted by how far it stands above the learnt noise
   floor of its frequency (``1 - 2 N(k) / P(f, k)``, clipped to 0..1): bins a steady fan dominates count for
   nothing while a talker speaks. Blocks that are not speech are analysed without this weight, so that the
   steady sources themselves are localised and the tracker can learn them.
2. **Coherence / direct-path dominance per bin.** With PHAT-whitened spectra, the weighted mean of
   ``Xi Xj*`` over the block's sub-frames has magnitude 1 when one direct wave dominates the bin (a stable
   phase difference) and falls towards ``1/sqrt(frames)`` in reverberation or diffuse noise. Each bin's
   weight is its excess coherence over that chance level.
3. **GCC per pair, SRP by lag tables.** The weighted cross-spectra go through one inverse FFT per
   microphone pair (4x interpolated lags); the steered response at each grid direction is the sum, over
   pairs, of the pair's correlation at that direction's delay (linearly interpolated; as ODAS does). The
   response is normalised so that one ideal plane wave gives 1.
4. **Directions.** Azimuth on a ring (all 360 degrees for a planar array, the front half for a linear one,
   within ``max_azimuth_deg`` of the axis; 0 = the camera's axis, positive to its right), then elevation at
   that azimuth (0..85 degrees for a horizontal planar array, which cannot tell up from down: a source is
   taken to be above; -40..85 when the array has height). A second source: the first one's lags are
   blanked in every pair's correlation and the ring searched again.

Each :class:`Candidate` carries ``weight`` in 0..1: the peak's height above the ring's mean (how sharp and
coherent the peak is) times the square root of the share of the band that carried direct-path evidence.

The arithmetic is written twice: as numpy calls here (the reference, and what runs when numba cannot) and as
compiled loops in :mod:`appliance.perception.kernels` (the default: a block's arrays are small, and numpy's
50-odd calls a block cost more than their arithmetic). ``tests/test_listening.py`` holds the two to the same
estimates, block by block.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.fft

from appliance.perception.doa import SPEED_OF_SOUND, SUBFRAME_S

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
LagTable = tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]  # (G, P) lower, upper index; fraction
UPSAMPLE = 4  # lag interpolation of the pair correlations
FLOOR_RISE_DB_PER_S = 1.0
FLOOR_FALL = 0.5
WARMUP_S = 0.5
OVER_SUBTRACT = 2.0  # a bin counts fully only when its power is well above twice the floor
ELEV_STEP_DEG = 5.0
ELEV_FMIN_HZ = 1500.0  # elevation is searched on this part of the band only


def _scipy_rfft(x: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
    out: npt.NDArray[np.complex64] = scipy.fft.rfft(x, axis=-1)
    return out


def _scipy_irfft(x: npt.NDArray[np.complex64], n: int) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = scipy.fft.irfft(x, n)
    return out


RfftFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.complex64]]
IrfftFn = Callable[[npt.NDArray[np.complex64], int], npt.NDArray[np.float32]]


def _transforms(pocketfft: Any) -> tuple[RfftFn, IrfftFn]:
    """``rfft``/``irfft`` on ``pocketfft`` (scipy.fft's own, without its dispatch, which costs more than a short
    transform itself) when its private ``r2c``/``c2r`` run with the arguments below and give scipy.fft's answers
    on a tiny probe, else scipy.fft's: a private signature changed by a scipy release falls back here, once at
    import, instead of raising on the first audio block."""

    def fast_rfft(x: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
        """The real FFT of ``x`` along its last axis (as ``scipy.fft.rfft(x, axis=-1)``)."""
        out: npt.NDArray[np.complex64] = pocketfft.r2c(x, (x.ndim - 1,), True, 0, None, 1)
        return out

    def fast_irfft(x: npt.NDArray[np.complex64], n: int) -> npt.NDArray[np.float32]:
        """The inverse real FFT of the 1-D spectrum ``x``, ``n`` samples (as ``scipy.fft.irfft(x, n)``)."""
        out: npt.NDArray[np.float32] = pocketfft.c2r(x, (0,), n, False, 2, None, 1)
        return out

    probe = np.sin(np.arange(2 * 12, dtype=np.float32) * 0.37).reshape(2, 12) + np.float32(0.25)
    try:
        spec, want = fast_rfft(probe), _scipy_rfft(probe)
        back, want_back = fast_irfft(want[1], 12), _scipy_irfft(want[1], 12)
        agree = all(
            isinstance(got, np.ndarray)
            and (got.shape, got.dtype) == (ref.shape, ref.dtype)
            and np.allclose(got, ref, rtol=1e-4, atol=1e-5)
            for got, ref in ((spec, want), (back, want_back))
        )
    except Exception:
        agree = False
    return (fast_rfft, fast_irfft) if agree else (_scipy_rfft, _scipy_irfft)


try:
    _pocketfft: Any = importlib.import_module("scipy.fft._pocketfft.pypocketfft")
except Exception:  # pragma: no cover - another scipy layout
    _pocketfft = None
rfft, irfft = _transforms(_pocketfft)


@functools.cache
def _warm_kernels() -> Any:
    """The compiled kernels module, each kernel loaded (from numba's on-disk cache, or compiled) by one block
    of a small array: once per process, when the first :class:`SoftSrp` is made, not on its first audio
    block (under a second). None, with a warning, when they cannot be had (numba missing, or no writable
    cache directory): the numpy path then gives the same estimates (the evidence at about three times the CPU,
    the listener at about 1.3 times)."""
    try:
        from appliance.perception import kernels
    except (ImportError, RuntimeError) as e:
        log.warning(
            "the DOA evidence runs without its compiled kernels (%s): the same estimates at more CPU (the "
            "listener about 1.3 times). Give numba a writable cache directory (NUMBA_CACHE_DIR) to compile them.",
            e,
        )
        return None
    mics = [[0.05, 0.0, 0.0], [-0.05, 0.0, 0.0], [0.0, 0.0, 0.05]]
    srp = SoftSrp(mics, 16000, 64.0, 200.0, 4000.0, 5.0, compiled=False)
    srp._kernels = kernels
    block = np.random.default_rng(0).standard_normal((srp.block_len, 3)).astype(np.float32)
    srp.prepare(block)
    srp.evidence(False, 2, 0.45, 0.0)
    return kernels


@dataclass(frozen=True)
class Candidate:
    """One direction estimate of one block: degrees in the camera frame (azimuth 0 = camera axis, positive
    to its right; elevation positive up), ``height`` the normalised SRP at the peak (1 for an ideal plane
    wave) and ``weight`` in 0..1, how far it can be trusted."""

    azimuth_deg: float
    elevation_deg: float
    height: float
    weight: float


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def _direct_share(
    gamma: npt.NDArray[np.complex64], diffuse: npt.NDArray[np.float32], c: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Share of direct (coherent, directional) power in each bin, from the measured complex coherence and
    the diffuse field's: the coherent-to-diffuse ratio, DOA-independent estimator of Schwarz and Kellermann
    (2015), as CDR / (1 + CDR). 0 where the bin is as coherent as a diffuse field would make it (low
    frequencies on close pairs, reverberation), towards 1 for one direct wave. ``c``: ``1 - diffuse**2``,
    when the caller keeps it."""
    re = gamma.real
    im = gamma.imag
    g2 = re * re
    g2 += im * im
    np.minimum(g2, np.float32(1.0 - 1e-4), out=g2)
    n = diffuse
    # with v = n re - 1 and d = 1 - g2:
    #   root = sqrt(n^2 (re^2 - g2 + 1) - 2 n re + g2) = sqrt(v^2 - (1 - n^2) d)
    #   CDR = (n re - g2 - root) / (g2 - 1) = (root - v - d) / d, at least 0
    #   and the share CDR / (1 + CDR) = max(root - v - d, 0) / (max(root - v - d, 0) + d)
    d = np.subtract(1.0, g2, out=g2)
    v = n * re
    v -= 1.0
    root = v * v
    root -= (1.0 - n * n if c is None else c) * d
    np.maximum(root, 0.0, out=root)
    np.sqrt(root, out=root)
    num = np.subtract(root, v, out=root)
    num -= d
    np.maximum(num, 0.0, out=num)
    d += num
    num /= d
    share: npt.NDArray[np.float32] = num
    return share


def array_shape(positions: FloatArray) -> tuple[bool, bool, bool]:
    """(horizontal plane spanned, has height, elevation observable) of mic positions (M, 3), camera frame."""
    centred = positions - positions.mean(axis=0)
    horiz = centred[:, [0, 2]]
    sv = np.linalg.svd(horiz, compute_uv=False) if horiz.shape[0] >= 2 else np.zeros(1)
    planar_2d = bool(sv.size >= 2 and sv[1] > 0.05 * max(sv[0], 1e-9) and sv[1] > 1e-3)
    has_height = bool(np.ptp(centred[:, 1]) > 0.01)
    return planar_2d, has_height, planar_2d or has_height


class SoftSrp:
    """Weighted SRP-PHAT over azimuth (and elevation), lag tables computed once, here. ``compiled``: through
    :mod:`appliance.perception.kernels` (falls back to the numpy path, with a warning, when they cannot be
    had)."""

    def __init__(
        self,
        positions: npt.ArrayLike,
        sample_rate: int,
        block_ms: float,
        fmin_hz: float,
        fmax_hz: float,
        grid_deg: float = 1.0,
        hop_ms: float | None = None,
        full_circle: bool = True,
        max_azimuth_deg: float = 90.0,
        compiled: bool = True,
    ) -> None:
        pos = np.asarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 2:
            raise ValueError(f"positions must be (M, 3) with M >= 2, got shape {pos.shape}")
        if fmax_hz <= fmin_hz:
            raise ValueError(f"fmax_hz ({fmax_hz}) must be above fmin_hz ({fmin_hz})")
        self.positions = pos
        self.sample_rate = int(sample_rate)
        self.n_mics = int(pos.shape[0])
        self.block_len = max(8, round(block_ms * sample_rate / 1000.0))
        n = int(2 ** round(math.log2(max(8.0, SUBFRAME_S * sample_rate))))
        while n > self.block_len:
            n //= 2
        self.frame_len = max(n, 8)
        n_frames = max(1, 1 + (self.block_len - self.frame_len) // (self.frame_len // 2))
        self._starts = np.linspace(0, self.block_len - self.frame_len, n_frames).round().astype(int)
        self._idx = self._starts[:, None] + np.arange(self.frame_len)[None, :]
        self._window = np.hanning(self.frame_len + 2)[1:-1].astype(np.float32)
        freqs = np.fft.rfftfreq(self.frame_len, 1.0 / self.sample_rate)
        sel = np.flatnonzero((freqs >= fmin_hz) & (freqs <= min(fmax_hz, self.sample_rate / 2.0)) & (freqs > 0))
        if sel.size == 0:
            raise ValueError(f"no FFT bin between {fmin_hz} and {fmax_hz} Hz at {sample_rate} Hz")
        self._bins = sel
        self._n_voice = int(np.count_nonzero(freqs[sel] <= 3400.0))  # the voice-activity band (as EnergyVad)
        self._level_scale = 2.0 / (self.frame_len * float(np.sum(np.hanning(self.frame_len + 2)[1:-1] ** 2)))
        self._chance = 1.0 / math.sqrt(n_frames)  # coherence of unrelated phases over the block's frames

        ii, jj = np.triu_indices(self.n_mics, k=1)
        mics = np.arange(self.n_mics)
        self._zi, self._zj = np.concatenate([ii, mics]), np.concatenate([jj, mics])  # pairs, then each mic
        self._ii, self._jj = ii.astype(np.intp), jj.astype(np.intp)
        self._auto_i, self._auto_j = ii.size + ii, ii.size + jj  # the pair's mics among those rows
        self.n_pairs = int(ii.size)
        self._fs_up = UPSAMPLE * self.sample_rate
        self._pair_vec = pos[ii] - pos[jj]  # (P, 3)
        dist = np.linalg.norm(self._pair_vec, axis=1)
        # coherence of an ideal diffuse field (reverberation, room noise) per bin and pair: sinc(2 f d / c)
        # coherence of an ideal diffuse field (reverberation, room noise) per pair and bin: sinc(2 f d / c)
        diffuse = np.sinc(2.0 * dist[:, None] * freqs[sel][None, :] / SPEED_OF_SOUND).astype(np.float32)
        self._diffuse = diffuse  # (P, K)
        self._diffuse_c = 1.0 - diffuse * diffuse
        max_lag = int(math.ceil(float(np.linalg.norm(self._pair_vec, axis=1).max()) / SPEED_OF_SOUND * self._fs_up)) + 2
        self._max_lag = max_lag
        self._lag_len = 2 * max_lag + 1  # correlations are only needed at the lags an array can produce
        lags = np.arange(-max_lag, max_lag + 1, dtype=np.float64)
        w = 2.0 * np.pi * freqs[sel]
        self._high = freqs[sel] >= ELEV_FMIN_HZ
        phase = w[:, None] * lags[None, :] / self._fs_up  # (K, NL)
        # sum_k Re(G(k) exp(+j w n / fs_up)) = Re(G) cos - Im(G) sin: with G as interleaved (re, im) floats,
        # one real product gives every lag
        lag_tf = np.empty((2 * sel.size, lags.size), np.float32)
        lag_tf[0::2] = np.cos(phase)
        lag_tf[1::2] = -np.sin(phase)
        self._lag_tf = lag_tf  # (2K, NL)
        self._hi0 = int(np.argmax(self._high)) if self._high.any() else sel.size  # the upper band's first bin
        self._lag_tf_high = np.ascontiguousarray(lag_tf[2 * self._hi0 :])
        self._bin_lo, self._bin_hi = int(sel[0]), int(sel[-1]) + 1  # the analysed bins are one run
        lobe = self._fs_up / (2.0 * (min(fmax_hz, self.sample_rate / 2.0) - fmin_hz))
        self._blank = max(1, int(round(lobe)))  # half-width of a peak in lag samples, blanked for source 2

        self.planar_2d, self.has_height, self.elevation_ok = array_shape(pos)
        self.full_circle = bool(full_circle and self.planar_2d)
        self._limit = 180.0
        if self.full_circle:
            n_grid = int(round(360.0 / grid_deg))
            self.grid_deg: FloatArray = -180.0 + (360.0 / n_grid) * np.arange(n_grid, dtype=np.float64)
        else:  # the front half, within max_azimuth_deg of the axis
            self._limit = min(90.0, float(max_azimuth_deg))
            n_grid = int(math.floor(2.0 * self._limit / grid_deg + 1e-9)) + 1
            self.grid_deg = -self._limit + grid_deg * np.arange(n_grid, dtype=np.float64)
        self.grid_step_deg = float(self.grid_deg[1] - self.grid_deg[0])
        if self.elevation_ok:
            lo = -40.0 if self.has_height else 0.0
            self._elev: FloatArray = np.arange(lo, 85.0 + 1e-9, ELEV_STEP_DEG)
        else:
            self._elev = np.zeros(1)
        self._el0 = int(np.argmin(np.abs(self._elev)))
        # one table for every (elevation, azimuth) of the grid: (E, G, P)
        az_all = np.tile(self.grid_deg, self._elev.size)
        el_all = np.repeat(self._elev, self.grid_deg.size)
        i0, i1, fr = self._lag_table(az_all, el_all)
        shape = (self._elev.size, self.grid_deg.size, self.n_pairs)
        self._t0, self._t1, self._tf = i0.reshape(shape), i1.reshape(shape), fr.reshape(shape)
        self._ring: LagTable = (self._t0[self._el0], self._t1[self._el0], self._tf[self._el0])
        # the ring's interpolation: both lags of every pair at every azimuth, (2P, G) flat indices and weights
        # (a gather, where a dense (P * lags, G) matrix would be mostly zeros and crowd the cache)
        self._ring_idx = np.ascontiguousarray(np.concatenate([self._ring[0], self._ring[1]], axis=1).T)
        self._ring_w = np.ascontiguousarray(
            np.concatenate([1.0 - self._ring[2], self._ring[2]], axis=1).T.astype(np.float32)
        )
        # the elevation tables by azimuth, contiguous: (G, E, P) indices and interpolation weights
        # (G, E, 2P): both interpolation points of every pair
        self._el_idx = np.ascontiguousarray(np.concatenate([self._t0, self._t1], axis=2).transpose(1, 0, 2))
        el_w1 = self._tf.transpose(1, 0, 2).astype(np.float32)
        self._el_w = np.ascontiguousarray(np.concatenate([1.0 - el_w1, el_w1], axis=2))
        self._blank_offsets = np.arange(-self._blank, self._blank + 1)[None, :]
        self._pair_rows = (np.arange(self.n_pairs) * self._lag_len)[:, None]
        self._pair_rows_end = self._pair_rows + (self._lag_len - 1)

        hop_s = (hop_ms if hop_ms is not None else block_ms / 2.0) / 1000.0
        self._rise = 10 ** (FLOOR_RISE_DB_PER_S * hop_s / 10.0)
        self._warmup = max(1, math.ceil(WARMUP_S / hop_s))
        self._floor: Float32Array | None = None
        self._blocks = 0
        self._last = (self._el0, 0)  # (elevation, azimuth) grid indices of the last peak found
        m = self.n_mics
        self._spec: npt.NDArray[np.complex64] = np.zeros((m, n_frames, sel.size), np.complex64)  # (M, F, K)
        self._power = np.zeros((n_frames, sel.size), np.float32)  # (F, K): mean over mics
        self._mean_w = np.full(m, 1.0 / m, np.float32)
        self._g = np.zeros((self.n_pairs, 2 * sel.size), np.float32)
        self._g_buf = np.zeros((self.n_pairs, 2 * sel.size), np.float32)  # the kernels' output, reused
        self._cc_el: Float32Array | None = None
        # the sub-frames of a block (N, M), read in place as (M, F, frame): mic m, frame f, sample n is
        # block[starts[f] + n, m]; they are regularly spaced whenever the frames are (always with halves)
        step = np.diff(self._starts)
        self._regular = bool(n_frames == 1 or (step == step[0]).all())
        self._frame_step = int(step[0]) if n_frames > 1 else 0
        # the compiled kernels (appliance.perception.kernels) or the same arithmetic as numpy calls
        self._kernels: Any = None
        self._frames = np.zeros((m, n_frames, self.frame_len), np.float32)  # the compiled path's sub-frames
        self._starts = self._starts.astype(np.intp)
        if compiled:
            self._kernels = _warm_kernels()

    def _lag_table(self, az_deg: FloatArray, el_deg: FloatArray) -> LagTable:
        """Flat indices into the (P, L) correlations and the interpolation fraction, for each direction."""
        az, el = np.radians(az_deg), np.radians(el_deg)
        u = np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=1)  # (G, 3)
        # mic i hears earlier than mic j by d = (p_i - p_j).u / c; the phase of Xi Xj* is +w d,
        # and the inverse FFT holds sum_k G(k) exp(+j w n / fs_up) at lag n: the peak is at n = -d fs_up
        lag = -(u @ self._pair_vec.T) / SPEED_OF_SOUND * self._fs_up  # (G, P)
        lag = np.clip(lag, -self._max_lag, self._max_lag - 1e-6)
        base = np.floor(lag)
        frac = lag - base
        offset = (np.arange(self.n_pairs) * self._lag_len)[None, :]
        idx0 = base.astype(np.intp) + self._max_lag + offset
        return idx0, idx0 + 1, frac

    @property
    def floor(self) -> Float32Array | None:
        """The learnt noise power per analysed frequency bin (mean over mics), None before the first block."""
        return self._floor

    def prepare(self, block: npt.ArrayLike) -> float:
        """Transform one block (samples, M) for :meth:`analyse` and return its level in the voice band
        (dBFS, mean over mics and sub-frames), so that a voice-activity gate can decide on it first."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_mics:
            raise ValueError(f"block must be (samples, {self.n_mics}), got shape {x.shape}")
        if x.shape[0] < self.block_len:
            raise ValueError(f"block has {x.shape[0]} samples, need {self.block_len}")
        if self._kernels is not None:
            return self._prepare_compiled(np.ascontiguousarray(x[-self.block_len :]))  # one compiled layout
        xt = np.ascontiguousarray(x[-self.block_len :].T)  # (M, N): each mic's samples contiguous
        if self._regular:  # the sub-frames as (M, F, frame) strides into the block, windowed into a new array
            item = xt.itemsize
            frames = np.ndarray(
                (self.n_mics, self._starts.size, self.frame_len),
                np.float32,
                xt,
                0,
                (self.block_len * item, self._frame_step * item, item),
            )
            frames = frames * self._window
        else:
            frames = xt[:, self._idx] * self._window
        spec = rfft(frames)[..., self._bin_lo : self._bin_hi]
        self._spec = spec = np.ascontiguousarray(spec)  # (M, F, K)
        mag2: Float32Array = (spec * spec.conj()).real
        power: Float32Array = (self._mean_w @ mag2.reshape(self.n_mics, -1)).reshape(spec.shape[1:])  # (F, K)
        self._power = power
        # Parseval with the window: mean square in the band = 2 sum |X_k|^2 / (N sum w^2)
        band = float(power[:, : self._n_voice].sum()) / power.shape[0] * self._level_scale
        return 10.0 * math.log10(band) if band > 1e-12 else -120.0

    def _prepare_compiled(self, x: Float32Array) -> float:
        """:meth:`prepare` of a checked block (N, M) through the compiled kernels and pocketfft."""
        k = self._kernels
        k.window_frames(x, self._starts, self._window, self._frames)
        spec = np.empty((self.n_mics, self._starts.size, self._bins.size), np.complex64)
        power = np.empty((self._starts.size, self._bins.size), np.float32)
        band = k.band_spectra(rfft(self._frames), self._bin_lo, self._mean_w, spec, power, self._n_voice)
        self._spec, self._power = spec, power
        band = band / power.shape[0] * self._level_scale
        return 10.0 * math.log10(band) if band > 1e-12 else -120.0

    def _update_floor(self, power: Float32Array) -> Float32Array:
        self._blocks += 1
        if self._kernels is not None:
            if self._floor is None:
                self._floor = np.empty(power.shape[1], np.float32)
            mode = 0 if self._blocks == 1 else 1 if self._blocks <= self._warmup else 2
            self._kernels.update_floor(power, self._floor, mode, self._rise, FLOOR_FALL)
            return self._floor
        level = power.sum(axis=0) * (1.0 / power.shape[0])  # (K,)
        if self._floor is None:
            self._floor = level.copy()
        elif self._blocks <= self._warmup:
            self._floor = np.minimum(self._floor, level)
        else:
            # below the floor: close FLOOR_FALL of the gap; above it: rise at most by the factor _rise
            f = self._floor
            self._floor = np.minimum(f * self._rise, np.maximum(level, f + FLOOR_FALL * (level - f)))
        return self._floor

    def analyse(
        self,
        block: npt.ArrayLike,
        speech: bool,
        max_sources: int = 2,
        second_ratio: float = 0.45,
        min_weight: float = 0.0,
    ) -> list[Candidate]:
        """Direction estimates of one block (samples, M), strongest first. ``speech`` says whether the
        voice-activity gate heard speech: then bins near the learnt noise floor are down-weighted."""
        self.prepare(block)
        return self.evidence(speech, max_sources, second_ratio, min_weight)

    def skip(self) -> None:
        """Learn the noise floor from the block given to :meth:`prepare` last, without analysing it: for a
        quiet block whose bins would all be weighted down to nothing by :meth:`evidence`."""
        self._update_floor(self._power)

    def evidence(
        self, speech: bool, max_sources: int = 2, second_ratio: float = 0.45, min_weight: float = 0.0
    ) -> list[Candidate]:
        """:meth:`analyse` of the block given to :meth:`prepare` last."""
        spec, power = self._spec, self._power
        floor = self._update_floor(power)
        if self._kernels is not None:
            return self._compiled(speech, max_sources, second_ratio, min_weight)
        n_frames = power.shape[0]
        # every pair's and every mic's own cross-spectrum, frame by frame: (P + M, F, K)
        z = spec[self._zi]
        z *= spec[self._zj].conj()
        if speech:
            a = (OVER_SUBTRACT * floor) / np.maximum(power, 1e-30)
            np.subtract(1.0, a, out=a)  # at most 1: the floor and the power are never negative
            np.maximum(a, 0.0, out=a)
            a_sum = a.sum(axis=0)  # (K,)
            if float(a_sum.sum()) <= 1e-9:
                return []
            z *= a
            band_w: npt.NDArray[np.float32] | None = a_sum * np.float32(1.0 / n_frames)
        else:
            band_w = None
        # weighted cross- and auto-spectra over the block's frames, and the complex coherence per pair: (P, K)
        cross = z.sum(axis=1)
        auto = cross.real
        norm = auto[self._auto_i] * auto[self._auto_j]
        np.maximum(norm, 1e-30, out=norm)
        np.sqrt(norm, out=norm)
        gamma = cross[: self.n_pairs]
        gamma /= norm
        w = _direct_share(gamma, self._diffuse, self._diffuse_c)  # (P, K): direct-path evidence
        if band_w is not None:
            w *= band_w
        total = float(w.sum())
        if total <= 1e-9:
            return []
        usable = total / w.size
        # the phase of each direct-path bin, weighted: G = gamma w / (total |gamma|)
        mag = np.abs(gamma)
        mag += 1e-12
        w /= mag
        w *= np.float32(1.0 / total)
        gamma *= w
        g = gamma.view(np.float32)  # (P, 2K) interleaved (re, im)
        return self._directions(g, usable, max_sources, second_ratio, min_weight)

    def _compiled(self, speech: bool, max_sources: int, second_ratio: float, min_weight: float) -> list[Candidate]:
        """:meth:`evidence` in two calls of the compiled kernels (the same arithmetic)."""
        k, g = self._kernels, self._g_buf
        usable = k.pair_phases(
            self._spec.view(np.float32),
            self._power,
            self._floor,
            speech,
            OVER_SUBTRACT,
            self._ii,
            self._jj,
            self._diffuse,
            self._diffuse_c,
            g,
        )
        if usable < 0.0:
            return []
        rows = k.directions(
            g,
            usable,
            max_sources,
            second_ratio,
            min_weight,
            self._lag_tf,
            self._hi0,
            self._lag_tf_high,
            self._ring_idx,
            self._ring_w,
            self.grid_deg,
            self.full_circle,
            self._limit,
            self._elev,
            self._el_idx,
            self._el_w,
            self._t0,
            self._tf,
            self._blank,
            self._lag_len,
            self._el0,
        )
        return [Candidate(float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows.tolist()]

    def _directions(
        self, g: Float32Array, usable: float, max_sources: int, second_ratio: float, min_weight: float
    ) -> list[Candidate]:
        """The sources of a block whose weighted, whitened pair spectra are ``g`` (P, 2K) interleaved."""
        # sum_k Re(G(k) exp(+j w n / fs_up)) at each lag n: the weighted GCC of each pair
        cc = (g @ self._lag_tf).ravel()
        self._g, self._cc_el = g, None  # the elevation's correlations, when an estimate needs them
        out: list[Candidate] = []
        first: Candidate | None = None
        for _ in range(max_sources):
            cand = self._peak(cc, usable, min_weight)
            if cand is None:
                break
            if first is not None:
                if (
                    cand.height < second_ratio * first.height
                    or abs(_wrap(cand.azimuth_deg - first.azimuth_deg)) < 2 * self.grid_step_deg + 10.0
                ):
                    break
            if cand.weight < min_weight:
                break
            out.append(cand)
            first = first or cand
            if len(out) < max_sources:
                self._blank_lags(cc)
        return out

    def _elevation_lags(self, cc: Float32Array) -> Float32Array:
        """The pair correlations elevation is searched on: from the upper band only (low frequencies on a
        small array barely change with elevation, and there reverberation pulls every estimate towards the
        zenith, lag 0); only their argmax is used, so they need no normalisation."""
        if self._hi0 >= self._high.size:
            return cc
        if self._cc_el is None:
            cc_el: Float32Array = (self._g[:, 2 * self._hi0 :] @ self._lag_tf_high).ravel()
            self._cc_el = cc_el
        return self._cc_el

    def _peak(self, cc: Float32Array, usable: float, min_weight: float) -> Candidate | None:
        ring = cc[self._ring_idx]
        ring *= self._ring_w
        ring = ring.sum(axis=0)
        n = ring.size
        i = int(ring.argmax())
        if self.full_circle:
            left, right = float(ring[(i - 1) % n]), float(ring[(i + 1) % n])
        elif 0 < i < n - 1:
            left, right = float(ring[i - 1]), float(ring[i + 1])
        else:
            left = right = float(ring[i])
        mid = float(ring[i])
        den = left - 2.0 * mid + right
        offset = min(0.5, max(-0.5, 0.5 * (left - right) / den)) if den < 0.0 else 0.0
        azimuth = float(self.grid_deg[i]) + offset * self.grid_step_deg
        if self.full_circle:
            azimuth = _wrap(azimuth)
        else:
            azimuth = min(self._limit, max(-self._limit, azimuth))
        height = mid
        if height <= 0.0:
            return None
        mean = float(ring.sum()) / n
        sharp = min(1.0, max(0.0, (height - mean) / max(1.0 - mean, 1e-9)))
        weight = sharp * math.sqrt(min(1.0, usable))
        elevation = 0.0
        j = self._el0
        if self._elev.size > 1 and weight >= min_weight:  # (a weaker estimate is dropped by the caller)
            resp = self._elevation_lags(cc)[self._el_idx[i]]
            resp *= self._el_w[i]
            resp = resp.sum(axis=1)
            j = int(resp.argmax())
            elevation = float(self._elev[j])
        self._last = (j, i)
        return Candidate(azimuth_deg=azimuth, elevation_deg=elevation, height=height, weight=weight)

    def _blank_lags(self, cc: Float32Array) -> None:
        """Zero each pair's correlation around the lags of the last peak found, so that the next search
        finds another source."""
        j, i = self._last
        centre = self._t0[j, i] + (self._tf[j, i] > 0.5)  # (P,) flat indices
        k = centre[:, None] + self._blank_offsets
        np.maximum(k, self._pair_rows, out=k)
        np.minimum(k, self._pair_rows_end, out=k)
        cc[k] = 0.0
