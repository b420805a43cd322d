"""``roombox bench hearing``: how the hearing holds up over a grid of rooms, against peers in the same run.

The grid is RT60 x SNR x array x seed (:data:`RT60S`, :data:`SNRS`, :data:`ARRAYS`). Each seed is one
recording of about 22 s in a shoebox room rendered by the simulated room's acoustics
(:func:`drivers.simroom.audio.render_shoebox`: image sources + diffuse late tail) with:

- steady noise all the time: diffuse (HVAC-like) noise plus a directional fan or projector at a fixed
  place, together ``snr_db`` below the talkers' speech power (each half of it);
- 0-4 s: steady noise only (false alarms in steady noise are counted over 1-4 s);
- 4-10 s: impulses (a door slam, a chair scrape, a burst of typing, a cough), synthesised, each at its
  own place in the room (impulses reported as speech: events during which any block says speech);
- from 10.5 s: two talkers 1-4 m away take turns (the CMU Arctic clip and espeak-ng voices), with 2 s
  pauses after each turn (false alarms in silence: the pauses, from 0.4 s after the turn ends).

Planar arrays sit on the table in the middle of the room and the talkers are at any azimuth (360 deg); the
linear array sits under the camera on the front wall and the talkers are in front of it (-75..75 deg), and so
does ``circle6-wall``: the 6-mic circle flat under the camera, its centre 8 cm from the wall. Every estimator
hears that array as its installer sets it up: the half-space in front of the wall only (``[tracker]
full_circle = false``; :class:`Mounted`).
Azimuth 0 is the camera's axis (+y in the room), positive to the right (+x).

The arrays under the camera are also measured after the installer's guided calibration
(:class:`CalibratedListener`, ``listener+calibration``): three people (the table's left end, its right end,
its middle) talk alone in the same room, and :mod:`appliance.calibration` fits its map from what the listener
heard and where the camera sees them (:func:`render_calibration`), and sets the array's gain from how loud
they were heard. ``listener+gain`` is that gain alone, on every array: with ``--mic-gain-db G`` it says how
much of an array G dB too loud or too quiet the calibration recovers.

**The hold-out rooms** (``--simulator habets``): the same cells rendered by another simulator, which no
default was tuned on: Habets' image-source generator (:func:`drivers.simroom.audio.render_habets`: every
image order, no synthetic tail, so the late reverberation's coherence is the images', not the ideal diffuse
field's), rooms of everyday size (5-8 x 4.5-7 m, the table arrays at table height), other talker places and
espeak-ng voices, and the steady noise from places in the room (two ceiling vents and the fan or projector)
instead of a diffuse field. The brief's lesson: a listener tuned on one simulator's rooms is measured on rooms
it never heard.

Renders are cached under ``<data dir>/cache/hearing`` keyed by a hash of the cell's parameters, so a second
run only analyses. Any estimator plugs in: :func:`evaluate` takes a factory ``(MicArraySection) ->`` an
object with ``feed(samples, t0) -> list[Doa]`` (as :class:`~appliance.perception.hearing.Hearing`) and
returns per-cell :class:`CellMetrics`; :func:`bench_hearing` runs today's Hearing (energy and Silero VAD),
pyroomacoustics' SRP and NormMUSIC on the same recordings.

A block (a :class:`Doa` stamped ``t``) is labelled by the time ``t - LABEL_LAG_S`` (the middle of a 64 ms
block). ``recall``: share of speech blocks with an azimuth; ``mae`` and ``within10`` over those;
``vad_recall``: share of speech blocks with ``speech`` true; ``fa_silence`` / ``fa_noise``: share of
blocks in pauses / in steady noise with ``speech`` true; ``impulses``: share of impulse events with
``speech`` true in any block during the event.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from appliance.config import DoaConfig, MicArraySection
from appliance.messages import Doa
from appliance.perception.doa import SPEED_OF_SOUND
from appliance.perception.hearing import Hearing, louder
from common.atomic import write_atomic

if TYPE_CHECKING:
    from appliance.calibration import Calibration

Row = tuple[str, float, str]
Vec3 = tuple[float, float, float]

RENDER_VERSION = 1  # bump when the rendering changes: old cached renders are then ignored
RATE = 16000
RT60S = (0.2, 0.4, 0.6, 0.8)
SNRS = (20.0, 10.0, 5.0)
SEEDS = (0, 1, 2)
LABEL_LAG_S = 0.032
SPEECH_DBFS = -30.0  # speech power at the mics while someone talks
SENSOR_NOISE_DBFS = -85.0
NOISE_SPAN = (1.0, 4.0)
IMPULSES: tuple[tuple[str, float, float], ...] = (  # kind, onset (s), level re speech power (dB)
    ("door", 4.5, 6.0),
    ("chair", 5.7, 0.0),
    ("typing", 6.8, -6.0),
    ("cough", 9.0, 0.0),
)
SPEECH_START_S = 10.5
PAUSE_S = 2.0
SILENCE_AFTER_S = 0.4  # a turn's reverberant tail and a VAD's hangover are not counted as false alarms
EDGE_S = 0.05  # blocks this close to a speech interval's edge are not counted either way
SENTENCES = (
    "Could you share the slides again? The chart on page four was not very clear.",
    "We shipped the new firmware last week and the field reports look promising.",
    "I think the second option is better, but the budget is still too tight for it.",
    "Good morning everyone, let's look at the quarterly numbers before we decide.",
)
VOICES = ("en+f3", "en-us", "en+m3", "en+f2")
# the espeak-ng voices of each simulator's rooms: the grid's (pyroomacoustics) and the hold-out's (Habets')
VOICES_OF = {"pra": VOICES, "habets": ("en-gb+m1", "en-us+f4", "en-gb-scotland", "en+f5")}
SIMULATORS = tuple(VOICES_OF)


def _ring(n: int, radius: float, start_deg: float = 0.0) -> list[Vec3]:
    return [
        (
            radius * math.sin(math.radians(start_deg + k * 360.0 / n)),
            0.0,
            radius * math.cos(math.radians(start_deg + k * 360.0 / n)),
        )
        for k in range(n)
    ]


# camera frame (x right, y up, z forward), centred on the array; planar ones horizontal
ARRAYS: dict[str, list[Vec3]] = {
    "respeaker4": _ring(4, 0.032, 45.0),  # ReSpeaker USB 4-mic: a square of 45 mm sides
    "circle6": _ring(6, 0.0463),  # ReSpeaker 6-mic circular
    "uma8": [(0.0, 0.0, 0.0), *_ring(6, 0.043)],  # miniDSP UMA-8: 6 on a circle + 1 in the centre
    "linear4": [((k - 1.5) * 0.05, 0.0, 0.0) for k in range(4)],  # 4 mics, 5 cm apart, across the camera
    "circle6-wall": _ring(6, 0.0463),  # the 6-mic circle flat under the camera, 8 cm from the front wall
}
LINEAR = {"linear4"}
WALL = {"circle6-wall"}  # planar arrays under the camera on the front wall (talkers in front of them)
CAMERA_FIELD_DEG = 75.0  # the arrays under the camera are searched this far off its axis ([tracker] max_azimuth_deg)
# the seed of each array's noises: fixed, so that adding an array leaves the others' renders as they were
_ARRAY_SEED = {name: k for k, name in enumerate(("circle6", "linear4", "respeaker4", "uma8", "circle6-wall"))}


@dataclass(frozen=True)
class Cell:
    """One recording of the grid."""

    rt60_s: float
    snr_db: float
    array: str
    seed: int
    sim: str = "pra"  # the simulator of the room (:data:`SIMULATORS`)

    def key(self) -> str:
        fields: list[Any] = [RENDER_VERSION, RATE, self.rt60_s, self.snr_db, self.array, ARRAYS[self.array], self.seed]
        if self.sim != "pra":  # the grid's own renders keep their keys
            fields.append(self.sim)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:20]

    @property
    def name(self) -> str:
        where = "" if self.sim == "pra" else f" ({self.sim})"
        return f"rt60 {self.rt60_s:.1f} snr {self.snr_db:g} {self.array}{where}"


@dataclass
class Recording:
    """A rendered cell: the array's samples and the truth to score against."""

    cell: Cell
    samples: npt.NDArray[np.float32]  # (n, M)
    positions: list[Vec3]
    turns: list[tuple[float, list[tuple[float, float]]]]  # (talker azimuth, speech intervals (s))
    impulses: list[tuple[str, float, float]]  # (kind, start, end) in seconds
    silences: list[tuple[float, float]]
    noise_span: tuple[float, float] = NOISE_SPAN

    @property
    def duration_s(self) -> float:
        return float(self.samples.shape[0]) / RATE

    def mic(self) -> MicArraySection:
        return MicArraySection(sample_rate=RATE, positions=list(self.positions))


# ---------------------------------------------------------------------------------------------------------
# sounds


def _damped(rate: int, n: int, freqs: Iterable[float], decay_s: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / rate
    return np.asarray(
        sum(rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs) * np.exp(-t / decay_s)
    )


def _band(x: np.ndarray, lo: float, hi: float, rate: int) -> np.ndarray:
    import scipy.signal

    sos = scipy.signal.butter(4, [lo, min(hi, 0.45 * rate)], btype="band", fs=rate, output="sos")
    return np.asarray(scipy.signal.sosfilt(sos, x))


def impulse_sound(kind: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible synthetic door slam, chair scrape, burst of typing or cough (unit RMS over its length)."""
    if kind == "door":  # a low thump of the panel, the latch's click, a short rattle
        n = int(0.45 * rate)
        x = 3.0 * _damped(rate, n, rng.uniform(55, 110, 3), 0.06, rng)
        click = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.004 * rate))
        x += 2.0 * _band(click, 800, 6000, rate)
        for d in rng.uniform(0.03, 0.12, 3):
            i = int(d * rate)
            m = min(n - i, int(0.01 * rate))
            x[i : i + m] += 0.6 * _band(rng.standard_normal(m), 1500, 5000, rate) * np.exp(-np.arange(m) / 40)
    elif kind == "chair":  # stick-slip: a wandering pulse train through the seat's resonances
        n = int(rng.uniform(0.5, 0.8) * rate)
        f0 = rng.uniform(40, 90) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(1, 3) * np.arange(n) / rate))
        phase = np.cumsum(f0 / rate)
        pulses = np.diff(np.floor(phase), prepend=0.0) * (1 + 0.3 * rng.standard_normal(n))
        x = np.zeros(n)
        for f in rng.uniform([500, 1100, 2200], [900, 1600, 3200]):
            k = _damped(rate, int(0.02 * rate), [f], 0.004, rng)
            x += np.convolve(pulses, k)[:n]
        x += 0.05 * _band(rng.standard_normal(n), 300, 4000, rate)
        x *= np.sin(np.pi * np.arange(n) / n) ** 0.5
    elif kind == "typing":  # 10-14 keystrokes: a click and a thock each, irregular
        n = int(1.5 * rate)
        x = np.zeros(n)
        t = 0.05
        while t < 1.4:
            i = int(t * rate)
            m = int(0.03 * rate)
            stroke = 0.7 * _band(rng.standard_normal(m), 2000, 7000, rate) * np.exp(-np.arange(m) / (0.002 * rate))
            stroke += _damped(rate, m, rng.uniform([250, 600], [450, 1100]), 0.008, rng)
            x[i : i + m] += stroke[: n - i] * rng.uniform(0.5, 1.0)
            t += rng.uniform(0.08, 0.25)
    elif kind == "cough":  # two bursts of turbulent noise through an open vocal tract
        n = int(0.7 * rate)
        x = np.zeros(n)
        for start, length in ((0.0, rng.uniform(0.18, 0.25)), (rng.uniform(0.3, 0.38), rng.uniform(0.12, 0.2))):
            i, m = int(start * rate), int(length * rate)
            noise = rng.standard_normal(m)
            burst = sum(
                _band(noise, f * 0.8, f * 1.25, rate) for f in rng.uniform([400, 1200, 2300], [700, 1700, 3000])
            )
            env = np.minimum(np.arange(m) / (0.01 * rate), 1.0) * np.exp(-np.arange(m) / (0.07 * rate))
            x[i : i + m] += np.asarray(burst) * env
    else:
        raise ValueError(f"unknown impulse kind {kind!r}")
    return np.asarray(x / (np.sqrt(np.mean(x**2)) + 1e-12))


def fan_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A fan or projector: broadband airflow (low-heavy), blade-pass tones and a motor whine; unit RMS."""
    import scipy.signal

    air = scipy.signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))  # brown-ish
    air = _band(air, 60, 4000, rate) + 0.15 * _band(rng.standard_normal(n), 1000, 6000, rate)
    t = np.arange(n) / rate
    bpf = rng.uniform(90, 160)
    tones = sum(np.sin(2 * np.pi * k * bpf * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    whine = 0.1 * np.sin(2 * np.pi * rng.uniform(900, 1400) * t)
    x = air / np.std(air) + 0.5 * tones + whine
    return np.asarray(x / np.sqrt(np.mean(x**2)))


# ---------------------------------------------------------------------------------------------------------
# rendering


def cache_dir() -> Path:
    """``ROOMBOX_BENCH_CACHE``, else ``<data dir>/cache/hearing`` when it can be written, else
    ``~/.cache/roombox/hearing``."""
    from common.paths import cache_dir as shared_cache_dir

    return shared_cache_dir("hearing", "ROOMBOX_BENCH_CACHE")


def _azimuth(centre: np.ndarray, p: np.ndarray) -> float:
    return math.degrees(math.atan2(float(p[0] - centre[0]), float(p[1] - centre[1])))


def _place(
    centre: np.ndarray, az_deg: float, dist: float, z: float, size: Sequence[float], margin: float = 0.4
) -> np.ndarray:
    """A point ``dist`` from ``centre`` at ``az_deg`` (shortened to stay ``margin`` inside the walls)."""
    a = math.radians(az_deg)
    u = np.array([math.sin(a), math.cos(a)])
    limit = min(
        (
            (size[i] - margin - centre[i]) / u[i]
            if u[i] > 1e-9
            else (margin - centre[i]) / u[i]
            if u[i] < -1e-9
            else math.inf
        )
        for i in (0, 1)
    )
    d = min(dist, limit)
    return np.array([centre[0] + d * u[0], centre[1] + d * u[1], z])


def _speech(kind: int, seed: int, rate: int, voices: Sequence[str] = VOICES) -> np.ndarray:
    from drivers.simroom.assets import arctic_clip, synthesize

    if kind == 0:
        x = arctic_clip(rate)
    else:
        x = synthesize(SENTENCES[(seed + kind) % len(SENTENCES)], voices[(seed + kind) % len(voices)], rate)
    x = np.asarray(x, np.float64)
    return np.asarray(x / (np.sqrt(np.mean(x**2)) + 1e-12) * 0.1)


def _layout(seed: int, sim: str = "pra") -> np.random.Generator:
    """The draw of a seed's room and people: the same for every RT60 and array; other for the hold-out."""
    return np.random.default_rng(seed) if sim == "pra" else np.random.default_rng([seed, 104729])


def _room(layout: np.random.Generator, array: str, sim: str = "pra") -> tuple[list[float], np.ndarray, np.ndarray]:
    """A room of the grid drawn from ``layout``: its size, the array's centre and its mics (room axes, m).
    The hold-out's rooms are of everyday size, its table arrays at table height."""
    if sim == "pra":
        size = [layout.uniform(9.0, 11.0), layout.uniform(8.5, 10.0), layout.uniform(2.7, 3.2)]
        table = 0.95
    else:
        size = [layout.uniform(5.0, 8.0), layout.uniform(4.5, 7.0), layout.uniform(2.6, 3.0)]
        table = 0.78
    if array in WALL:
        centre = np.array([size[0] / 2, 0.08, 1.15])
    elif array in LINEAR:
        centre = np.array([size[0] / 2, 0.3, 1.2])
    else:
        centre = np.array([size[0] / 2 + layout.uniform(-0.3, 0.3), size[1] / 2 + layout.uniform(-0.3, 0.3), table])
    pos = np.asarray(ARRAYS[array], np.float64)
    mics = centre[None, :] + np.stack([pos[:, 0], pos[:, 2], pos[:, 1]], axis=1)  # camera -> room axes
    return size, centre, mics


def _render(
    sim: str,
    size: list[float],
    rt60_s: float,
    mics: np.ndarray,
    sources: list[tuple[np.ndarray, np.ndarray]],
    n: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Each source at every mic, by the simulator ``sim`` (:data:`SIMULATORS`, checked by the caller)."""
    from drivers.simroom.audio import render_habets, render_shoebox

    if sim == "habets":
        return render_habets(size, rt60_s, mics, RATE, sources, n)
    return render_shoebox(size, rt60_s, mics, RATE, sources, n, rng)


def _check_simulator(sim: str) -> None:
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; the simulators are {', '.join(SIMULATORS)}")


def _unit_sum(signals: Iterable[np.ndarray]) -> np.ndarray:
    """The sum of ``signals``, each brought to unit RMS first, at unit RMS (sources of equal power)."""
    total: np.ndarray = np.asarray(sum(y / math.sqrt(float(np.mean(y**2))) for y in signals))
    return total / math.sqrt(float(np.mean(total**2)))


def _vents(size: list[float], layout: np.random.Generator) -> list[np.ndarray]:
    """The hold-out rooms' two ceiling vents (steady noise from places, not an ideal diffuse field)."""
    return [
        np.array([layout.uniform(0.5, size[0] - 0.5), layout.uniform(0.5, size[1] - 0.5), size[2] - 0.05])
        for _ in range(2)
    ]


def render_group(
    rt60_s: float,
    array: str,
    seed: int,
    snrs: Sequence[float],
    talkers_at: Sequence[tuple[float, float]] | None = None,
    sim: str = "pra",
) -> dict[float, Recording]:
    """Render one room, array and seed once and mix it at every SNR of ``snrs``, by the simulator ``sim``.

    ``talkers_at`` overrides the two talkers' (azimuth deg, distance m), drawn from the seed otherwise.
    """
    from drivers.simroom.audio import diffuse_noise, speech_intervals

    _check_simulator(sim)
    rng = np.random.default_rng([seed, int(rt60_s * 1000), _ARRAY_SEED[array]])
    layout = _layout(seed, sim)  # the same rooms and talkers for every RT60 and array
    size, centre, mics = _room(layout, array, sim)
    linear = array in LINEAR or array in WALL  # under the camera, talkers in front
    pos = np.asarray(ARRAYS[array], np.float64)
    if linear:
        azimuths = [layout.uniform(-75, 75)]
        while len(azimuths) < 2:
            a = layout.uniform(-75, 75)
            if abs(a - azimuths[0]) >= 20:
                azimuths.append(a)
    else:
        azimuths = [layout.uniform(-180, 180)]
        while len(azimuths) < 2:
            a = layout.uniform(-180, 180)
            if abs((a - azimuths[0] + 180) % 360 - 180) >= 20:
                azimuths.append(a)
    drawn = [(layout.uniform(1.0, 4.0), layout.uniform(1.1, 1.3)) for _ in azimuths]  # distance, mouth height
    distances, heights = [d for d, _ in drawn], [h for _, h in drawn]
    if talkers_at is not None:
        azimuths, distances = [a for a, _ in talkers_at], [d for _, d in talkers_at]
    talkers = [_place(centre, a, d, h, size) for a, d, h in zip(azimuths, distances, heights, strict=True)]

    # the talkers' turns
    utterances = [_speech(0 if (seed + k) % 2 == 0 else 1 + k, seed, RATE, VOICES_OF[sim]) for k in range(2)]
    starts = [SPEECH_START_S]
    for u in utterances[:-1]:
        starts.append(starts[-1] + len(u) / RATE + PAUSE_S)
    n = int((starts[-1] + len(utterances[-1]) / RATE + PAUSE_S) * RATE)
    sources: list[tuple[np.ndarray, np.ndarray]] = []
    turns: list[tuple[float, list[tuple[float, float]]]] = []
    silences: list[tuple[float, float]] = []
    mic_centre = mics.mean(axis=0)
    for k, (u, start, p) in enumerate(zip(utterances, starts, talkers, strict=True)):
        x = np.zeros(n)
        i = int(start * RATE)
        x[i : i + len(u)] = u[: n - i]
        sources.append((p, x))
        delay = float(np.linalg.norm(p - mic_centre)) / SPEED_OF_SOUND
        spans = speech_intervals(u, RATE, offset_s=start + delay)
        turns.append((_azimuth(mic_centre, p), spans))
        end = spans[-1][1]
        nxt = starts[k + 1] + 0.1 if k + 1 < len(starts) else n / RATE + 0.1
        silences.append((end + SILENCE_AFTER_S, nxt - 0.1))
    n_talk = len(sources)

    # the fan or projector, and the impulses, each at its own place
    if seed % 2 == 0:  # a projector on the ceiling, near the table
        fan_at = _place(centre, layout.uniform(-180, 180), layout.uniform(1.0, 2.0), size[2] - 0.35, size)
    else:  # a floor fan in a corner
        fan_at = np.array([0.5, size[1] - 0.5, 0.5]) if layout.uniform() < 0.5 else np.array([size[0] - 0.5, 0.5, 0.5])
    sources.append((fan_at, fan_sound(n, RATE, rng)))
    vents = _vents(size, layout) if sim != "pra" else []
    for at in vents:
        sources.append((at, fan_sound(n, RATE, rng)))
    n_steady = 1 + len(vents)
    impulses: list[tuple[str, float, float]] = []
    impulse_levels: list[float] = []
    for kind, onset, level_db in IMPULSES:
        onset += float(rng.uniform(-0.2, 0.2))
        s = impulse_sound(kind, RATE, rng)
        if kind == "door":
            at = np.array([0.05 + 0.3, layout.uniform(1.0, size[1] - 1.0), 1.0])
        elif kind == "chair":
            at = _place(centre, rng.uniform(-180, 180), rng.uniform(1.0, 2.0), 0.4, size)
        elif kind == "typing":
            at = _place(centre, rng.uniform(-180, 180), rng.uniform(0.6, 1.0), 0.8, size)
        else:
            at = _place(centre, rng.uniform(-180, 180), rng.uniform(1.5, 2.5), 1.2, size)
        if linear:
            at[1] = max(at[1], 0.8)
            if not 0.0 < at[0] < size[0]:  # a place behind the array, folded in front: kept inside the room
                at[0] = min(max(at[0], 0.4), size[0] - 0.4)
        x = np.zeros(n)
        i = int(onset * RATE)
        x[i : i + len(s)] = s
        sources.append((at, x))
        impulses.append((kind, onset, onset + len(s) / RATE + 0.25))
        impulse_levels.append(level_db)

    wet = _render(sim, size, rt60_s, mics, sources, n, rng)
    speech = sum(wet[:n_talk])
    active = np.zeros(n, bool)
    for _, spans in turns:
        for a, b in spans:
            active[int(a * RATE) : int(b * RATE)] = True
    p_speech = float(np.mean(np.asarray(speech)[active] ** 2))
    gain = 10 ** (SPEECH_DBFS / 20) / math.sqrt(p_speech)
    fan = wet[n_talk] / math.sqrt(float(np.mean(wet[n_talk] ** 2)))
    bumps = np.zeros((n, len(mics)))
    for (_, a, b), y, level_db in zip(impulses, wet[n_talk + n_steady :], impulse_levels, strict=True):
        seg = y[int(a * RATE) : int(b * RATE)]
        bumps += y * math.sqrt(p_speech * 10 ** (level_db / 10) / float(np.mean(seg**2)))
    if vents:  # the hold-out: the vents' sound in the room instead of an ideal diffuse field
        diffuse = _unit_sum(wet[n_talk + 1 : n_talk + n_steady])
    else:
        diffuse = diffuse_noise(mics, n, RATE, rng).astype(np.float64)
    sensor = rng.standard_normal((n, len(mics))) * 10 ** (SENSOR_NOISE_DBFS / 20)
    out: dict[float, Recording] = {}
    for snr in snrs:
        noise_power = p_speech / 10 ** (snr / 10)
        mix = (speech + bumps + math.sqrt(noise_power / 2) * (fan + diffuse)) * gain + sensor
        samples = np.clip(mix, -1.0, 1.0).astype(np.float32)
        out[snr] = Recording(
            Cell(rt60_s, snr, array, seed, sim),
            samples,
            [tuple(map(float, p)) for p in pos],  # type: ignore[misc]
            turns,
            impulses,
            silences,
        )
    return out


def _write_render(path: Path, samples: npt.NDArray[np.float32], meta: Any) -> None:
    """Cache a render: its samples as 16-bit PCM and ``meta`` as JSON, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
    buf = io.BytesIO()
    np.savez_compressed(buf, pcm=pcm, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    write_atomic(path, buf.getvalue())


def _read_render(path: Path) -> tuple[npt.NDArray[np.float32], Any] | None:
    """A render :func:`_write_render` cached (samples as float32 in [-1, 1], meta), or None."""
    try:
        with np.load(path) as z:
            return z["pcm"].astype(np.float32) / 32767.0, json.loads(z["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError):
        return None


def _save(rec: Recording, path: Path) -> None:
    meta = {"turns": rec.turns, "impulses": rec.impulses, "silences": rec.silences, "positions": rec.positions}
    _write_render(path, rec.samples, meta)


def _load(cell: Cell, path: Path) -> Recording | None:
    cached = _read_render(path)
    if cached is None:
        return None
    samples, meta = cached
    return Recording(
        cell,
        samples,
        [tuple(p) for p in meta["positions"]],
        [(float(a), [(float(x), float(y)) for x, y in spans]) for a, spans in meta["turns"]],
        [(str(k), float(a), float(b)) for k, a, b in meta["impulses"]],
        [(float(a), float(b)) for a, b in meta["silences"]],
    )


def at_gain(samples: npt.NDArray[np.float32], gain_db: float) -> npt.NDArray[np.float32]:
    """``samples`` as the array would deliver them with its gain ``gain_db`` higher (clipped at full scale
    like a converter). The grid's speech is at :data:`SPEECH_DBFS`; a real array's level depends on its
    gain, the talker's distance and voice."""
    if gain_db == 0.0:
        return samples
    out: npt.NDArray[np.float32] = np.clip(samples * np.float32(10.0 ** (gain_db / 20.0)), -1.0, 1.0).astype(np.float32)
    return out


def recordings(cells: Sequence[Cell], cache: Path | None = None, gain_db: float = 0.0) -> Iterable[Recording]:
    """The recordings of ``cells``, from the cache or rendered (one render per room, array and seed,
    mixed at every SNR of the cells that need it) and cached; at the array's gain ``gain_db`` above the
    render's (:func:`at_gain`)."""
    root = cache_dir() if cache is None else cache
    for cell in cells:
        path = root / f"{cell.key()}.npz"
        rec = _load(cell, path) if path.is_file() else None
        if rec is None:
            room = (cell.rt60_s, cell.array, cell.seed, cell.sim)
            snrs = sorted({c.snr_db for c in cells if (c.rt60_s, c.array, c.seed, c.sim) == room})
            for snr, r in render_group(cell.rt60_s, cell.array, cell.seed, snrs, sim=cell.sim).items():
                _save(r, root / f"{r.cell.key()}.npz")
                if snr == cell.snr_db:
                    rec = r
        assert rec is not None
        yield rec if gain_db == 0.0 else replace(rec, samples=at_gain(rec.samples, gain_db))


# ---------------------------------------------------------------------------------------------------------
# the guided calibration's captures

CALIBRATED = LINEAR | WALL  # arrays under the camera, which an installer calibrates against the picture
CAL_LEAD_S = 1.0  # noise before each capture's talker (the listener learns the floor)
CAL_TALK_S = 4.0  # each calibration talker talks this long
CAL_TAIL_S = 0.5


@dataclass
class CalibrationTake:
    """One point of the guided calibration (:mod:`appliance.calibration`) in a cell's room: one person talks
    alone for :data:`CAL_TALK_S` (after :data:`CAL_LEAD_S` of the room's noise); ``camera_deg`` is where the
    camera sees that person."""

    name: str  # "left", "centre" or "right"
    camera_deg: float
    samples: npt.NDArray[np.float32]  # (n, M)


def _calibration_key(cell: Cell) -> str:
    fields: list[Any] = ["calibration", RENDER_VERSION, RATE, cell.rt60_s, cell.snr_db, cell.array]
    fields += [ARRAYS[cell.array], cell.seed]
    if cell.sim != "pra":
        fields.append(cell.sim)
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:20]


def render_calibration(
    rt60_s: float, array: str, seed: int, snrs: Sequence[float], sim: str = "pra"
) -> dict[float, list[CalibrationTake]]:
    """The calibration's three captures in the room of ``(rt60_s, array, seed)`` (the room, array and noise
    level of :func:`render_group`, not its talkers), mixed at every SNR of ``snrs``.

    The people at the table's left and right ends sit 45-65 deg off the camera's axis and the one in the
    middle within 10 deg of it, 1.5-3 m away (drawn from the seed, apart from the meeting's talkers): the
    installer's prompts. Each talks an espeak-ng sentence in the room's diffuse noise (no fan, no impulse:
    a calibration is taken in a quiet moment; a noisy one is refused on the panel; in the hold-out rooms, the
    vents' sound)."""
    from drivers.simroom.audio import diffuse_noise

    _check_simulator(sim)
    layout = _layout(seed, sim)
    size, centre, mics = _room(layout, array, sim)
    draw = np.random.default_rng([seed, 7919])  # the same people for every RT60 and SNR
    places = (("left", -draw.uniform(45, 65)), ("centre", draw.uniform(-10, 10)), ("right", draw.uniform(45, 65)))
    rng = np.random.default_rng([seed, int(rt60_s * 1000), _ARRAY_SEED[array], 7919])
    lead, talk = int(CAL_LEAD_S * RATE), int(CAL_TALK_S * RATE)
    n = lead + talk + int(CAL_TAIL_S * RATE)
    sources: list[tuple[np.ndarray, np.ndarray]] = []
    mic_centre = mics.mean(axis=0)
    azimuths: list[float] = []
    for k, (_, az) in enumerate(places):
        p = _place(centre, az, draw.uniform(1.5, 3.0), draw.uniform(1.1, 1.3), size)
        u = _speech(1 + k, seed + 3, RATE, VOICES_OF[sim])[:talk]
        x = np.zeros(n)
        x[lead : lead + len(u)] = u
        sources.append((p, x))
        azimuths.append(_azimuth(mic_centre, p))
    if sim == "pra":
        wet = _render(sim, size, rt60_s, mics, sources, n, rng)
        noises = [diffuse_noise(mics, n, RATE, rng).astype(np.float64) for _ in places]
    else:  # each capture with its own stretch of the vents' sound
        vents = [(at, fan_sound(3 * n, RATE, rng)) for at in _vents(size, layout)]
        padded = [(p, np.concatenate([x, np.zeros(2 * n)])) for p, x in sources]
        wet_all = _render(sim, size, rt60_s, mics, padded + vents, 3 * n, rng)
        wet = [y[:n] for y in wet_all[: len(places)]]
        room_noise = _unit_sum(wet_all[len(places) :])  # (scaled to each capture's SNR below)
        noises = [room_noise[k * n : (k + 1) * n] for k in range(len(places))]
    sensors = [rng.standard_normal((n, len(mics))) * 10 ** (SENSOR_NOISE_DBFS / 20) for _ in places]
    out: dict[float, list[CalibrationTake]] = {}
    for snr in snrs:
        takes = []
        for (name, _), az, y, noise, sensor in zip(places, azimuths, wet, noises, sensors, strict=True):
            p_speech = float(np.mean(y[lead : lead + talk] ** 2))
            gain = 10 ** (SPEECH_DBFS / 20) / math.sqrt(p_speech)
            noise_power = p_speech / 10 ** (snr / 10)
            mix = (y + noise * math.sqrt(noise_power / float(np.mean(noise**2)))) * gain + sensor
            takes.append(CalibrationTake(name, az, np.clip(mix, -1.0, 1.0).astype(np.float32)))
        out[snr] = takes
    return out


def calibration_takes(cell: Cell, cache: Path | None = None) -> list[CalibrationTake]:
    """The calibration's captures in ``cell``'s room, from the cache or rendered (at ``cell``'s SNR; every
    SNR of the grid is mixed and cached from the same render)."""
    root = cache_dir() if cache is None else cache

    def path(snr: float) -> Path:
        return root / f"{_calibration_key(Cell(cell.rt60_s, snr, cell.array, cell.seed, cell.sim))}.npz"

    cached = _read_render(path(cell.snr_db))
    if cached is None:
        snrs = sorted({*SNRS, cell.snr_db})
        for snr, takes in render_calibration(cell.rt60_s, cell.array, cell.seed, snrs, cell.sim).items():
            _write_render(path(snr), np.stack([t.samples for t in takes]), [(t.name, t.camera_deg) for t in takes])
        cached = _read_render(path(cell.snr_db))
        assert cached is not None
    pcm, meta = cached
    return [CalibrationTake(str(name), float(az), pcm[k]) for k, (name, az) in enumerate(meta)]


# ---------------------------------------------------------------------------------------------------------
# evaluation


class HearingLike(Protocol):
    """What :func:`evaluate` needs of an estimator: chunks in, one Doa per analysis block out."""

    def feed(self, samples: npt.ArrayLike, t0: float) -> list[Doa]: ...


EstimatorFactory = Callable[[MicArraySection], HearingLike]


class Mounted:
    """An estimator factory that knows how each cell's array is mounted: ``make(mic, full_circle,
    max_azimuth_deg)``. Called with a mic alone it searches all around a planar array (a linear one: its front
    half); :meth:`for_cell` gives the factory for a cell, which hears an array on the front wall
    (:data:`WALL`) in front of the wall only, as its installer sets ``[tracker] full_circle = false`` (nobody
    talks from inside the wall: what comes from there is the wall's reflection), and an array under the camera
    (:data:`CALIBRATED`) within :data:`CAMERA_FIELD_DEG` of its axis (``[tracker] max_azimuth_deg``: nobody
    further out can be framed)."""

    def __init__(self, make: Callable[[MicArraySection, bool, float], HearingLike]) -> None:
        self.make = make

    def __call__(self, mic: MicArraySection) -> HearingLike:
        return self.make(mic, True, 90.0)

    def for_cell(self, cell: Cell) -> EstimatorFactory:
        full_circle = cell.array not in WALL
        field_deg = CAMERA_FIELD_DEG if cell.array in CALIBRATED else 90.0
        return lambda mic: self.make(mic, full_circle, field_deg)


def mounted(factory: EstimatorFactory, cell: Cell) -> EstimatorFactory:
    """``factory`` for ``cell``'s array, mounted as the cell's array is (a :class:`Mounted` factory's
    :meth:`~Mounted.for_cell`; any other factory as it is)."""
    return factory.for_cell(cell) if isinstance(factory, Mounted) else factory


def estimator(factory: EstimatorFactory, rec: Recording) -> HearingLike:
    """A fresh estimator from ``factory`` for ``rec``'s array, mounted as the cell's array is."""
    return mounted(factory, rec.cell)(rec.mic())


@dataclass
class Counts:
    """Raw tallies of one estimator on some recordings; summed over seeds, turned into metrics."""

    errors: list[float] = field(default_factory=list)
    speech_blocks: int = 0
    vad_speech: int = 0
    silence_blocks: int = 0
    silence_flagged: int = 0
    noise_blocks: int = 0
    noise_flagged: int = 0
    impulse_events: int = 0
    impulses_flagged: int = 0
    cpu_s: float = 0.0
    audio_s: float = 0.0
    impulse_kinds: dict[str, list[int]] = field(default_factory=dict)  # kind -> [flagged, events]

    def add(self, o: Counts) -> None:
        self.errors += o.errors
        for kind, (flagged, events) in o.impulse_kinds.items():
            mine = self.impulse_kinds.setdefault(kind, [0, 0])
            mine[0] += flagged
            mine[1] += events
        for name in (
            "speech_blocks",
            "vad_speech",
            "silence_blocks",
            "silence_flagged",
            "noise_blocks",
            "noise_flagged",
            "impulse_events",
            "impulses_flagged",
            "cpu_s",
            "audio_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(o, name))


@dataclass(frozen=True)
class CellMetrics:
    """The figures of one estimator on one cell (all its seeds)."""

    rt60_s: float
    snr_db: float
    array: str
    mae_deg: float  # NaN when no speech block got an azimuth
    within10: float
    recall: float
    vad_recall: float
    fa_silence: float
    fa_noise: float
    impulses: float
    cpu_per_s: float
    impulse_kinds: tuple[tuple[str, int, int], ...] = ()  # (kind, events reported as speech, events)

    @property
    def name(self) -> str:
        return f"rt60 {self.rt60_s:.1f} snr {self.snr_db:g} {self.array}"

    @staticmethod
    def of(rt60_s: float, snr_db: float, array: str, c: Counts) -> CellMetrics:
        e = np.asarray(c.errors)
        return CellMetrics(
            rt60_s,
            snr_db,
            array,
            mae_deg=float(e.mean()) if e.size else math.nan,
            within10=float(np.mean(e <= 10.0)) if e.size else math.nan,
            recall=e.size / max(c.speech_blocks, 1),
            vad_recall=c.vad_speech / max(c.speech_blocks, 1),
            fa_silence=c.silence_flagged / max(c.silence_blocks, 1),
            fa_noise=c.noise_flagged / max(c.noise_blocks, 1),
            impulses=c.impulses_flagged / max(c.impulse_events, 1),
            cpu_per_s=c.cpu_s / max(c.audio_s, 1e-9),
            impulse_kinds=tuple((k, f, n) for k, (f, n) in sorted(c.impulse_kinds.items())),
        )


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def run(factory: EstimatorFactory, rec: Recording, chunk: int = 512) -> tuple[list[Doa], float]:
    """Feed a recording to a fresh estimator in ``chunk``-sample pieces (as a driver would); returns its
    Doa messages and the CPU seconds it took (process time, all threads)."""
    est = estimator(factory, rec)
    out: list[Doa] = []
    cpu = 0.0
    x = rec.samples
    for start in range(0, x.shape[0], chunk):
        piece = x[start : start + chunk]
        t = time.process_time()
        out += est.feed(piece, start / RATE)
        cpu += time.process_time() - t
    return out, cpu


def _talker_at(rec: Recording, t: float) -> float | None:
    """The azimuth of the talker speaking at ``t`` (a block's middle) in ``rec``, or None: not speech, or within
    ``EDGE_S`` of a speech interval's edge (counted neither way)."""
    talker: float | None = None
    for az, spans in rec.turns:
        if any(a + EDGE_S <= t < b - EDGE_S for a, b in spans):
            talker = az
    return talker


def score(rec: Recording, doas: Sequence[Doa], cpu_s: float = 0.0) -> Counts:
    """Tally ``doas`` (one estimator's output over ``rec``) against the recording's truth."""
    c = Counts(cpu_s=cpu_s, audio_s=rec.duration_s)
    times = np.array([d.t - LABEL_LAG_S for d in doas])
    flagged_at = [d.speech for d in doas]
    for i, d in enumerate(doas):
        t = float(times[i])
        talker = _talker_at(rec, t)
        if talker is not None:
            c.speech_blocks += 1
            c.vad_speech += bool(d.speech)
            if d.azimuth_deg is not None:
                c.errors.append(abs(_wrap(d.azimuth_deg - talker)))
        elif any(a <= t < b for a, b in rec.silences):
            c.silence_blocks += 1
            c.silence_flagged += bool(d.speech)
        elif rec.noise_span[0] <= t < rec.noise_span[1]:
            c.noise_blocks += 1
            c.noise_flagged += bool(d.speech)
    for kind, a, b in rec.impulses:
        flagged = any(f for t, f in zip(times, flagged_at, strict=True) if a <= t < b)
        c.impulse_events += 1
        c.impulses_flagged += flagged
        tally = c.impulse_kinds.setdefault(kind, [0, 0])
        tally[0] += flagged
        tally[1] += 1
    return c


def grid(quick: bool = False) -> list[Cell]:
    """The cells of the full grid, or of the quick subset (three cells, one seed: two arrays on the table, the
    linear one under the camera)."""
    if quick:
        return [Cell(0.4, 10.0, "respeaker4", 0), Cell(0.8, 5.0, "uma8", 0), Cell(0.6, 10.0, "linear4", 0)]
    # seed-major, so that a run cut short has seen every cell
    return [Cell(rt, snr, arr, seed) for seed in SEEDS for arr in ARRAYS for rt in RT60S for snr in SNRS]


def evaluate_many(
    factories: dict[str, AnyFactory],
    cells: Sequence[Cell],
    cache: Path | None = None,
    progress: Callable[[Cell, str, Counts], None] | None = None,
    gain_db: float = 0.0,
) -> dict[str, list[CellMetrics]]:
    """Every estimator of ``factories`` on the same recordings (at the arrays' gain ``gain_db`` above the
    renders', :func:`at_gain`): name -> per-cell metrics (seeds pooled). ``progress(cell, estimator,
    counts)`` is called after each estimator on each recording."""
    totals: dict[str, dict[tuple[float, float, str], Counts]] = {name: {} for name in factories}
    for rec in recordings(cells, cache, gain_db):
        key = (rec.cell.rt60_s, rec.cell.snr_db, rec.cell.array)
        for name, any_factory in factories.items():
            factory = any_factory.for_recording(rec) if isinstance(any_factory, CalibratedListener) else any_factory
            if factory is None:
                continue
            doas, cpu = run(factory, rec)
            counts = score(rec, doas, cpu)
            totals[name].setdefault(key, Counts()).add(counts)
            if progress is not None:
                progress(rec.cell, name, counts)
    return {name: [CellMetrics.of(*k, c) for k, c in per.items()] for name, per in totals.items() if per}


def pooled(lines: Iterable[str]) -> dict[str, list[CellMetrics]]:
    """Per-cell metrics from the JSON lines ``python -m appliance.bench.hearing --log`` writes (a run
    cut short still gives the cells it reached)."""
    totals: dict[str, dict[tuple[float, float, str], Counts]] = {}
    for line in lines:
        r = json.loads(line)
        c = Counts(**r["counts"])
        totals.setdefault(r["estimator"], {}).setdefault((r["rt60_s"], r["snr_db"], r["array"]), Counts()).add(c)
    return {name: [CellMetrics.of(*k, c) for k, c in per.items()] for name, per in totals.items()}


def evaluate(
    factory: EstimatorFactory, cells: Sequence[Cell] | None = None, quick: bool = False, cache: Path | None = None
) -> list[CellMetrics]:
    """One estimator over the grid (or ``cells``): per-cell metrics, seeds pooled."""
    return evaluate_many({"x": factory}, grid(quick) if cells is None else cells, cache)["x"]


# ---------------------------------------------------------------------------------------------------------
# the estimators measured here


def hearing_factory(cfg: DoaConfig | None = None) -> EstimatorFactory:
    """Today's :class:`Hearing` with ``cfg`` (default: energy VAD, SRP-PHAT, the confidence gate)."""
    c = cfg or DoaConfig(vad="energy")
    return lambda mic: Hearing(mic, c)


class PraHearing(Hearing):
    """A peer: the energy VAD of :class:`Hearing`, then one of pyroomacoustics' DOA algorithms on every
    speech block (the same sub-frames as our SRP-PHAT), an azimuth on every speech block."""

    def __init__(
        self, mic: MicArraySection, cfg: DoaConfig, algorithm: str, full_circle: bool = True, field_deg: float = 90.0
    ) -> None:
        import pyroomacoustics as pra

        super().__init__(mic, cfg)
        pos = np.asarray(mic.positions, np.float64)
        planar = np.ptp(pos[:, 2]) > 1e-3 and full_circle
        # a 2 deg grid: half the cost of 1 deg at a negligible loss (<= 0.5 deg) next to their errors here
        limit = min(90.0, field_deg)  # the front half's search, within field_deg of the axis
        grid_deg = np.arange(-178.0, 181.0, 2.0) if planar else np.arange(-limit, limit + 1.0, 2.0)
        # their azimuth is counter-clockwise from +x in the horizontal plane; ours from +z towards +x
        self._algo: Any = pra.doa.algorithms[algorithm](
            np.stack([pos[:, 0], pos[:, 2]]),
            self.sample_rate,
            self.srp.frame_len,
            c=SPEED_OF_SOUND,
            num_src=1,
            azimuth=np.radians(90.0 - grid_deg),
        )
        self._window = np.hanning(self.srp.frame_len + 2)[1:-1]

    def _analyse(self, block: npt.NDArray[np.float32], t_end: float) -> Doa:
        speech, level = self.vad.update(block)
        azimuth: float | None = None
        if speech:
            n = self.srp.frame_len
            frames = np.stack([block[s : s + n] for s in self.srp._starts])
            spec = np.fft.rfft(frames * self._window[None, :, None], axis=1).transpose(2, 1, 0)
            self._algo.locate_sources(spec, freq_range=[self.cfg.fmin_hz, self.cfg.fmax_hz])
            azimuth = _wrap(90.0 - math.degrees(float(self._algo.azimuth_recon[0])))
        return Doa(t=t_end, azimuth_deg=azimuth, speech=speech, level_db=level, confidence=1.0 if speech else 0.0)


def pra_factory(algorithm: str, cfg: DoaConfig | None = None) -> Mounted:
    c = cfg or DoaConfig(vad="energy")
    return Mounted(lambda mic, full_circle, field_deg: PraHearing(mic, c, algorithm, full_circle, field_deg))


def listener_factory(
    vad: Literal["energy", "silero"] = "silero",
    vad_rate: int | None = None,
    compiled: bool = True,
    adaptive_beam: bool = True,
) -> Mounted:
    """The box's default hearing (``[doa] estimator = "tracker"``): soft evidence, the source tracker, the
    Silero voice gate (or the energy gate, a peer); ``vad_rate`` the rate Silero hears (default: the
    config's); ``compiled=False``: the evidence's numpy path (the same estimates, more CPU);
    ``adaptive_beam=False``: Silero hears the delay-and-sum beam only, not MVDR."""
    from appliance.config import TrackerConfig
    from appliance.perception.listening import ListeningDoas

    doa = DoaConfig(vad=vad) if vad_rate is None else DoaConfig(vad=vad, vad_rate=vad_rate)
    return Mounted(
        lambda mic, full_circle, field_deg: ListeningDoas(
            mic, TrackerConfig(full_circle=full_circle, max_azimuth_deg=field_deg), doa, compiled, adaptive_beam
        )
    )


class _Mapped:
    """An estimator that hears the array ``gain_db`` louder and whose azimuths go through a calibration, as
    the live box's hearing (:func:`appliance.perception.hearing.make_ears`) and :mod:`appliance.step` do."""

    def __init__(self, inner: HearingLike, cal: Calibration | None, gain_db: float = 0.0) -> None:
        self.inner, self.cal, self.gain_db = inner, cal, gain_db

    def feed(self, samples: npt.ArrayLike, t0: float) -> list[Doa]:
        out = self.inner.feed(louder(samples, self.gain_db), t0)
        cal = self.cal
        if cal is None:
            return out
        return [d if d.azimuth_deg is None else replace(d, azimuth_deg=cal.to_camera(d.azimuth_deg)) for d in out]


class CalibratedListener:
    """A per-recording estimator: ``inner`` after the guided calibration in the recording's room.

    For each of the cell's :func:`calibration_takes` a fresh ``inner`` hears the capture, and a
    :class:`appliance.calibration.PointCollector` takes its DOA blocks (from the talker's prompt on) and the
    camera's azimuth of that person, as the panel's calibration does; :func:`appliance.calibration.fit`
    fits the points it accepts and the meeting's azimuths go through the fit. A refused point or fit is left
    out (:attr:`refusals` says why); without a fit the azimuths go through unchanged. The points' speech levels
    set the array's gain (:func:`appliance.calibration.speech_gain_db`), which the meeting is heard with, as
    the live box saves ``[calibration] gain_db``. Only the arrays under the camera (:data:`CALIBRATED`) are
    calibrated, the others not measured; ``map_azimuths=False`` with ``arrays=ARRAYS``: the calibration's gain
    alone, on every array (``listener+gain``)."""

    def __init__(
        self,
        inner: EstimatorFactory,
        cache: Path | None = None,
        gain_db: float = 0.0,
        map_azimuths: bool = True,
        arrays: Iterable[str] = CALIBRATED,
    ) -> None:
        self.inner, self.cache = inner, cache
        self.gain_db = gain_db  # the array's gain above the renders' while the installer calibrates
        self.map_azimuths, self.arrays = map_azimuths, frozenset(arrays)
        self.refusals: list[str] = []
        self.fits: dict[Cell, str] = {}
        self.gains: dict[Cell, float] = {}  # the gain each recording's calibration set (dB)

    def calibrate(self, rec: Recording) -> Calibration | None:
        """The map the calibration in ``rec``'s room fits (None when refused); its gain goes to :attr:`gains`."""
        from appliance.calibration import CalibrationRefused, PointCollector, fit, speech_gain_db

        points: list[tuple[float, float]] = []
        levels: list[float | None] = []
        for take in calibration_takes(rec.cell, self.cache):
            est = estimator(self.inner, rec)
            collector = PointCollector(take.name)
            x = at_gain(take.samples, self.gain_db)
            for start in range(0, x.shape[0], 512):
                doas = est.feed(x[start : start + 512], start / RATE)
                collector.add_doas(d for d in doas if d.t > CAL_LEAD_S)
            collector.add_faces([take.camera_deg])
            try:
                point = collector.point()
            except CalibrationRefused as e:
                self.refusals.append(f"{rec.cell.name} seed {rec.cell.seed} {take.name}: {e}")
                continue
            points.append((point.doa_deg, point.camera_deg))
            levels.append(point.level_db)
        self.gains[rec.cell] = speech_gain_db(levels)
        try:
            cal = fit(points) if points else None
        except CalibrationRefused as e:
            self.refusals.append(f"{rec.cell.name} seed {rec.cell.seed} fit: {e}")
            cal = None
        self.fits[rec.cell] = cal.describe() if cal is not None else "none"
        return cal

    def for_recording(self, rec: Recording) -> EstimatorFactory | None:
        """The estimator for ``rec`` (calibrated in its room), or None for an array it does not calibrate."""
        if rec.cell.array not in self.arrays:
            return None
        cal = self.calibrate(rec)
        gain = self.gains[rec.cell]
        inner = mounted(self.inner, rec.cell)
        return lambda mic: _Mapped(inner(mic), cal if self.map_azimuths else None, gain)


AnyFactory = EstimatorFactory | CalibratedListener


def _other_vad_rate() -> int:
    """Silero's rate that is not the default ([doa] vad_rate), measured as a peer."""
    return 24000 - int(DoaConfig().vad_rate)


STAGES = (  # the listener's stages whose CPU time cost_split measures: (label, attribute path of a method)
    ("voice gate (Silero)", "silero.hear"),
    ("voice gate (steering)", "_steered"),
    ("voice gate (beam learning)", "beam.learn"),
    ("evidence (transform)", "srp.prepare"),
    ("evidence (SRP)", "srp.evidence"),
    ("evidence (floor only)", "srp.skip"),
    ("tracker", "tracker.update"),
)


def cost_split(
    recs: Iterable[Recording], factory: EstimatorFactory | None = None, tally: dict[str, int] | None = None
) -> dict[str, float]:
    """Where the box's default listener spends its CPU on ``recs``: thread CPU seconds per audio second of
    each of :data:`STAGES`, ``other`` (the energy gate, the buffers, the messages) and ``total`` (process
    CPU, as :func:`run` counts it). Each stage's method is wrapped on the listener instance only. ``tally``,
    if given, gets the hops Silero heard (``heard``) and rested on (``skipped``, the quiet ones)."""
    factory = factory or listener_factory()
    spent = {label: 0.0 for label, _ in STAGES}
    calls = {label: 0 for label, _ in STAGES}
    total = audio = 0.0
    skips = [0]
    for rec in recs:
        est: Any = estimator(factory, rec)
        listener = getattr(est, "listener", est)
        for label, path in STAGES:
            owner_path, _, name = path.rpartition(".")
            owner = listener
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            if owner is None:
                continue
            method = getattr(owner, name)

            def timed(*args: Any, _method: Any = method, _label: str = label, **kwargs: Any) -> Any:
                t = time.thread_time()
                try:
                    return _method(*args, **kwargs)
                finally:
                    spent[_label] += time.thread_time() - t
                    calls[_label] += 1

            setattr(owner, name, timed)
        silero = getattr(listener, "silero", None)
        if silero is not None:
            skip = silero.skip

            def counted(_skip: Any = skip) -> Any:
                skips[0] += 1
                return _skip()

            silero.skip = counted
        x = rec.samples
        for start in range(0, x.shape[0], 512):
            t = time.process_time()
            est.feed(x[start : start + 512], start / RATE)
            total += time.process_time() - t
        audio += rec.duration_s
    out = {label: v / max(audio, 1e-9) for label, v in spent.items()}
    out["other"] = max(0.0, total / max(audio, 1e-9) - sum(out.values()))
    out["total"] = total / max(audio, 1e-9)
    if tally is not None:
        tally["heard"] = tally.get("heard", 0) + calls[STAGES[0][0]]
        tally["skipped"] = tally.get("skipped", 0) + skips[0]
    return out


LOSS_CAUSES = ("voice gate", "noise", "above", "farend", "unknown", "talker", "no source near")
LOSS_NEAR_DEG = 15.0  # a tracked source this close to the talker is the one the speech went to


def losses(rec: Recording, factory: EstimatorFactory | None = None) -> dict[str, int]:
    """Why the box's default listener (or ``factory``'s) gave no azimuth in speech blocks of ``rec``, counted
    as :func:`score` counts speech blocks: ``speech`` blocks, ``reported``, and each unreported one by its
    cause (:data:`LOSS_CAUSES`): the ``voice gate`` passed nothing; else the kind of the nearest tracked source
    within :data:`LOSS_NEAR_DEG` of the talker (``noise``: taken for a fan; ``above``: for a ceiling
    loudspeaker; ``farend``; ``unknown``: not classed yet; ``talker``: a talker not reported); else ``no source
    near`` (a new talker's source not confirmed yet)."""
    est: Any = estimator(factory or listener_factory(), rec)
    listener = getattr(est, "listener", est)
    out = dict.fromkeys(("speech", "reported", *LOSS_CAUSES), 0)
    x = rec.samples
    for start in range(0, x.shape[0], 512):
        for h in listener.feed(x[start : start + 512], start / RATE):
            talker = _talker_at(rec, h.t - LABEL_LAG_S)
            if talker is None:
                continue
            out["speech"] += 1
            if h.azimuth_deg is not None:
                out["reported"] += 1
            elif not h.speech:
                out["voice gate"] += 1
            else:
                near = [s for s in h.sources if abs(_wrap(s.azimuth_deg - talker)) <= LOSS_NEAR_DEG]
                if near:
                    nearest = min(near, key=lambda s: abs(_wrap(s.azimuth_deg - talker)))
                    out[nearest.kind] += 1
                else:
                    out["no source near"] += 1
    return out


def peers() -> dict[str, AnyFactory]:
    """The box's tracked listener (Silero gate; and with the energy gate, Silero at the other rate, the
    evidence's numpy path, Silero on the delay-and-sum beam, after the guided calibration, with the
    calibration's gain alone), the foundation's Hearing (energy VAD; and with the Silero VAD),
    pyroomacoustics SRP and NormMUSIC (both behind the energy VAD)."""
    return {
        "listener": listener_factory(),
        f"listener+vad{_other_vad_rate() // 1000}k": listener_factory(vad_rate=_other_vad_rate()),
        "listener+energy": listener_factory("energy"),
        "listener+numpy": listener_factory(compiled=False),  # the evidence's numpy path: what the kernels save
        "listener+ds": listener_factory(adaptive_beam=False),  # Silero on the delay-and-sum beam, not MVDR
        "listener+calibration": CalibratedListener(listener_factory()),
        "listener+gain": CalibratedListener(listener_factory(), map_azimuths=False, arrays=ARRAYS),
        "hearing": hearing_factory(DoaConfig(vad="energy")),
        "hearing+silero": hearing_factory(DoaConfig(vad="silero")),
        "pra SRP": pra_factory("SRP"),
        "pra NormMUSIC": pra_factory("NormMUSIC"),
    }


# ---------------------------------------------------------------------------------------------------------
# rows and tables

METRICS: tuple[tuple[str, str, str, bool], ...] = (  # attribute, label, unit, higher is better
    ("mae_deg", "MAE", "deg", False),
    ("within10", "within 10 deg", "fraction", True),
    ("recall", "recall", "fraction", True),
    ("vad_recall", "VAD recall", "fraction", True),
    ("fa_silence", "false alarms, silence", "fraction", False),
    ("fa_noise", "false alarms, steady noise", "fraction", False),
    ("impulses", "impulses as speech", "fraction", False),
    ("cpu_per_s", "CPU", "s/s", False),
)


def _worst(cells: Sequence[CellMetrics], attr: str, higher_better: bool) -> CellMetrics | None:
    ok = [c for c in cells if math.isfinite(getattr(c, attr))]
    if not ok:
        return None
    return (min if higher_better else max)(ok, key=lambda c: getattr(c, attr))


def _kinds(cells: Iterable[CellMetrics]) -> dict[str, tuple[int, int]]:
    """Impulse events reported as speech, and events, by kind, over ``cells``."""
    out: dict[str, tuple[int, int]] = {}
    for c in cells:
        for kind, flagged, events in c.impulse_kinds:
            f, n = out.get(kind, (0, 0))
            out[kind] = (f + flagged, n + events)
    return out


def rows_of(results: dict[str, list[CellMetrics]]) -> list[Row]:
    """Per-cell rows, then the worst cell overall and among the moderate ones (RT60 <= 0.6 s, SNR >= 10)."""
    rows: list[Row] = []
    for name, cells in results.items():
        for c in cells:
            for attr, label, unit, _ in METRICS:
                rows.append((f"{name} {c.name}: {label}", float(getattr(c, attr)), unit))
    for name, cells in results.items():
        for kind, (flagged, events) in _kinds(cells).items():
            rows.append((f"{name} all cells: {kind}s reported as speech", flagged / max(events, 1), "fraction"))
        moderate = [c for c in cells if c.rt60_s <= 0.6 + 1e-9 and c.snr_db >= 10.0]
        for scope, subset in (("worst cell", cells), ("worst moderate cell", moderate)):
            for attr, label, unit, higher in METRICS:
                w = _worst(subset, attr, higher)
                if w is not None:
                    rows.append((f"{name} {scope}: {label} ({w.name})", float(getattr(w, attr)), unit))
    return rows


def table(results: dict[str, list[CellMetrics]]) -> str:
    """A markdown table: one line per cell and estimator."""
    head = (
        "| cell | estimator | MAE deg | <=10 deg | recall | VAD recall | FA silence | FA noise | impulses | CPU s/s |"
    )
    lines = [head, "|" + "---|" * 10]
    keyed: dict[str, dict[str, CellMetrics]] = {}
    for name, cells in results.items():
        for c in cells:
            keyed.setdefault(c.name, {})[name] = c
    order = sorted(
        keyed,
        key=lambda k: (
            next(iter(keyed[k].values())).array,
            next(iter(keyed[k].values())).rt60_s,
            -next(iter(keyed[k].values())).snr_db,
        ),
    )
    for cell_name in order:
        for name, c in keyed[cell_name].items():
            lines.append(
                f"| {cell_name} | {name} | {c.mae_deg:.1f} | {c.within10:.2f} | {c.recall:.2f} | "
                f"{c.vad_recall:.2f} | {c.fa_silence:.2f} | {c.fa_noise:.2f} | {c.impulses:.2f} | "
                f"{c.cpu_per_s:.4f} |"
            )
    return "\n".join(lines)


def summary(results: dict[str, list[CellMetrics]]) -> str:
    """A markdown table: each estimator's mean over the moderate cells (RT60 <= 0.6 s, SNR >= 10 dB) and
    over the hard ones, and how many cells meet the issue's targets (moderate: MAE <= 4 deg, >= 95 %
    within 10 deg, recall >= 0.8, false alarms <= 0.05, impulses <= 0.05; hard: recall >= 0.6 at MAE <= 8)."""
    lines = [
        "| estimator | cells | MAE deg | <=10 deg | recall | VAD recall | FA silence | FA noise | impulses "
        "| CPU s/s | cells meeting targets |",
        "|" + "---|" * 11,
    ]
    for name, cells in results.items():
        for scope in ("moderate", "hard"):
            sub = [c for c in cells if (c.rt60_s <= 0.6 + 1e-9 and c.snr_db >= 10.0) == (scope == "moderate")]
            if not sub:
                continue
            if scope == "moderate":
                ok = sum(
                    c.mae_deg <= 4
                    and c.within10 >= 0.95
                    and c.recall >= 0.8
                    and c.fa_silence <= 0.05
                    and c.fa_noise <= 0.05
                    and c.impulses <= 0.05
                    for c in sub
                )
            else:
                ok = sum(c.recall >= 0.6 and c.mae_deg <= 8 for c in sub)
            mean = {attr: float(np.nanmean([getattr(c, attr) for c in sub])) for attr, *_ in METRICS}
            lines.append(
                f"| {name} | {scope} ({len(sub)}) | {mean['mae_deg']:.1f} | {mean['within10']:.2f} | "
                f"{mean['recall']:.2f} | {mean['vad_recall']:.2f} | {mean['fa_silence']:.3f} | "
                f"{mean['fa_noise']:.3f} | {mean['impulses']:.2f} | {mean['cpu_per_s']:.4f} | {ok} |"
            )
    lines.append("\nImpulse events reported as speech, by kind (moderate cells; hard cells):\n")
    for name, cells in results.items():
        parts = []
        for moderate in (True, False):
            kinds = _kinds(c for c in cells if (c.rt60_s <= 0.6 + 1e-9 and c.snr_db >= 10.0) == moderate)
            parts.append(", ".join(f"{k} {f}/{n}" for k, (f, n) in kinds.items()) or "-")
        lines.append(f"- {name}: {parts[0]}; {parts[1]}")
    return "\n".join(lines)


def bench_hearing(quick: bool = False) -> list[Row]:
    """Rows for ``roombox bench hearing``: every estimator of :func:`peers` on the grid (or its quick subset)."""
    return rows_of(evaluate_many(peers(), grid(quick)))


def _main() -> None:
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="the hearing grid as a markdown table; per-recording JSON lines")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="*", help="only these seeds of the full grid")
    ap.add_argument("--only", nargs="*", help="only these estimators of peers() (default: all)")
    ap.add_argument("--arrays", nargs="*", choices=sorted(ARRAYS), help="only these arrays of the grid")
    ap.add_argument("--log", help="append one JSON line per recording and estimator to this file")
    ap.add_argument("--table", help="only print the table of the JSON lines in this file")
    ap.add_argument("--rt60", type=float, nargs="*", help="only these RT60s (s) of the grid")
    ap.add_argument("--snrs", type=float, nargs="*", help="only these SNRs (dB) of the grid")
    ap.add_argument(
        "--mic-gain-db",
        type=float,
        default=0.0,
        help="the arrays' gain above the renders' (speech at the mics then at -30 dBFS plus this; clipped)",
    )
    ap.add_argument(
        "--simulator",
        choices=SIMULATORS,
        default="pra",
        help="the grid's rooms (pra: pyroomacoustics, what the defaults were tuned on) or the hold-out rooms "
        "(habets: Habets' image-source generator, everyday room sizes, other voices, noise from vents)",
    )
    ap.add_argument(
        "--cost",
        action="store_true",
        help="where the listener's CPU goes, per array (no scores); with --only, each listener named, in turn",
    )
    ap.add_argument(
        "--losses",
        action="store_true",
        help="why the listener reported no azimuth in speech blocks, per array (the voice gate, the kind of the "
        "source near the talker, or none near)",
    )
    args = ap.parse_args()
    if args.table:
        res = pooled(Path(args.table).read_text().splitlines())
        print(summary(res) + "\n\n" + table(res))
        return
    cells = [
        replace(c, sim=args.simulator)
        for c in grid(args.quick)
        if (args.seeds is None or c.seed in args.seeds)
        and (not args.arrays or c.array in args.arrays)
        and (not args.rt60 or c.rt60_s in args.rt60)
        and (not args.snrs or c.snr_db in args.snrs)
    ]
    if args.cost:
        listeners = {k: f for k, f in peers().items() if k.startswith("listener") and callable(f)}
        names = args.only or ["listener"]
        if any(n not in listeners for n in names):
            ap.error(f"--cost --only: the listeners are {', '.join(listeners)}")
        labels = [label for label, _ in STAGES] + ["other", "total"]
        print(
            "| array | listener | " + " | ".join(labels) + " | hops Silero heard |\n|" + "---|" * (len(labels) + 3),
            flush=True,
        )
        for array in dict.fromkeys(c.array for c in cells):
            # the listeners in turn on each recording (the machine's load changes; each sees the same share)
            sums = {n: dict.fromkeys(labels, 0.0) for n in names}
            tallies: dict[str, dict[str, int]] = {n: {} for n in names}
            audio = dict.fromkeys(names, 0.0)
            for rec in recordings([c for c in cells if c.array == array]):
                for name in names:  # a name given twice is measured twice, in that order
                    split = cost_split([rec], listeners[name], tallies[name])
                    audio[name] += rec.duration_s
                    for k in labels:
                        sums[name][k] += split[k] * rec.duration_s
            for name in dict.fromkeys(names):
                heard = tallies[name].get("heard", 0) / max(sum(tallies[name].values()), 1)
                row = " | ".join(f"{sums[name][k] / max(audio[name], 1e-9):.4f}" for k in labels)
                print(f"| {array} | {name} | {row} | {heard:.2f} |", flush=True)
        return
    if args.losses:
        cols = ("speech", "reported", *LOSS_CAUSES)
        print("| array | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1), flush=True)
        for array in dict.fromkeys(c.array for c in cells):
            total = dict.fromkeys(cols, 0)
            for rec in recordings([c for c in cells if c.array == array]):
                for k, v in losses(rec).items():
                    total[k] += v
            print(f"| {array} | " + " | ".join(str(total[k]) for k in cols) + " |", flush=True)
        return
    log = open(args.log, "a") if args.log else None

    def progress(cell: Cell, name: str, counts: Counts) -> None:
        print(f"{cell.name} seed {cell.seed} {name}", file=sys.stderr, flush=True)
        if log is not None:
            line: dict[str, Any] = {
                "rt60_s": cell.rt60_s,
                "snr_db": cell.snr_db,
                "array": cell.array,
                "seed": cell.seed,
                "simulator": cell.sim,
                "estimator": name,
                "mic_gain_db": args.mic_gain_db,
            }
            f = chosen[name]
            if isinstance(f, CalibratedListener) and cell in f.gains:
                line["calibration_gain_db"] = f.gains[cell]  # the gain the calibration set in this room
            log.write(json.dumps({**line, "counts": asdict(counts)}) + "\n")
            log.flush()

    chosen = {k: f for k, f in peers().items() if not args.only or k in args.only}
    if args.only and len(chosen) != len(args.only):
        ap.error(f"--only: unknown estimator; the estimators are {', '.join(peers())}")
    for f in chosen.values():
        if isinstance(f, CalibratedListener):
            f.gain_db = args.mic_gain_db  # the installer calibrates at the array's gain
    res = evaluate_many(chosen, cells, progress=progress, gain_db=args.mic_gain_db)
    print(summary(res) + "\n\n" + table(res))


if __name__ == "__main__":
    _main()
