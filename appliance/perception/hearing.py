"""Hearing: mic-array chunks in, one :class:`Doa` per analysis block out.

:class:`Hearing` is pure (no clock, no driver): it takes chunks of any length with the time of their
first sample, cuts them into ``block_ms`` blocks every ``hop_ms`` and runs the voice-activity gate and
SRP-PHAT on each.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from appliance.config import DoaConfig, MicArraySection, TrackerConfig
from appliance.messages import Doa
from appliance.perception.doa import SrpPhat
from appliance.perception.vad import make_vad


class Hearing:
    """Voice activity and direction of arrival of a mic-array stream, block by block.

    Chunks are expected back to back; a chunk whose ``t0`` is more than one block away from where
    the previous one ended starts the stream afresh (a gap in the audio, a restarted device).
    """

    def __init__(self, mic: MicArraySection, cfg: DoaConfig) -> None:
        self.mic = mic
        self.cfg = cfg
        self.sample_rate = int(mic.sample_rate)
        self.n_mics = len(mic.positions)
        self.srp = SrpPhat(np.asarray(mic.positions, dtype=np.float64), self.sample_rate, cfg)
        self.vad = make_vad(cfg, self.sample_rate)
        self.block_len = self.srp.block_len
        self.hop_len = max(1, round(cfg.hop_ms * self.sample_rate / 1000.0))
        self._buf = np.zeros((0, self.n_mics), dtype=np.float32)
        self._buf_t0: float | None = None  # time of the first buffered sample
        self._skip = 0  # samples still to drop when the hop is longer than the block

    def reset(self) -> None:
        """Forget the buffered audio (not the learnt noise floor)."""
        self._buf = np.zeros((0, self.n_mics), dtype=np.float32)
        self._buf_t0 = None
        self._skip = 0

    def feed(self, samples: npt.ArrayLike, t0: float, reference: npt.ArrayLike | None = None) -> list[Doa]:
        """Add a chunk (frames, channels) whose first sample is at ``t0`` seconds; returns the Doa of
        every block completed by it, each stamped with the time of the block's end. (A playback reference is
        not used: SRP-PHAT cannot tell the far end from a talker.)"""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1 and self.n_mics == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.n_mics:
            got = x.shape[1] if x.ndim == 2 else f"shape {x.shape}"
            raise ValueError(
                f"audio has the wrong number of channels: expected {self.n_mics} "
                f"(one per microphone in [mic_array] positions), got {got}"
            )
        if x.shape[0] == 0:
            return []
        if self._buf_t0 is not None:
            # _buf_t0 already counts the samples still to skip, hence the minus
            expected = self._buf_t0 + (self._buf.shape[0] - self._skip) / self.sample_rate
            if abs(t0 - expected) > self.block_len / self.sample_rate:
                self.reset()
        if self._buf_t0 is None:
            self._buf_t0 = float(t0)
        if self._skip:
            drop = min(self._skip, x.shape[0])
            x = x[drop:]
            self._skip -= drop
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()

        out: list[Doa] = []
        while self._buf.shape[0] >= self.block_len:
            block = self._buf[: self.block_len]
            out.append(self._analyse(block, self._buf_t0 + self.block_len / self.sample_rate))
            step = min(self.hop_len, self._buf.shape[0])
            self._skip = self.hop_len - step
            self._buf = self._buf[step:]
            self._buf_t0 += self.hop_len / self.sample_rate
        return out

    def _analyse(self, block: npt.NDArray[np.float32], t_end: float) -> Doa:
        speech, level = self.vad.update(block)
        azimuth: float | None = None
        confidence = 0.0
        if speech:
            az, confidence = self.srp.estimate(block)
            if confidence >= self.cfg.min_confidence:
                azimuth = az
        return Doa(t=t_end, azimuth_deg=azimuth, speech=speech, level_db=level, confidence=confidence)


class Ears(Protocol):
    """What the box hears with: mic-array chunks (and the playback reference, where it has one) in, the
    director's :class:`Doa` blocks out."""

    def feed(self, samples: npt.ArrayLike, t0: float, reference: npt.ArrayLike | None = None) -> list[Doa]: ...

    def reset(self) -> None: ...


def louder(samples: npt.ArrayLike, gain_db: float) -> npt.NDArray[np.float32]:
    """``samples`` as float32, ``gain_db`` louder (not clipped)."""
    x = np.asarray(samples, dtype=np.float32)
    return x if gain_db == 0.0 else x * np.float32(10.0 ** (gain_db / 20.0))


class Gained:
    """Ears that hear the array's audio ``gain_db`` louder (``[calibration] gain_db``: the guided calibration
    brings the talkers to the level the hearing is tuned for). The samples are scaled, not clipped: the
    levels, Silero's input and its clipping at full scale follow as if the array were that much louder."""

    def __init__(self, inner: Ears, gain_db: float) -> None:
        self.inner, self.gain_db = inner, float(gain_db)

    def feed(self, samples: npt.ArrayLike, t0: float, reference: npt.ArrayLike | None = None) -> list[Doa]:
        return self.inner.feed(louder(samples, self.gain_db), t0, reference)

    def reset(self) -> None:
        self.inner.reset()


def make_ears(mic: MicArraySection, doa: DoaConfig, tracker: TrackerConfig, gain_db: float = 0.0) -> Ears:
    """The estimator ``[doa] estimator`` names: the tracked listener, or plain SRP-PHAT; hearing the array
    ``gain_db`` louder when it is not 0 (:class:`Gained`)."""
    ears: Ears
    if doa.estimator == "tracker":
        from appliance.perception.listening import ListeningDoas

        ears = ListeningDoas(mic, tracker, doa)
    else:
        ears = Hearing(mic, doa)
    return ears if gain_db == 0.0 else Gained(ears, gain_db)
