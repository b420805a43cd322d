"""A pure voice-activity gate: band-limited energy against an adaptive noise floor.

Deterministic and clock-free: time advances one ``hop_ms`` per :meth:`EnergyVad.update`. The floor
follows the quietest recent level (it falls quickly and rises slowly), so a fan or air conditioning
is learnt while talk, which pauses between words, stays above it.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt

from appliance.config import DoaConfig

BAND_HZ = (300.0, 3400.0)  # telephone band: most of speech's energy, little of the rumble
FLOOR_RISE_DB_PER_S = 1.0  # how fast the floor climbs when the level stays above it
FLOOR_FALL = 0.5  # fraction of the gap closed per block when the level drops below the floor
WARMUP_S = 0.5  # during this first stretch the floor simply takes the quietest level seen
HANGOVER_S = 0.2  # speech is held this long after the last loud block, so syllable gaps don't chop
SILENCE_DB = -120.0


class EnergyVad:
    """Says, block by block, whether someone is talking and how loud the block is (dBFS).

    ``update`` is called once per analysis block, every ``cfg.hop_ms``; the block is (samples,) or
    (samples, channels), float in [-1, 1]. The level is the mean band power over the channels,
    ``10 log10(mean x^2)`` in the band, so a full-scale square wave would be 0 dBFS.
    """

    def __init__(self, cfg: DoaConfig, sample_rate: int = 16000) -> None:
        self.cfg = cfg
        self.sample_rate = int(sample_rate)
        hop_s = cfg.hop_ms / 1000.0
        self._rise_db = FLOOR_RISE_DB_PER_S * hop_s
        self._warmup_blocks = max(1, math.ceil(WARMUP_S / hop_s))
        self._hangover_blocks = max(1, math.ceil(HANGOVER_S / hop_s))
        self._floor_db: float | None = None
        self._blocks = 0
        self._hang = 0

    @property
    def floor_db(self) -> float | None:
        """The current noise-floor estimate (dBFS), None before the first block."""
        return self._floor_db

    def level_db(self, block: npt.ArrayLike) -> float:
        """Band-limited level of a block, in dBFS."""
        x = np.asarray(block, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        n = x.shape[0]
        if n < 2:
            return SILENCE_DB
        x = x - x.mean(axis=0, keepdims=True)
        w = np.hanning(n + 2)[1:-1]
        spec = np.fft.rfft(x * w[:, None], axis=0)
        freqs = np.fft.rfftfreq(n, 1.0 / self.sample_rate)
        band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
        # Parseval with a window: mean square = 2 sum |X_k|^2 / (n sum w^2) over the positive bins
        power = 2.0 * float(np.sum(np.abs(spec[band]) ** 2)) / (n * float(np.sum(w**2)) * x.shape[1])
        return 10.0 * math.log10(power) if power > 1e-12 else SILENCE_DB

    def update(self, block: npt.ArrayLike) -> tuple[bool, float]:
        """Feed the next block; returns (speech?, level in dBFS)."""
        level = self.level_db(block)
        self._blocks += 1
        floor = self._floor_db
        if floor is None:
            floor = level
        elif self._blocks <= self._warmup_blocks or level < floor:
            gain = 1.0 if self._blocks <= self._warmup_blocks else FLOOR_FALL
            floor = min(floor, floor + gain * (level - floor))
        else:
            floor += min(self._rise_db, level - floor)
        self._floor_db = floor

        loud = level > floor + self.cfg.speech_snr_db and level > self.cfg.min_level_db
        if loud:
            self._hang = self._hangover_blocks
            return True, level
        if self._hang > 0:
            self._hang -= 1
            return True, level
        return False, level


class Vad(Protocol):
    """What a voice-activity detector offers :class:`~appliance.perception.hearing.Hearing`: one call per
    analysis block (every ``hop_ms``), the block (samples,) or (samples, channels) in, (speech?, level in
    dBFS) out. :class:`EnergyVad` and :class:`~appliance.perception.silero.SileroVad` satisfy it."""

    def update(self, block: npt.ArrayLike) -> tuple[bool, float]: ...


def make_vad(cfg: DoaConfig, sample_rate: int = 16000) -> Vad:
    """The detector ``cfg.vad`` names: ``"energy"`` (:class:`EnergyVad`) or ``"silero"`` (Silero VAD)."""
    if cfg.vad == "silero":
        from appliance.perception.silero import SileroVad

        return SileroVad(cfg, sample_rate)
    return EnergyVad(cfg, sample_rate)
