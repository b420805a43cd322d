"""Scenes for the listener (soft DOA evidence, source tracker, far end) and ``roombox bench listening``.

A scene is a few sources in a reverberant shoebox, rendered with the simulated room's own pieces
(:mod:`drivers.simroom.audio`: pyroomacoustics image sources for the early part, its seeded diffuse late tail
at the scene's RT60, its diffuse noise field): talkers (espeak-ng speech from :mod:`appliance.bench.doa`) at
any azimuth around the array, a steady fan, and a far-end loudspeaker whose dry signal is the playback
reference. Figures: per block, the share of local speech with the talker's direction reported (recall),
the error of what is reported (MAE, share within 10 degrees), blocks reported in silence, fan noise or
far-end-only speech (false alarms), CPU seconds per audio second; today's :class:`Hearing` on the same
signals is the peer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from appliance.bench.doa import speech_signal
from appliance.config import DoaConfig, MicArraySection, TrackerConfig
from appliance.perception.hearing import Hearing
from appliance.perception.listening import Heard, Listener

Row = tuple[str, float, str]
ROOM = (7.0, 6.0, 3.0)
ARRAY_AT = (3.5, 2.6, 1.2)  # room coordinates (x across, y away from the camera wall, z up): mid-table
SQUARE4 = [(0.0325, -0.1, 0.0325), (-0.0325, -0.1, 0.0325), (-0.0325, -0.1, -0.0325), (0.0325, -0.1, -0.0325)]


@dataclass(frozen=True)
class Emitter:
    """A source in the scene: where (camera-frame azimuth, horizontal distance, height above the array)
    and what it plays (mono, at the scene's rate, from time 0). ``role``: talker, fan or farend."""

    name: str
    azimuth_deg: float
    distance_m: float
    height_m: float
    signal: npt.NDArray[np.float64]
    role: str = "talker"

    def elevation_deg(self) -> float:
        return math.degrees(math.atan2(self.height_m, self.distance_m))


@dataclass
class Scene:
    samples: npt.NDArray[np.float32]  # (n, M)
    reference: npt.NDArray[np.float32]  # (n,) what the loudspeaker was sent (zeros when none)
    sample_rate: int
    emitters: list[Emitter]
    activity: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def active(self, t: float) -> list[Emitter]:
        return [e for e in self.emitters if any(a <= t < b for a, b in self.activity.get(e.name, []))]


def fan_noise(n: int, sample_rate: int, seed: int) -> npt.NDArray[np.float64]:
    """A fan or projector: steady broadband noise with blade-rate hum, unit RMS."""
    import scipy.signal

    rng = np.random.default_rng(seed)
    sos = scipy.signal.butter(2, [150.0, 3000.0], btype="band", fs=sample_rate, output="sos")
    x = scipy.signal.sosfilt(sos, rng.standard_normal(n))
    t = np.arange(n) / sample_rate
    x = x / np.sqrt(np.mean(x**2)) + 0.5 * sum(np.sin(2 * np.pi * f * t) for f in (180.0, 360.0, 540.0))
    return np.asarray(x / np.sqrt(np.mean(x**2)), dtype=np.float64)


def render_scene(
    positions: npt.ArrayLike,
    emitters: list[Emitter],
    sample_rate: int,
    duration_s: float,
    rt60_s: float = 0.6,
    snr_db: float = 10.0,
    fan_db: float = -12.0,
    seed: int = 0,
) -> Scene:
    """Render ``emitters`` to mics at ``positions`` (M, 3; camera frame, around ``ARRAY_AT``).

    Levels: talkers and the loudspeaker as rendered (each dry signal normalised to the same RMS when
    active); diffuse noise ``snr_db`` below the mean talker power at the mics; a fan ``fan_db`` relative
    to the talkers (dry RMS). The reference is the loudspeaker's dry signal.
    """
    import pyroomacoustics as pra
    import scipy.signal

    from drivers.simroom.audio import (
        MAX_ISM_ORDER,
        SPEED_OF_SOUND,
        diffuse_noise,
        late_tail_rirs,
        speech_intervals,
    )

    fs = int(sample_rate)
    n = round(duration_s * fs)
    pos = np.asarray(positions, dtype=np.float64)
    at = np.asarray(ARRAY_AT)
    mics = at[None, :] + np.stack([pos[:, 0], pos[:, 2], pos[:, 1] + 0.1], axis=1)  # camera -> room axes
    e_abs, order = pra.inverse_sabine(rt60_s, list(ROOM))
    room = pra.ShoeBox(
        list(ROOM), fs=fs, materials=pra.Material(e_abs), max_order=min(int(order), MAX_ISM_ORDER), air_absorption=False
    )
    room.add_microphone_array(pra.MicrophoneArray(mics.T, fs))
    centre = mics.mean(axis=0)
    where = []
    for e in emitters:
        az = math.radians(e.azimuth_deg)
        p = centre + np.array([e.distance_m * math.sin(az), e.distance_m * math.cos(az), e.height_m])
        if not all(0.1 < p[k] < ROOM[k] - 0.1 for k in range(3)):
            raise ValueError(f"{e.name} at {p} is outside the room")
        room.add_source(p.tolist())
        where.append(p)
    room.compute_rir()
    rng = np.random.default_rng(seed)
    lag = pra.constants.get("frac_delay_length") // 2
    parts: dict[str, npt.NDArray[np.float64]] = {}
    activity: dict[str, list[tuple[float, float]]] = {}
    reference = np.zeros(n)
    for s, (e, p) in enumerate(zip(emitters, where, strict=True)):
        x = np.zeros(n)
        x[: min(n, e.signal.size)] = e.signal[:n]
        if e.role == "fan":
            x = x / (np.sqrt(np.mean(x**2)) + 1e-12) * 10 ** (fan_db / 20.0) * 0.1
        else:
            on = np.abs(x) > 1e-4
            x = x / (np.sqrt(np.mean(x[on] ** 2)) + 1e-12) * 0.1 if on.any() else x
        delay = float(np.linalg.norm(p - centre)) / SPEED_OF_SOUND
        if e.role != "fan":
            activity[e.name] = speech_intervals(x, fs, offset_s=delay)
        if e.role == "farend":
            reference = x.copy()
        h = late_tail_rirs([room.rir[m][s] for m in range(len(mics))], mics, fs, rt60_s, delay + lag / fs, rng)
        y = scipy.signal.fftconvolve(x[:, None], h, axes=0)[lag : lag + n]
        parts[e.name] = y
    wet = sum(parts.values(), np.zeros((n, len(mics))))
    talk = [parts[e.name] for e in emitters if e.role == "talker"]
    talk_power = float(np.mean([np.mean(y[np.abs(y).max(axis=1) > 1e-4] ** 2) for y in talk])) if talk else 1e-4
    wet += diffuse_noise(mics, n, fs, rng).astype(np.float64) * math.sqrt(talk_power / 10 ** (snr_db / 10.0))
    scale = 0.5 / float(np.abs(wet).max())
    return Scene((wet * scale).astype(np.float32), (reference * scale).astype(np.float32), fs, emitters, activity)


def place(signal: npt.NDArray[np.float64], start_s: float, n: int, sample_rate: int) -> npt.NDArray[np.float64]:
    out = np.zeros(n)
    i = round(start_s * sample_rate)
    m = max(0, min(signal.size, n - i))
    out[i : i + m] = signal[:m]
    return out


SEATS = (((-40.0, 1.8), (135.0, 1.5)), ((60.0, 2.5), (-150.0, 1.2)), ((20.0, 3.0), (-75.0, 2.0)))


def meeting(
    positions: npt.ArrayLike,
    rt60_s: float = 0.6,
    snr_db: float = 10.0,
    fan: bool = True,
    farend: bool = True,
    talkers: tuple[tuple[float, float], ...] | None = None,
    sample_rate: int = 16000,
    seed: int = 0,
) -> Scene:
    """Talkers taking turns (azimuth, distance; by default from ``SEATS``, one behind the array), a fan on a
    shelf at -110 degrees, a far-end loudspeaker (under the screen, near the camera's axis) answering."""
    fs = sample_rate
    if talkers is None:
        talkers = SEATS[seed % len(SEATS)]
    clips = [speech_signal(fs, seed=seed + k) for k in range(len(talkers) + 1)]
    t = 1.5
    starts = []
    for k in range(len(talkers) + (1 if farend else 0)):
        starts.append(t)
        t += clips[k].size / fs + 1.0
    duration = t + 0.5
    n = round(duration * fs)
    emitters = [
        Emitter(f"talker{k}", az, dist, 0.15, place(clips[k], starts[k], n, fs)) for k, (az, dist) in enumerate(talkers)
    ]
    if farend:
        emitters.append(Emitter("farend", 5.0, 2.2, 0.3, place(clips[-1], starts[-1], n, fs), role="farend"))
    if fan:
        emitters.append(Emitter("fan", -110.0, 2.0, 0.6, fan_noise(n, fs, seed), role="fan"))
    return render_scene(positions, emitters, fs, duration, rt60_s=rt60_s, snr_db=snr_db, seed=seed)


def _err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@dataclass
class Score:
    speech_blocks: int = 0
    reported: int = 0
    errors: list[float] = field(default_factory=list)
    quiet_blocks: int = 0  # no local talker: silence, fan, far end alone
    false_alarms: int = 0
    farend_blocks: int = 0  # far end alone
    farend_reported: int = 0
    farend_marked: int = 0
    farend_total: int = 0  # far-end-only blocks, tails included (the denominator of farend_marked)
    local_marked_farend: int = 0
    cpu_s: float = 0.0
    audio_s: float = 0.0

    def rows(self, label: str) -> list[Row]:
        e = np.asarray(self.errors) if self.errors else np.asarray([math.nan])
        return [
            (f"{label} speech recall", self.reported / max(self.speech_blocks, 1), "fraction"),
            (f"{label} MAE", float(np.mean(e)), "deg"),
            (f"{label} within 10 deg", float(np.mean(e <= 10.0)), "fraction"),
            (f"{label} false alarms (no local talker)", self.false_alarms / max(self.quiet_blocks, 1), "fraction"),
            (f"{label} far-end-only blocks reported", float(self.farend_reported), "blocks"),
            (f"{label} CPU per audio second", self.cpu_s / max(self.audio_s, 1e-9), "s/s"),
        ]


def score_blocks(scene: Scene, blocks: list[tuple[float, float | None]], block_s: float, score: Score) -> None:
    """Add the blocks (t end, reported azimuth) of one run over ``scene`` to ``score``."""
    for t, az in blocks:
        mid = t - block_s / 2.0
        active = scene.active(mid)
        local = [e for e in active if e.role == "talker"]
        far = [e for e in active if e.role == "farend"]
        if local:
            score.speech_blocks += 1
            if az is not None:
                score.reported += 1
                score.errors.append(min(_err(az, e.azimuth_deg) for e in local))
        else:
            # the reverberant tail of a talker just stopped is not counted against either
            tail = scene.active(mid - 0.3)
            if any(e.role == "talker" for e in tail):
                continue
            score.quiet_blocks += 1
            score.false_alarms += az is not None
            if far:
                score.farend_blocks += 1
                score.farend_reported += az is not None


def run_listener(
    scene: Scene,
    mic: MicArraySection,
    cfg: TrackerConfig,
    doa: DoaConfig,
    with_reference: bool,
    score: Score,
    chunk: int = 1024,
) -> list[Heard]:
    listener = Listener(mic, cfg, doa)
    heard: list[Heard] = []
    x = scene.samples
    c0 = time.process_time()
    for s in range(0, x.shape[0], chunk):
        heard += listener.feed(
            x[s : s + chunk], s / scene.sample_rate, scene.reference[s : s + chunk] if with_reference else None
        )
    score.cpu_s += time.process_time() - c0
    score.audio_s += x.shape[0] / scene.sample_rate
    score_blocks(scene, [(h.t, h.azimuth_deg) for h in heard], doa.block_ms / 1000.0, score)
    for h in heard:
        active = scene.active(h.t - doa.block_ms / 2000.0)
        if any(e.role == "farend" for e in active) and not any(e.role == "talker" for e in active):
            score.farend_marked += h.farend
            score.farend_total += 1
        if any(e.role == "talker" for e in active) and not any(e.role == "farend" for e in active):
            score.local_marked_farend += h.farend
    return heard


def run_hearing(scene: Scene, mic: MicArraySection, doa: DoaConfig, score: Score) -> None:
    hearing = Hearing(mic, doa)
    c0 = time.process_time()
    doas = hearing.feed(scene.samples, 0.0)
    score.cpu_s += time.process_time() - c0
    score.audio_s += scene.samples.shape[0] / scene.sample_rate
    score_blocks(scene, [(d.t, d.azimuth_deg) for d in doas], doa.block_ms / 1000.0, score)


ARRAYS = {"circle6": None, "square4": SQUARE4}


def bench_listening(quick: bool = False) -> list[Row]:
    """Listener vs today's Hearing on meeting scenes: RT60 0.6 s / SNR 10 dB (and 0.8 s / 5 dB unless
    ``quick``), a fan, a far-end loudspeaker with its playback reference, a talker behind the array;
    6-mic circle and 4-mic square; three seatings (one when ``quick``)."""
    rows: list[Row] = []
    cfg, doa = TrackerConfig(), DoaConfig()
    seeds = (0,) if quick else (0, 1, 2)
    rooms = ((0.6, 10.0),) if quick else ((0.6, 10.0), (0.8, 5.0))
    for rt60, snr in rooms:
        for name, positions in ARRAYS.items():
            mic = MicArraySection() if positions is None else MicArraySection(positions=positions)
            ours, peer, plain = Score(), Score(), Score()
            for seed in seeds:
                scene = meeting(mic.positions, rt60_s=rt60, snr_db=snr, seed=seed)
                run_listener(scene, mic, cfg, doa, True, ours)
                run_listener(scene, mic, cfg, doa, False, plain)
                run_hearing(scene, mic, doa, peer)
            cell = f"{name} RT60 {rt60:.1f} s SNR {snr:.0f} dB"
            rows += ours.rows(f"{cell} Listener")
            rows.append(
                (
                    f"{cell} Listener far-end-only blocks marked far end",
                    ours.farend_marked / max(ours.farend_total, 1),
                    "fraction",
                )
            )
            rows.append(
                (f"{cell} Listener local-only blocks marked far end", float(ours.local_marked_farend), "blocks")
            )
            rows.append(
                (
                    f"{cell} Listener without reference CPU per audio second",
                    plain.cpu_s / max(plain.audio_s, 1e-9),
                    "s/s",
                )
            )
            rows.append(
                (
                    f"{cell} Listener without reference far-end-only blocks reported",
                    float(plain.farend_reported),
                    "blocks",
                )
            )
            rows += peer.rows(f"{cell} Hearing (today)")
    return rows


if __name__ == "__main__":
    for row_name, value, unit in bench_listening(quick=True):
        print(f"{row_name:<60} {value:10.3f} {unit}")
