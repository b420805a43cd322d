"""The voice gate's beam: a mic array's hop of audio as one channel, towards the source the listener attends to.

Pure core (arrays in, arrays out). Before the room's background is learnt the mics are delayed and summed
(a plane wave from the azimuth, in the horizontal plane). Once quiet hops have taught it the background's
cross-spectra (the diffuse noise, a fan, a projector: what the mics hear while nobody talks), it is a
minimum-variance distortionless (MVDR) beam: per frequency the weights that pass the wave from the azimuth
unchanged and let through as little of the background as they can, ``w = R^-1 d / (d^H R^-1 d)``, with
``R`` the background's cross-spectral matrix, diagonally loaded by ``LOADING`` times its mean power: a
heavily loaded beam, between delay-and-sum and the sharpest MVDR, because the azimuth it is given is the
tracker's, which a reverberant room pulls off the talker by up to 25 degrees on a small linear array, and a
sharp beam aimed there keeps the talker out. A talker is heard at the level a delay-and-sum beam gives, the
background lower: a small array's delay-and-sum barely reduces a diffuse field or a fan below 1-2 kHz, where
most of a voice's power is.

The listener uses it while the source it attends to is being heard, and delay-and-sum otherwise, so that a
new talker elsewhere reaches the voice gate as before. On the grid (``docs/hearing-grid.md``, "The voice
gate's beam") the table arrays' worst hard-cell recall went from 0.50 to 0.75.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from appliance.perception.doa import SPEED_OF_SOUND
from appliance.perception.evidence import irfft, rfft

LOADING = 1.0  # diagonal loading, a share of the background's mean power per mic and frequency
LEARN_TAU = 32  # the background's cross-spectra average about this many of the latest quiet hops learnt
MIN_LEARNT = 8  # quiet hops learnt before the MVDR beam replaces delay-and-sum
REFRESH_EVERY = 16  # the weights are recomputed after this many new quiet hops (a steady background)


class VoiceBeam:
    """``steer(x, azimuth_deg)``: hops of ``n`` samples (n, M) as one channel; ``learn(x)``: a quiet hop."""

    def __init__(self, positions: npt.ArrayLike, sample_rate: int, n: int, adaptive: bool = True) -> None:
        """``adaptive`` false: delay-and-sum only (the background is not learnt)."""
        self.can_adapt = adaptive
        pos = np.asarray(positions, np.float64)
        self._rel = pos - pos.mean(axis=0)
        self.n_mics = pos.shape[0]
        self.n = int(n)
        self.sample_rate = int(sample_rate)
        self._freqs = np.fft.rfftfreq(self.n, 1.0 / sample_rate)
        self._cov: npt.NDArray[np.complex64] | None = None  # (F, M, M) the background's cross-spectra
        self._learnt = 0
        self._since = 0  # quiet hops learnt since the weights were last computed
        self._inverse: npt.NDArray[np.complex64] | None = None  # (F, M, M) of the loaded covariance
        # (samples, degree) -> (M, F) weights, conjugated, to multiply the spectra by (MVDR; -samples:
        # delay-and-sum)
        self._weights: dict[tuple[int, int], npt.NDArray[np.complex64]] = {}

    @property
    def adaptive(self) -> bool:
        """Whether the MVDR beam is in use (the background learnt), not delay-and-sum."""
        return self._inverse is not None

    def _steering(self, degree: int, n: int) -> npt.NDArray[np.complex128]:
        a = math.radians(degree)
        lead = self._rel @ np.array([math.sin(a), 0.0, math.cos(a)]) / SPEED_OF_SOUND  # s each mic hears early
        freqs = self._freqs if n == self.n else np.fft.rfftfreq(n, 1.0 / self.sample_rate)
        out: npt.NDArray[np.complex128] = np.exp(2j * np.pi * lead[:, None] * freqs[None, :])  # (M, F)
        return out

    def learn(self, x: npt.NDArray[np.float32]) -> None:
        """Fold a hop (n, M) in which nobody talks into the background's cross-spectra."""
        if not self.can_adapt:
            return
        spec = rfft(np.ascontiguousarray(x.T)).T.astype(np.complex64)  # (F, M)
        self._learnt += 1
        a = 1.0 / min(self._learnt, LEARN_TAU)
        outer = spec[:, :, None] * (np.float32(a) * spec[:, None, :].conj())
        if self._cov is None:
            self._cov = outer
        else:
            self._cov *= np.float32(1.0 - a)
            self._cov += outer
        self._since += 1
        if self._learnt >= MIN_LEARNT and (self._inverse is None or self._since >= REFRESH_EVERY):
            m = self.n_mics
            power = np.real(np.trace(self._cov, axis1=1, axis2=2)) / m
            loaded = self._cov.astype(np.complex128) + (LOADING * np.maximum(power, 1e-20))[:, None, None] * np.eye(m)
            self._inverse = np.linalg.inv(loaded).astype(np.complex64)
            self._weights = {k: w for k, w in self._weights.items() if k[0] < 0}  # delay-and-sum's stay
            self._since = 0

    def _weights_for(self, n: int, degree: int, adaptive: bool) -> npt.NDArray[np.complex64]:
        ds = self._weights.get((-n, degree))  # delay-and-sum: the steering vector, conjugated, over M
        if ds is None:
            ds = (self._steering(degree, n).conj() / self.n_mics).astype(np.complex64)
            self._weights[(-n, degree)] = ds
        inverse = self._inverse if adaptive and n == self.n else None
        if inverse is None:
            return ds
        w = self._weights.get((n, degree))
        if w is None:
            d = ds.conj() * np.float32(self.n_mics)  # (M, F)
            rd = np.einsum("fmn,nf->mf", inverse, d)  # R^-1 d
            w = (rd / np.einsum("mf,mf->f", d.conj(), rd)[None, :]).conj()
            self._weights[(n, degree)] = w
        return w

    def steer(self, x: npt.NDArray[np.float32], azimuth_deg: float, adaptive: bool = True) -> npt.NDArray[np.float32]:
        """The hop (n, M) as one channel towards ``azimuth_deg`` (weights kept for every whole degree):
        MVDR once the background is learnt, unless ``adaptive`` is false; a hop of another length than the
        beam's is delayed and summed."""
        n = x.shape[0]
        spec = rfft(np.ascontiguousarray(x.T))  # (M, F)
        spec *= self._weights_for(n, round(azimuth_deg) % 360, adaptive)
        out: npt.NDArray[np.float32] = irfft(spec.sum(axis=0), n)
        return out
