"""The simulated room's sound: each person's speech, reverberated by pyroomacoustics, at the mic array.

The room is a shoebox whose wall absorption gives the scenario's RT60 (Sabine). Every person is one
source at their mouth; the array sits at the camera plus the configured offsets. Diffuse noise with the
spatial coherence of an ideal diffuse field (sinc of distance) and a little sensor noise are added.
Everything is deterministic for a given scenario (seeded noise, cached speech).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.signal

from drivers.simroom.assets import arctic_clip, synthesize
from drivers.simroom.scenario import Person, Scenario, ScenarioError, Utterance

PEAK_DBFS = -6.0
SENSOR_NOISE_DBFS = -80.0
SPEED_OF_SOUND = 343.0
MAX_ISM_ORDER = 12
ACTIVITY_FRAME_S = 0.02
REFERENCE_PEAK_DBFS = -1.0
HABETS_LENGTH_RT60 = 0.6  # render_habets: the impulse responses' length, in RT60s


@dataclass(frozen=True)
class RenderedAudio:
    """The array's samples (float32, (n, channels)) and who speaks when (intervals in seconds, as heard at
    the array's centre). With a loudspeaker: ``reference`` is what was sent to it (float32 (n,),
    sample-aligned with ``samples``) and ``farend`` when it plays speech."""

    samples: np.ndarray
    sample_rate: int
    activity: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    reference: np.ndarray | None = None
    farend: list[tuple[float, float]] = field(default_factory=list)

    def talkers_at(self, t: float) -> list[str]:
        """Ids of the people speaking at time ``t`` (seconds)."""
        return [pid for pid, spans in self.activity.items() if any(a <= t < b for a, b in spans)]

    def farend_at(self, t: float) -> bool:
        """Whether the far end's speech is heard at time ``t`` (seconds)."""
        return any(a <= t < b for a, b in self.farend)


def _utterance(u: Utterance, rate: int, speech_root: Path | None, cache_dir: Path | None) -> np.ndarray:
    """One utterance's samples, brought to -20 dBFS RMS and then its gain."""
    if u.clip == "arctic":
        x = arctic_clip(rate, speech_root)
    else:
        assert u.text is not None
        x = synthesize(u.text, u.voice, rate, u.speed_wpm, cache_dir)
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
    out: np.ndarray = x * (10 ** ((-20.0 + u.gain_db) / 20) / rms)
    return out


def place_utterances(
    scn: Scenario,
    utterances: list[Utterance],
    speech_root: Path | None = None,
    cache_dir: Path | None = None,
    no_overlap: str | None = None,
) -> np.ndarray:
    """The utterances placed at their start times, float32 mono, ``duration_s`` long.

    With ``no_overlap`` (the utterances' key, e.g. ``loudspeaker.turns``), an utterance that starts before
    the previous one ends raises :class:`ScenarioError` naming both.
    """
    rate = scn.mic_array.sample_rate
    n = round(scn.duration_s * rate)
    out = np.zeros(n, np.float32)
    prev_end = -1.0
    for k, u in enumerate(utterances):
        x = _utterance(u, rate, speech_root, cache_dir)
        if no_overlap is not None and u.start_s < prev_end:
            raise ScenarioError(
                f"[{no_overlap}.{k}] starts at {u.start_s} s, before {no_overlap}.{k - 1} ends "
                f"({prev_end:.2f} s): they must not overlap"
            )
        prev_end = u.start_s + len(x) / rate
        i = round(u.start_s * rate)
        m = max(0, min(len(x), n - i))
        out[i : i + m] += x[:m]
    return out


def dry_speech(
    scn: Scenario, person: Person, speech_root: Path | None = None, cache_dir: Path | None = None
) -> np.ndarray:
    """The person's utterances placed at their start times, float32 mono, ``duration_s`` long.

    Each utterance is brought to the same RMS (-20 dBFS) before its gain, so voices are comparable.
    """
    return place_utterances(scn, person.utterances, speech_root, cache_dir)


def farend_track(scn: Scenario, speech_root: Path | None = None, cache_dir: Path | None = None) -> np.ndarray | None:
    """The far end's turns placed at their start times (float32 mono, ``duration_s`` long, each turn at
    -20 dBFS RMS plus its gain, as a person's utterances are); None without a loudspeaker."""
    if scn.loudspeaker is None:
        return None
    return place_utterances(scn, scn.loudspeaker.turns, speech_root, cache_dir, no_overlap="loudspeaker.turns")


def playback_reference(track: np.ndarray) -> np.ndarray:
    """What is sent to the loudspeaker: the far-end track, scaled down when needed so that its peak stays at
    or below ``REFERENCE_PEAK_DBFS`` (a linear gain: the room hears the track at the loudspeaker's level)."""
    peak, top = float(np.abs(track).max(initial=0.0)), 10 ** (REFERENCE_PEAK_DBFS / 20)
    out: np.ndarray = (track * (top / peak) if peak > top else track).astype(np.float32)
    return out


def speech_intervals(
    x: np.ndarray, rate: int, offset_s: float = 0.0, rel_db: float = -32.0, bridge_s: float = 0.12, min_s: float = 0.06
) -> list[tuple[float, float]]:
    """Where the dry signal ``x`` is speech: 20 ms frames within ``rel_db`` of its loudest frame.

    Gaps shorter than ``bridge_s`` (between syllables) are bridged; pauses longer count as silence.
    """
    hop = max(1, round(ACTIVITY_FRAME_S * rate))
    nf = len(x) // hop
    if nf == 0:
        return []
    e = np.mean(x[: nf * hop].astype(np.float64).reshape(nf, hop) ** 2, axis=1)
    if e.max() <= 0:
        return []
    on = 10 * np.log10(e / e.max() + 1e-20) > rel_db
    spans: list[tuple[float, float]] = []
    i = 0
    while i < nf:
        if on[i]:
            j = i
            while j < nf and on[j]:
                j += 1
            a, b = i * hop / rate + offset_s, j * hop / rate + offset_s
            if spans and a - spans[-1][1] < bridge_s:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))
            i = j
        else:
            i += 1
    return [(round(a, 3), round(b, 3)) for a, b in spans if b - a >= min_s]


def diffuse_noise(mics: np.ndarray, n: int, rate: int, rng: np.random.Generator, nfft: int = 512) -> np.ndarray:
    """Noise with the coherence of a spherically diffuse field, pink-ish (HVAC), unit RMS, (n, ch)."""
    ch = len(mics)
    white = rng.standard_normal((ch, n + nfft)).astype(np.float64)
    f, _, z = scipy.signal.stft(white, fs=rate, nperseg=nfft)
    d = np.linalg.norm(mics[:, None, :] - mics[None, :, :], axis=-1)
    gamma = np.sinc(2 * f[:, None, None] * d[None] / SPEED_OF_SOUND)  # np.sinc(x) = sin(pi x)/(pi x)
    w, v = np.linalg.eigh(gamma)
    mix = v * np.sqrt(np.clip(w, 0, None))[:, None, :]  # (freq, ch, ch): mix @ mix^T = gamma
    shape = 1.0 / np.sqrt(np.maximum(f, 60.0))
    shape[f < 30] = 0.0
    z = np.einsum("fij,jft->ift", mix, z) * shape[None, :, None]
    _, y = scipy.signal.istft(z, fs=rate, nperseg=nfft)
    y = y[:, :n].T
    unit: np.ndarray = y / (np.sqrt(np.mean(y**2)) + 1e-12)
    return unit.astype(np.float32)


def late_tail_rirs(
    rirs: list[np.ndarray],
    mics: np.ndarray,
    rate: int,
    rt60_s: float,
    direct_s: float,
    rng: np.random.Generator,
    mix_s: float = 0.05,
    fade_s: float = 0.04,
) -> np.ndarray:
    """Impulse responses of one source at every mic, (L, ch): image-source early part, then a seeded
    diffuse tail decaying at ``rt60_s``.

    The image method cannot reach the orders a real RT60 needs, so after the mixing time (``mix_s``
    after the direct sound) its output fades into exponentially decaying noise with the coherence of a
    diffuse field, scaled to the image-source energy at the crossover. Deterministic for ``rng``.
    """
    n = max(len(h) for h in rirs)
    length = max(n, round((direct_s + 1.2 * rt60_s) * rate))
    early = np.zeros((length, len(rirs)))
    for k, h in enumerate(rirs):
        early[: len(h), k] = h
    t = np.arange(length) / rate
    t0 = direct_s + mix_s
    w = np.clip((t - t0) / fade_s, 0.0, 1.0)
    w_late = np.sin(0.5 * np.pi * w) ** 2
    near = (t >= t0 - 0.01) & (t < t0 + 0.01)
    level = float(np.sqrt(np.mean(early[near] ** 2))) if near.any() else 0.0
    tail = diffuse_noise(mics, length, rate, rng) * level
    tail *= np.exp(-6.91 * np.maximum(t - t0, 0.0) / rt60_s)[:, None]
    out: np.ndarray = early * (1.0 - w_late)[:, None] + tail * w_late[:, None]
    return out


def _through(x: np.ndarray, h: np.ndarray, n: int, lag: int = 0) -> np.ndarray:
    """The dry signal ``x`` through the impulse responses ``h`` (L, ch): (n, ch) from sample ``lag`` on."""
    y = scipy.signal.fftconvolve(np.asarray(x, np.float64)[:, None], h, axes=0)[lag : lag + n]
    if y.shape[0] < n:
        y = np.concatenate([y, np.zeros((n - y.shape[0], y.shape[1]))])
    out: np.ndarray = y
    return out


def render_shoebox(
    size_m: list[float] | tuple[float, ...],
    rt60_s: float,
    mics: np.ndarray,
    rate: int,
    sources: list[tuple[np.ndarray, np.ndarray]],
    n: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Each source's sound at every microphone of a shoebox room, as float64 (n, ch) arrays, one per source.

    ``mics`` is (ch, 3) in room coordinates (metres); ``sources`` are (position (3,), dry mono signal at
    ``rate``). The impulse responses are pyroomacoustics' image sources (order capped at
    ``MAX_ISM_ORDER``) fading into a seeded diffuse late tail at ``rt60_s`` (:func:`late_tail_rirs`);
    pyroomacoustics' global delay is removed, so a source is heard after its propagation time only.
    Deterministic for ``rng`` (drawn from once per source, in order). No noise, no normalisation.
    """
    size = list(size_m)
    # imported here: pyroomacoustics imports sounddevice, which sets PortAudio up and waits on the sound server;
    # the driver registry imports this module at the box's start (a hung PulseAudio would hang the start)
    import pyroomacoustics as pra

    e_abs, order = pra.inverse_sabine(rt60_s, size)
    room = pra.ShoeBox(
        size, fs=rate, materials=pra.Material(e_abs), max_order=min(int(order), MAX_ISM_ORDER), air_absorption=False
    )
    mics = np.asarray(mics, np.float64)
    room.add_microphone_array(pra.MicrophoneArray(mics.T, rate))
    centre = mics.mean(axis=0)
    lag = pra.constants.get("frac_delay_length") // 2  # pyroomacoustics' global delay
    if not sources:
        return []
    for pos, _ in sources:
        room.add_source(np.asarray(pos, np.float64))
    room.compute_rir()
    out: list[np.ndarray] = []
    for s, (pos, x) in enumerate(sources):
        delay = float(np.linalg.norm(np.asarray(pos, np.float64) - centre)) / SPEED_OF_SOUND
        h = late_tail_rirs([room.rir[m][s] for m in range(len(mics))], mics, rate, rt60_s, delay + lag / rate, rng)
        out.append(_through(x, h, n, lag))
    return out


def render_habets(
    size_m: list[float] | tuple[float, ...],
    rt60_s: float,
    mics: np.ndarray,
    rate: int,
    sources: list[tuple[np.ndarray, np.ndarray]],
    n: int,
    length_rt60: float = HABETS_LENGTH_RT60,
) -> list[np.ndarray]:
    """Each source's sound at every microphone, as :func:`render_shoebox` gives it, through another
    simulator: Habets' image-source RIR generator (``rir-generator``, MIT), every image order for the first
    ``length_rt60`` x RT60 (36 dB of decay at 0.6) and no synthetic tail: the late reverberation is the
    images' own, not a field with the ideal diffuse coherence. Its high-pass filter is on; a source is
    heard after its propagation time only. Deterministic; no noise, no normalisation."""
    import rir_generator

    size = [float(v) for v in size_m]
    mics = np.asarray(mics, np.float64)
    nsample = max(256, round(length_rt60 * rt60_s * rate))
    out: list[np.ndarray] = []
    for pos, x in sources:
        h = rir_generator.generate(
            c=SPEED_OF_SOUND,
            fs=rate,
            r=mics,
            s=np.asarray(pos, np.float64),
            L=size,
            reverberation_time=rt60_s,
            nsample=nsample,
        )
        out.append(_through(x, np.asarray(h, np.float64), n))
    return out


def render_audio(scn: Scenario, speech_root: Path | None = None, cache_dir: Path | None = None) -> RenderedAudio:
    """Simulate the whole scenario at the mic array; deterministic for a given scenario.

    The loudspeaker, when there is one, is one more source, playing :func:`farend_track` at
    ``loudspeaker.level_db``; the rendering's ``reference`` is that track as sent to it
    (:func:`playback_reference`: the same samples up to a gain)."""
    rate = scn.mic_array.sample_rate
    n = round(scn.duration_s * rate)
    mics = np.array(scn.mic_positions_room(), np.float64)
    centre = mics.mean(axis=0)
    rng = np.random.default_rng(scn.room.seed)
    activity: dict[str, list[tuple[float, float]]] = {}
    sources: list[tuple[np.ndarray, np.ndarray]] = []
    for p in scn.people:
        x = dry_speech(scn, p, speech_root, cache_dir)
        mouth = np.array(scn.mouth_room(p))
        delay = float(np.linalg.norm(mouth - centre)) / SPEED_OF_SOUND
        activity[p.id] = speech_intervals(x, rate, offset_s=delay)
        if np.any(x):
            sources.append((mouth, x))
    track = farend_track(scn, speech_root, cache_dir)
    reference: np.ndarray | None = None
    farend: list[tuple[float, float]] = []
    if scn.loudspeaker is not None and track is not None:
        reference = playback_reference(track)
        at = np.array(scn.loudspeaker.position_m, np.float64)
        delay = float(np.linalg.norm(at - centre)) / SPEED_OF_SOUND
        farend = speech_intervals(track, rate, offset_s=delay)
        if np.any(track):
            sources.append((at, track * np.float32(10 ** (scn.loudspeaker.level_db / 20))))
    wet = np.zeros((n, len(mics)))
    for y in render_shoebox(scn.room.size_m, scn.room.rt60_s, mics, rate, sources, n, rng):
        wet += y
    peak = float(np.abs(wet).max())
    if peak > 0:
        wet *= 10 ** (PEAK_DBFS / 20) / peak
    wet += diffuse_noise(mics, n, rate, rng) * 10 ** (scn.room.noise_db / 20)
    wet += rng.standard_normal(wet.shape) * 10 ** (SENSOR_NOISE_DBFS / 20)
    samples = np.clip(wet, -1.0, 1.0).astype(np.float32)
    return RenderedAudio(samples, rate, activity, reference, farend)
