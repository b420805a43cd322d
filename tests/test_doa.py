"""SRP-PHAT direction of arrival and Hearing, on exact plane waves and on pyroomacoustics-rendered rooms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from appliance.bench.doa import linear_array, render_room, speech_signal
from appliance.config import Config, DoaConfig, MicArraySection
from appliance.perception.doa import SPEED_OF_SOUND, SrpPhat
from appliance.perception.hearing import Hearing
from drivers.files import read_array_wav

FS = 16000
CIRCLE = np.asarray(MicArraySection().positions)
LINEAR = np.asarray(linear_array(4, 0.05))
SQUARE = np.asarray([(0.03, -0.1, 0.03), (-0.03, -0.1, 0.03), (-0.03, -0.1, -0.03), (0.03, -0.1, -0.03)])


def plane_wave(positions: np.ndarray, azimuth_deg: float, n: int = 4096, seed: int = 0) -> np.ndarray:
    """White noise arriving from ``azimuth_deg`` as an exact far-field plane wave (fractional delays)."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / FS)
    az = math.radians(azimuth_deg)
    advance = positions @ np.array([math.sin(az), 0.0, math.cos(az)]) / SPEED_OF_SOUND  # (M,)
    x = np.fft.irfft(spec[None, :] * np.exp(2j * np.pi * freqs[None, :] * advance[:, None]), n=n).T
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize("positions", [CIRCLE, LINEAR, SQUARE], ids=["circle6", "linear4", "square4"])
@pytest.mark.parametrize("azimuth", [-80.0, -47.3, -12.0, 0.0, 5.5, 33.3, 71.0])
def test_plane_wave_is_found_to_a_degree(positions: np.ndarray, azimuth: float) -> None:
    srp = SrpPhat(positions, FS, DoaConfig())
    x = plane_wave(positions, azimuth)
    az, confidence = srp.estimate(x[: srp.block_len])
    assert err(az, azimuth) < 1.0, (az, azimuth)
    assert confidence > 0.8


def test_grid_is_front_half_and_spectrum_normalised() -> None:
    srp = SrpPhat(CIRCLE, FS, DoaConfig(grid_deg=2.0))
    assert srp.grid_deg[0] == -90.0 and srp.grid_deg[-1] == 90.0 and srp.grid_deg.size == 91
    p = srp.spectrum(plane_wave(CIRCLE, 30.0)[: srp.block_len])
    assert p.shape == (91,)
    assert p.max() == pytest.approx(1.0, abs=0.02)  # one ideal plane wave peaks at 1
    noise = np.random.default_rng(3).standard_normal((srp.block_len, 6)).astype(np.float32)
    az, confidence = srp.estimate(noise)
    assert confidence < 0.2


def test_wrong_block_shape_is_refused() -> None:
    srp = SrpPhat(CIRCLE, FS, DoaConfig())
    with pytest.raises(ValueError, match="6"):
        srp.estimate(np.zeros((srp.block_len, 4), dtype=np.float32))


# (azimuth, distance) of the talkers rendered in the room; both arrays are rendered in one simulation
TALKERS = [(-60.0, 2.0), (-30.0, 3.0), (0.0, 4.0), (25.0, 2.5), (50.0, 3.5), (60.0, 3.0)]


@pytest.fixture(scope="module")
def room_takes() -> list[tuple[float, np.ndarray]]:
    both = np.concatenate([CIRCLE, LINEAR])
    return [
        (az, render_room(both, az, dist, speech_signal(FS, seed=i), FS, rt60_s=0.4, snr_db=20.0, seed=i))
        for i, (az, dist) in enumerate(TALKERS)
    ]


def _room_errors(
    takes: list[tuple[float, np.ndarray]], positions: np.ndarray, channels: slice
) -> tuple[np.ndarray, float]:
    mic = MicArraySection(positions=[tuple(p) for p in positions.tolist()])
    errors: list[float] = []
    speech_blocks = 0
    for azimuth, audio in takes:
        hearing = Hearing(mic, DoaConfig())
        doas = hearing.feed(audio[:, channels], 0.0)
        speech_blocks += sum(d.speech for d in doas)
        errors += [err(d.azimuth_deg, azimuth) for d in doas if d.azimuth_deg is not None]
    return np.asarray(errors), len(errors) / max(speech_blocks, 1)


# A linear array hears floor and ceiling echoes on its cone of confusion, so in a room with uniformly
# absorbing surfaces its estimates lean towards broadside (0 deg) by several degrees: looser bounds.
@pytest.mark.parametrize(
    ("name", "positions", "channels", "median_max", "p90_max"),
    [
        ("circle6", CIRCLE, slice(0, 6), 4.0, 15.0),
        ("linear4", LINEAR, slice(6, 10), 10.0, 25.0),
    ],
)
def test_room_speech(
    room_takes: list[tuple[float, np.ndarray]],
    name: str,
    positions: np.ndarray,
    channels: slice,
    median_max: float,
    p90_max: float,
) -> None:
    errors, kept = _room_errors(room_takes, positions, channels)
    print(
        f"{name}: median {np.median(errors):.2f} p90 {np.percentile(errors, 90):.2f} deg, "
        f"{errors.size} blocks, {kept:.0%} of speech blocks with an azimuth"
    )
    assert errors.size > 150
    assert np.median(errors) < median_max
    assert np.percentile(errors, 90) < p90_max


def test_hearing_emits_one_doa_per_hop_stamped_at_block_end() -> None:
    cfg = DoaConfig(block_ms=64.0, hop_ms=32.0)
    hearing = Hearing(MicArraySection(), cfg)
    x = plane_wave(CIRCLE, 20.0, n=FS)  # 1 s
    t0 = 100.0
    doas = []
    rng = np.random.default_rng(1)
    start = 0
    while start < x.shape[0]:  # chunks of awkward, varying lengths
        n = int(rng.integers(1, 700))
        doas += hearing.feed(x[start : start + n], t0 + start / FS)
        start += n
    expected = [t0 + (1024 + k * 512) / FS for k in range((FS - 1024) // 512 + 1)]
    assert [d.t for d in doas] == pytest.approx(expected, abs=1e-9)
    whole = Hearing(MicArraySection(), cfg).feed(x, t0)
    assert [d.to_json() for d in whole] == [d.to_json() for d in doas]


def test_hearing_hop_longer_than_block_skips_samples() -> None:
    hearing = Hearing(MicArraySection(), DoaConfig(block_ms=32.0, hop_ms=100.0))
    x = plane_wave(CIRCLE, 0.0, n=FS)
    doas = hearing.feed(x[:5000], 0.0) + hearing.feed(x[5000:], 5000 / FS)
    assert [d.t for d in doas] == pytest.approx([0.032 + 0.1 * k for k in range(10)], abs=1e-9)


def test_hearing_restarts_after_a_gap() -> None:
    hearing = Hearing(MicArraySection(), DoaConfig())
    x = plane_wave(CIRCLE, 0.0, n=FS)
    hearing.feed(x[:800], 0.0)
    doas = hearing.feed(x[800:3000], 10.0)  # 10 s later: the first 800 samples must not be joined on
    assert doas[0].t == pytest.approx(10.0 + 1024 / FS)


def test_hearing_channel_mismatch_names_expected_and_got() -> None:
    hearing = Hearing(MicArraySection(), DoaConfig())
    with pytest.raises(ValueError, match=r"expected 6.*got 4"):
        hearing.feed(np.zeros((512, 4), dtype=np.float32), 0.0)


def doa_records(wav: Path, cfg: Config) -> list[dict]:
    """What ``roombox doa`` prints for a WAV file."""
    return [d.to_json() for d in Hearing(cfg.mic_array, cfg.doa).feed(read_array_wav(wav, cfg.mic_array), 0.0)]


def test_doa_records_of_a_wav(tmp_path: Path, room_takes: list[tuple[float, np.ndarray]]) -> None:
    azimuth, audio = room_takes[4]
    wav = tmp_path / "room.wav"
    wavfile.write(wav, FS, np.round(audio[:, :6] * 32767).astype(np.int16))
    records = doa_records(wav, Config())
    assert len(records) == (audio.shape[0] - 1024) // 512 + 1
    assert {"t", "azimuth_deg", "speech"} <= set(records[0])
    assert records[0]["t"] == pytest.approx(0.064)
    assert not records[5]["speech"]  # the take starts with 0.6 s of noise alone
    found = [r["azimuth_deg"] for r in records if r["azimuth_deg"] is not None]
    assert len(found) > 20 and float(np.median(np.abs(np.asarray(found) - azimuth))) < 8.0

    float_wav = tmp_path / "float.wav"
    wavfile.write(float_wav, FS, audio[:, :6])
    from_float = doa_records(float_wav, Config())
    assert [r["t"] for r in from_float] == [r["t"] for r in records]
    assert sum(a["speech"] == b["speech"] for a, b in zip(from_float, records, strict=True)) > 0.95 * len(records)


def test_a_wav_that_does_not_fit_the_array_is_refused(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wavfile.write(wav, 48000, np.zeros((4800, 6), dtype=np.int16))
    with pytest.raises(ValueError, match=r"48000 Hz.*16000"):
        doa_records(wav, Config())
    wavfile.write(wav, FS, np.zeros((1600, 2), dtype=np.int16))
    with pytest.raises(ValueError, match=r"2 channels.*6 microphones"):
        doa_records(wav, Config())
