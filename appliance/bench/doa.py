"""Simulated talkers in a reverberant room, and the DOA benchmark for ``roombox bench``.

The room is rendered by pyroomacoustics' image-source model (``ShoeBox``). The source is real synthetic
speech from espeak-ng when it is installed, otherwise bursts of speech-band noise with a syllable rhythm.
The benchmark runs our :class:`SrpPhat` and pyroomacoustics' own SRP and MUSIC on the same signals.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.config import DoaConfig, MicArraySection
from appliance.perception.doa import SPEED_OF_SOUND, SrpPhat
from appliance.perception.vad import EnergyVad

ROOM_DIM = (8.0, 6.0, 3.0)  # metres: x across, y away from the camera's wall, z up
CAMERA_AT = (4.0, 0.3, 1.4)  # in room coordinates; the camera looks along +y
SENTENCES = (
    "Good morning everyone, let's look at the quarterly numbers before we decide.",
    "I think the second option is better, but the budget is still too tight for it.",
    "Could you share the slides again? The chart on page four was not very clear.",
    "We shipped the new firmware last week and the field reports look promising.",
)
Row = tuple[str, float, str]


def speech_signal(sample_rate: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """A few seconds of speech-like audio at ``sample_rate``, peak 0.5: espeak-ng if installed."""
    from drivers.simroom.assets import ESPEAK, synthesize

    if shutil.which(ESPEAK) is not None:
        text = SENTENCES[seed % len(SENTENCES)]
        voice = ("en", "en-us", "en+f3", "en+m3")[seed % 4]
        x = synthesize(text, voice, sample_rate, speed_wpm=165).astype(np.float64)
    else:
        x = _syllable_noise(sample_rate, seed)
    return np.asarray(0.5 * x / (np.max(np.abs(x)) + 1e-12), dtype=np.float64)


def _syllable_noise(sample_rate: int, seed: int, duration_s: float = 4.0) -> npt.NDArray[np.float64]:
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    sos = butter(4, [200.0, min(3800.0, 0.45 * sample_rate)], btype="band", fs=sample_rate, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    t = np.arange(n) / sample_rate
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0.0, None) ** 2
    envelope *= np.sin(2 * np.pi * 0.4 * t) > -0.6  # pauses between "words"
    return np.asarray(noise * envelope, dtype=np.float64)


def render_room(
    positions: npt.ArrayLike,
    azimuth_deg: float,
    distance_m: float,
    source: npt.ArrayLike,
    sample_rate: int,
    rt60_s: float = 0.4,
    snr_db: float = 20.0,
    lead_s: float = 0.6,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """What mics at ``positions`` (M, 3; camera frame, metres) hear from a talker at ``azimuth_deg``,
    ``distance_m`` away at the array's height, in a ShoeBox room with ``rt60_s``.

    White sensor noise at ``snr_db`` below the mean speech power is added, and ``lead_s`` seconds of
    noise alone come first. Returns float32 (samples, M).
    """
    import pyroomacoustics as pra

    pos = np.asarray(positions, dtype=np.float64)
    cam = np.asarray(CAMERA_AT)
    # camera frame (x right, y up, z forward) -> room (x, y forward, z up); a relabelling of axes
    mics = cam[:, None] + np.stack([pos[:, 0], pos[:, 2], pos[:, 1]])
    array_height = float(mics[2].mean())
    az = math.radians(azimuth_deg)
    talker = cam + np.array([distance_m * math.sin(az), distance_m * math.cos(az), 0.0])
    talker[2] = array_height
    absorption, max_order = pra.inverse_sabine(rt60_s, list(ROOM_DIM))
    room = pra.ShoeBox(
        list(ROOM_DIM), fs=sample_rate, materials=pra.Material(absorption), max_order=max_order, air_absorption=False
    )
    room.add_source(talker.tolist(), signal=np.asarray(source, dtype=np.float64))
    room.add_microphone_array(mics)
    room.simulate()
    wet = np.asarray(room.mic_array.signals, dtype=np.float64).T  # (n, M)
    rng = np.random.default_rng(seed)
    lead = int(lead_s * sample_rate)
    wet = np.concatenate([np.zeros((lead, wet.shape[1])), wet])
    power = float(np.mean(wet[lead:] ** 2))
    wet += rng.standard_normal(wet.shape) * math.sqrt(power / 10 ** (snr_db / 10.0))
    return np.asarray(0.5 * wet / np.max(np.abs(wet)), dtype=np.float32)


def linear_array(n: int = 4, spacing_m: float = 0.05, y_m: float = -0.1) -> list[tuple[float, float, float]]:
    """A horizontal linear array across the camera (along x), centred below it."""
    return [((k - (n - 1) / 2.0) * spacing_m, y_m, 0.0) for k in range(n)]


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def bench_doa(
    quick: bool = False, angles: tuple[float, ...] = (-60.0, -30.0, 0.0, 20.0, 45.0, 70.0), distance_m: float = 3.0
) -> list[Row]:
    """Rows (name, value, unit): speed and accuracy of our SRP-PHAT against pyroomacoustics' SRP and
    MUSIC on the same rendered speech blocks (default 6-mic circle, RT60 0.4 s, 20 dB SNR).
    ``quick`` uses three talker angles instead of all of ``angles``."""
    import pyroomacoustics as pra

    if quick:
        angles = angles[::2]
    mic = MicArraySection()
    cfg = DoaConfig()
    fs = mic.sample_rate
    pos = np.asarray(mic.positions)
    ours = SrpPhat(pos, fs, cfg)
    nfft = ours.frame_len
    front = np.radians(ours.grid_deg)
    # their azimuth is measured in the room's x-y plane from +x; ours is from +y towards +x
    L = np.stack([pos[:, 0], pos[:, 2]])
    theirs: dict[str, Any] = {
        name: pra.doa.algorithms[name](L, fs, nfft, c=SPEED_OF_SOUND, num_src=1, azimuth=np.pi / 2 - front)
        for name in ("SRP", "MUSIC", "NormMUSIC")
    }
    errors: dict[str, list[float]] = {"ours": [], **{k: [] for k in theirs}}
    seconds: dict[str, float] = dict.fromkeys(errors, 0.0)
    confident: list[float] = []  # our errors on the blocks Hearing would report (confidence gate)
    n_blocks = 0
    hop = round(cfg.hop_ms * fs / 1000.0)
    window = np.hanning(nfft + 2)[1:-1]
    for i, angle in enumerate(angles):
        audio = render_room(pos, angle, distance_m, speech_signal(fs, seed=i), fs, seed=i)
        vad = EnergyVad(cfg, fs)
        for start in range(0, audio.shape[0] - ours.block_len + 1, hop):
            block = audio[start : start + ours.block_len]
            speech, _ = vad.update(block)
            if not speech:
                continue
            n_blocks += 1
            t = time.perf_counter()
            az, confidence = ours.estimate(block)
            seconds["ours"] += time.perf_counter() - t
            errors["ours"].append(abs(_wrap(az - angle)))
            if confidence >= cfg.min_confidence:
                confident.append(errors["ours"][-1])
            t = time.perf_counter()
            frames = np.stack([block[s : s + nfft] for s in ours._starts])  # same sub-frames as ours
            X = np.fft.rfft(frames * window[None, :, None], axis=1).transpose(2, 1, 0)  # (M, F, S)
            prep = time.perf_counter() - t
            for name, algo in theirs.items():
                t = time.perf_counter()
                algo.locate_sources(X, freq_range=[cfg.fmin_hz, cfg.fmax_hz])
                seconds[name] += prep + time.perf_counter() - t
                their_az = 90.0 - math.degrees(float(algo.azimuth_recon[0]))
                errors[name].append(abs(_wrap(their_az - angle)))
    n = max(n_blocks, 1)
    hop_ms = cfg.hop_ms
    rows: list[Row] = [("doa blocks (speech, 6-mic, RT60 0.4 s)", float(n_blocks), "blocks")]
    for name in errors:
        label = "SrpPhat (ours)" if name == "ours" else f"pyroomacoustics {name}"
        ms = 1000.0 * seconds[name] / n
        rows.append((f"doa {label} time", ms, "ms/block"))
        rows.append((f"doa {label} real-time factor", ms / hop_ms, "x (of hop)"))
        rows.append((f"doa {label} median error", float(np.median(errors[name])), "deg"))
        rows.append((f"doa {label} p90 error", float(np.percentile(errors[name], 90)), "deg"))
    if confident:
        rows.append(("doa SrpPhat (ours) blocks past the confidence gate", len(confident) / n, "fraction"))
        rows.append(("doa SrpPhat (ours) median error, gated", float(np.median(confident)), "deg"))
        rows.append(("doa SrpPhat (ours) p90 error, gated", float(np.percentile(confident, 90)), "deg"))
    for name in theirs:
        rows.append((f"doa time ours/{name}", seconds["ours"] / max(seconds[name], 1e-12), "ratio"))
    return rows


if __name__ == "__main__":
    for row_name, value, unit in bench_doa():
        print(f"{row_name:<55} {value:10.3f} {unit}")
