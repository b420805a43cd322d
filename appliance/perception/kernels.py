"""Compiled loops of the soft DOA evidence (numba): the same arithmetic as
:class:`appliance.perception.evidence.SoftSrp`'s numpy path, in one pass over each block's bins.

A block's arrays are small (4-7 mics, 7 sub-frames, 60 analysed bins, 360 azimuths): numpy spends most of
its time there on the 50-odd calls a block makes (2-4 us each on the box's CPU), not on the arithmetic.
Each kernel here is one call. Pure functions of arrays; compiled on first use and cached on disk beside
this file (or in ``NUMBA_CACHE_DIR``), so a box compiles them once.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt


@numba.njit(cache=True, nogil=True)
def window_frames(
    x: npt.NDArray[np.float32],
    starts: npt.NDArray[np.intp],
    window: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    """The windowed sub-frames of the block ``x`` (N, M) into ``out`` (M, F, n): mic m, frame f, sample i is
    ``x[starts[f] + i, m] * window[i]``."""
    n_mics, n_frames, n = out.shape
    for f in range(n_frames):
        s = starts[f]
        for i in range(n):
            wi = window[i]
            for m in range(n_mics):
                out[m, f, i] = x[s + i, m] * wi


@numba.njit(cache=True, nogil=True)
def band_spectra(
    full: npt.NDArray[np.complex64],
    lo: int,
    mean_w: npt.NDArray[np.float32],
    spec: npt.NDArray[np.complex64],
    power: npt.NDArray[np.float32],
    n_voice: int,
) -> float:  # pragma: no cover - compiled
    """The analysed bins ``lo ..`` of the sub-frame spectra ``full`` (M, F, n/2+1) into ``spec`` (M, F, K), their
    power weighted over mics by ``mean_w`` into ``power`` (F, K); returns the sum of ``power`` over frames
    and the first ``n_voice`` bins (the voice band)."""
    n_mics, n_frames, n_bins = spec.shape
    power[:] = 0.0
    for m in range(n_mics):
        wm = mean_w[m]
        for f in range(n_frames):
            for k in range(n_bins):
                x = full[m, f, lo + k]
                spec[m, f, k] = x
                power[f, k] += wm * (x.real * x.real + x.imag * x.imag)
    band = 0.0
    for f in range(n_frames):
        for k in range(n_voice):
            band += power[f, k]
    return band


@numba.njit(cache=True, nogil=True)
def update_floor(
    power: npt.NDArray[np.float32], floor: npt.NDArray[np.float32], mode: int, rise: float, fall: float
) -> None:  # pragma: no cover - compiled
    """The learnt noise floor (K,) after one more block whose sub-frames' power is ``power`` (F, K), in
    place: ``mode`` 0 the block's level, 1 the lower of the two (the warm-up), 2 following it (below the
    floor: close ``fall`` of the gap; above it: rise at most by the factor ``rise``)."""
    n_frames, n_bins = power.shape
    inv = np.float32(1.0 / n_frames)
    r, fa = np.float32(rise), np.float32(fall)
    for k in range(n_bins):
        s = np.float32(0.0)
        for f in range(n_frames):
            s += power[f, k]
        level = s * inv
        if mode == 0:
            floor[k] = level
        elif mode == 1:
            floor[k] = min(floor[k], level)
        else:
            old = floor[k]
            floor[k] = min(old * r, max(level, old + fa * (level - old)))


@numba.njit(cache=True, nogil=True)
def pair_phases(
    spec: npt.NDArray[np.float32],
    power: npt.NDArray[np.float32],
    floor: npt.NDArray[np.float32],
    speech: bool,
    over: float,
    ii: npt.NDArray[np.intp],
    jj: npt.NDArray[np.intp],
    diffuse: npt.NDArray[np.float32],
    diffuse_c: npt.NDArray[np.float32],
    g_out: npt.NDArray[np.float32],
) -> float:  # pragma: no cover - compiled (its twin is SoftSrp's numpy path, tested against it)
    """Every pair's weighted, whitened cross-spectrum of one block into ``g_out`` (P, 2K), interleaved
    (re, im) and summing to 1 over the pairs' direct-path weights: the input of the lag transform. Returns
    the band's usable share (the mean direct-path weight), or -1 when nothing stands out (``g_out`` is then
    not written). ``spec`` (M, F, 2K): the sub-frame spectra as interleaved floats; ``power`` (F, K) their
    mean power over mics; ``floor`` (K,) the learnt noise floor, a weight when ``speech``: a bin counts
    fully only when its power is well above ``over`` times the floor."""
    n_mics, n_frames, n_bins2 = spec.shape
    n_bins = n_bins2 // 2
    n_pairs = ii.size
    a = np.ones((n_frames, n_bins), np.float32)
    band_w = np.ones(n_bins, np.float32)
    if speech:
        a_total = 0.0
        over32 = np.float32(over)
        for k in range(n_bins):
            s = np.float32(0.0)
            for f in range(n_frames):
                v = np.float32(1.0) - over32 * floor[k] / max(power[f, k], np.float32(1e-30))
                v = max(v, np.float32(0.0))
                a[f, k] = v
                s += v
            band_w[k] = s * np.float32(1.0 / n_frames)
            a_total += float(s)
        if a_total <= 1e-9:
            return -1.0
    s_re = np.empty((n_mics, n_frames, n_bins), np.float32)  # de-interleaved: the bin loops vectorise
    s_im = np.empty((n_mics, n_frames, n_bins), np.float32)
    auto = np.zeros((n_mics, n_bins), np.float32)
    for m in range(n_mics):
        for f in range(n_frames):
            for k in range(n_bins):
                xr, xi = spec[m, f, 2 * k], spec[m, f, 2 * k + 1]
                s_re[m, f, k], s_im[m, f, k] = xr, xi
                auto[m, k] += a[f, k] * (xr * xr + xi * xi)
    g_re = np.empty((n_pairs, n_bins), np.float64)
    g_im = np.empty((n_pairs, n_bins), np.float64)
    w = np.empty((n_pairs, n_bins), np.float64)
    cr = np.empty(n_bins, np.float32)
    ci = np.empty(n_bins, np.float32)
    total = 0.0
    for p in range(n_pairs):
        i, j = ii[p], jj[p]
        cr[:] = 0.0
        ci[:] = 0.0
        for f in range(n_frames):
            for k in range(n_bins):
                xr, xi = s_re[i, f, k], s_im[i, f, k]
                yr, yi = s_re[j, f, k], s_im[j, f, k]
                af = a[f, k]
                cr[k] += af * (xr * yr + xi * yi)  # Xi Xj*
                ci[k] += af * (xi * yr - xr * yi)
        for k in range(n_bins):
            norm = math.sqrt(max(float(auto[i, k]) * float(auto[j, k]), 1e-30))
            re, im = cr[k] / norm, ci[k] / norm
            g_re[p, k], g_im[p, k] = re, im
            # the direct-path share: the coherent-to-diffuse ratio (Schwarz and Kellermann 2015) as CDR / (1 + CDR)
            g2 = min(re * re + im * im, 1.0 - 1e-4)
            d = 1.0 - g2
            v = float(diffuse[p, k]) * re - 1.0
            root = math.sqrt(max(v * v - float(diffuse_c[p, k]) * d, 0.0))
            num = max(root - v - d, 0.0)
            share = num / (num + d) * float(band_w[k])
            w[p, k] = share
            total += share
    if total <= 1e-9:
        return -1.0
    inv_total = 1.0 / total
    for p in range(n_pairs):
        for k in range(n_bins):
            re, im = g_re[p, k], g_im[p, k]
            scale = w[p, k] * inv_total / (math.sqrt(re * re + im * im) + 1e-12)
            g_out[p, 2 * k] = re * scale
            g_out[p, 2 * k + 1] = im * scale
    return float(total / (n_pairs * n_bins))


@numba.njit(cache=True, nogil=True)
def _wrap(deg: float) -> float:  # pragma: no cover - compiled
    return (deg + 180.0) % 360.0 - 180.0


@numba.njit(cache=True, nogil=True)
def directions(
    g: npt.NDArray[np.float32],
    usable: float,
    max_sources: int,
    second_ratio: float,
    min_weight: float,
    lag_tf: npt.NDArray[np.float32],
    hi0: int,
    lag_tf_high: npt.NDArray[np.float32],
    ring_idx: npt.NDArray[np.intp],
    ring_w: npt.NDArray[np.float32],
    grid_deg: npt.NDArray[np.float64],
    full_circle: bool,
    limit: float,
    elev: npt.NDArray[np.float64],
    el_idx: npt.NDArray[np.intp],
    el_w: npt.NDArray[np.float32],
    t0: npt.NDArray[np.intp],
    tf: npt.NDArray[np.float64],
    blank: int,
    lag_len: int,
    el0: int,
) -> npt.NDArray[np.float64]:  # pragma: no cover - compiled
    """The sources of a block whose weighted, whitened pair spectra are ``g`` (P, 2K): rows of (azimuth,
    elevation, height, weight), strongest first (``SoftSrp._directions``, one call). ``el0``: the index of
    elevation 0, where an estimate whose elevation is not searched lies."""
    n_pairs = g.shape[0]
    cc = np.dot(g, lag_tf).ravel()  # every pair's weighted GCC at each lag
    if elev.size > 1 and hi0 < g.shape[1] // 2:  # (elevation is searched on the upper band only)
        cc_el = np.dot(np.ascontiguousarray(g[:, 2 * hi0 :]), lag_tf_high).ravel()
    else:
        cc_el = cc
    n = grid_deg.size
    step = grid_deg[1] - grid_deg[0]
    out = np.zeros((max_sources, 4), np.float64)
    found = 0
    ring = np.empty(n, np.float32)
    for _ in range(max_sources):
        ring[:] = 0.0
        for r in range(ring_idx.shape[0]):
            for q in range(n):
                ring[q] += cc[ring_idx[r, q]] * ring_w[r, q]
        i = 0
        total = np.float32(0.0)
        for q in range(n):
            total += ring[q]
            if ring[q] > ring[i]:
                i = q
        if full_circle:
            left, right = float(ring[(i - 1) % n]), float(ring[(i + 1) % n])
        elif 0 < i < n - 1:
            left, right = float(ring[i - 1]), float(ring[i + 1])
        else:
            left = right = float(ring[i])
        mid = float(ring[i])
        den = left - 2.0 * mid + right
        offset = min(0.5, max(-0.5, 0.5 * (left - right) / den)) if den < 0.0 else 0.0
        azimuth = grid_deg[i] + offset * step
        azimuth = _wrap(azimuth) if full_circle else min(limit, max(-limit, azimuth))
        if mid <= 0.0:
            break
        mean = float(total) / n
        sharp = min(1.0, max(0.0, (mid - mean) / max(1.0 - mean, 1e-9)))
        weight = sharp * math.sqrt(min(1.0, usable))
        elevation = 0.0
        j = el0
        if elev.size > 1 and weight >= min_weight:
            best = -np.inf
            for e in range(el_idx.shape[1]):
                s = np.float32(0.0)
                for r in range(el_idx.shape[2]):
                    s += cc_el[el_idx[i, e, r]] * el_w[i, e, r]
                if s > best:
                    best, j = float(s), e
            elevation = float(elev[j])
        if found > 0:
            if mid < second_ratio * out[0, 2] or abs(_wrap(azimuth - out[0, 0])) < 2 * step + 10.0:
                break
        if weight < min_weight:
            break
        out[found, 0], out[found, 1], out[found, 2], out[found, 3] = azimuth, elevation, mid, weight
        found += 1
        if found < max_sources:  # blank each pair's correlation around this peak's lags
            for p in range(n_pairs):
                centre = t0[j, i, p] + (1 if tf[j, i, p] > 0.5 else 0)
                lo, hi = p * lag_len, p * lag_len + lag_len - 1
                for o in range(-blank, blank + 1):
                    cc[min(hi, max(lo, centre + o))] = 0.0
    return out[:found]
