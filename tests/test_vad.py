"""The energy voice-activity gate: speech over noise, noise alone, hangover and an adapting floor."""

from __future__ import annotations

import numpy as np

from appliance.bench.doa import render_room, speech_signal
from appliance.config import DoaConfig
from appliance.perception.vad import EnergyVad

FS = 16000
BLOCK = 1024
HOP = 512


def blocks(x: np.ndarray) -> list[np.ndarray]:
    return [x[s : s + BLOCK] for s in range(0, x.shape[0] - BLOCK + 1, HOP)]


def band_noise(n: int, level: float, seed: int) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_speech_in_a_room_against_noise_alone() -> None:
    source = speech_signal(FS, seed=1)
    lead = 1.0
    audio = render_room(
        np.array([(0.0, -0.1, 0.0), (0.05, -0.1, 0.0)]), 30.0, 3.0, source, FS, snr_db=25.0, lead_s=lead, seed=2
    )
    vad = EnergyVad(DoaConfig(), FS)
    decisions = [vad.update(b)[0] for b in blocks(audio)]
    n_lead = int((lead * FS - BLOCK) // HOP)
    assert not any(decisions[:n_lead]), "noise alone taken for speech"
    # where the dry source is loud, the gate must be open
    dry_level = [float(np.mean(source[s : s + BLOCK] ** 2)) for s in range(0, source.size - BLOCK + 1, HOP)]
    loud = np.asarray(dry_level) > 0.1 * np.max(dry_level)
    speech = np.asarray(decisions[n_lead + 2 : n_lead + 2 + loud.size])
    assert speech[loud[: speech.size]].mean() > 0.9
    assert 0.3 < np.mean(decisions[n_lead:]) < 0.98  # pauses between phrases remain pauses


def test_hangover_bridges_short_gaps_but_not_silence() -> None:
    vad = EnergyVad(DoaConfig(hop_ms=32.0), FS)
    noise = band_noise(BLOCK, 0.001, 0)
    tone = (0.1 * np.sin(2 * np.pi * 500 * np.arange(BLOCK) / FS)).astype(np.float32) + noise
    out = [vad.update(noise)[0] for _ in range(30)]
    assert not any(out)
    assert vad.update(tone)[0]
    gap = [vad.update(noise)[0] for _ in range(3)]  # ~100 ms between syllables
    assert all(gap)
    assert vad.update(tone)[0]
    tail = [vad.update(noise)[0] for _ in range(20)]
    assert not any(tail[-10:])


def test_floor_learns_a_louder_steady_noise() -> None:
    vad = EnergyVad(DoaConfig(hop_ms=32.0), FS)
    for k in range(20):
        vad.update(band_noise(BLOCK, 0.0005, k))
    quiet_floor = vad.floor_db
    assert quiet_floor is not None
    out = [vad.update(band_noise(BLOCK, 0.01, 100 + k))[0] for k in range(1000)]  # a fan starts: +26 dB
    assert out[0]  # at first it stands out ...
    assert not any(out[-100:])  # ... then it becomes the floor
    assert vad.floor_db is not None and vad.floor_db > quiet_floor + 20


def test_level_is_dbfs_and_below_min_level_is_never_speech() -> None:
    cfg = DoaConfig(min_level_db=-50.0)
    vad = EnergyVad(cfg, FS)
    sine = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(BLOCK) / FS)).astype(np.float32)
    assert abs(vad.level_db(sine) - 10 * np.log10(0.125)) < 0.1  # mean square of a 0.5 sine
    assert vad.level_db(np.zeros((BLOCK, 4), dtype=np.float32)) == -120.0
    silent = band_noise(BLOCK, 1e-6, 0)
    for _ in range(10):
        vad.update(silent)
    faint = (1e-3 * np.sin(2 * np.pi * 700 * np.arange(BLOCK) / FS)).astype(np.float32)  # ~-63 dBFS
    assert not vad.update(faint)[0]


def test_same_input_same_decisions() -> None:
    x = band_noise(FS * 2, 0.01, 5)
    x[FS // 2 : FS] *= 30
    a, b = EnergyVad(DoaConfig(), FS), EnergyVad(DoaConfig(), FS)
    assert [a.update(blk) for blk in blocks(x)] == [b.update(blk) for blk in blocks(x)]
