"""Listening: mic-array chunks (and the playback reference) in, one :class:`Heard` per block out.

:class:`Listener` is pure (no clock, no driver), like :class:`appliance.perception.hearing.Hearing`, which
it does not replace: chunks of any length with the time of their first sample, cut into ``[doa] block_ms``
blocks every ``[tracker] hop_ms``. Per block:

- voice activity: with ``[doa] vad = "silero"`` (the default) the Silero network
  (:class:`appliance.perception.silero.SileroVad`) on the mics beamed towards the source the listener
  attends to (the dominant talker, else the liveliest source heard that is not a learnt noise;
  :class:`appliance.perception.beam.VoiceBeam`: delay-and-sum, and, while that source is heard and once
  quiet blocks have taught it the room's background, an MVDR beam against that background): a few dB
  above one mic in noise and reverberation, more against a fan; the energy gate
  (:class:`appliance.perception.vad.EnergyVad`) still learns the noise floor and gives the block's level.
  Between talk spurts the network rests on quiet blocks (not ``LIVELY_DB`` above the floor): it is most of
  the listener's cost. A talk spurt counts as speech once it has lasted ``silero.MIN_SPEECH_S`` (Silero's
  min_speech_duration), or at once when it comes from a talker already heard talking: a chair scrape, a
  cough or a burst of typing that Silero takes for voice for a moment is not a new talker;
- with a playback reference, the far-end share (:class:`appliance.perception.farend.FarendMeter`) over the
  last ``farend_window_ms``; a block whose share reaches ``farend_ratio`` is ``farend`` (held for
  ``farend_hold_s``, the loudspeaker's reverberation) and is never reported as local speech; once the
  reference has been silent ``FAR_SILENT_S`` past its window, the tracker is told the far end is silent (a
  voice from the loudspeaker's direction is then a person there);
- soft DOA evidence (:class:`appliance.perception.evidence.SoftSrp`): up to ``max_sources`` weighted
  direction estimates, from every block that is not quiet, and from one quiet block in ``NOISE_EVERY``
  without the floor's weights (they teach the tracker the steady noises; each stands for the
  ``NOISE_EVERY`` quiet blocks in a source's statistics, so that a fan is seen heard in silence as often as
  it is);
- the source tracker (:class:`appliance.perception.tracker.SourceTracker`).

``azimuth_deg`` is the dominant active talker (a tracked source of kind ``talker`` that the voice gate has
heard), given in blocks that are not far end when the voice gate passes, or when the block is lively (a
little above the noise floor), the talker was heard in this very block and Silero's probability reaches
``SOFT_MIN_P`` (it is not sure nobody talks): soft evidence, not a hard gate.
``speech`` is the gate's verdict, or true when a talker is reported.

Wiring (the live box): one ``Listener(cfg.mic_array, cfg.tracker, cfg.doa)`` per array;
``listener.feed(block.samples, block.t, reference=playback_chunk_or_None)`` per captured block; each
``Heard.to_doa()`` goes to the director unchanged, ``Heard.to_json()`` to the panel.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from appliance.config import DoaConfig, MicArraySection, TrackerConfig
from appliance.messages import Doa
from appliance.perception.beam import VoiceBeam
from appliance.perception.evidence import SoftSrp
from appliance.perception.farend import SILENT_DB, FarendMeter, power_db
from appliance.perception.tracker import Source, SourceTracker
from appliance.perception.vad import EnergyVad

if TYPE_CHECKING:
    from appliance.perception.silero import SileroVad

NOISE_EVERY = 4  # one block in this many without speech is analysed without the noise-floor weights
ONSET_DB = 15.0  # the reference's newest hop this far above the rest of its window: the far end starts now,
ONSET_QUIET_DB = 15.0  # if the rest of the window was within this of silence (farend.SILENT_DB)
FAR_SILENT_S = 0.3  # the reference silent this long (after its window): the loudspeaker's sound has died away
DELAY_EVERY = 4  # the far-end delay is searched again every this many blocks
BEAM_LEARN_EVERY = 8  # the voice gate's beam learns the background from one quiet block in this many
SILERO_WARMUP_S = 0.5  # Silero hears every block while the energy gate learns its floor (vad.WARMUP_S)
LIVELY_DB = 3.0  # a block this far above the noise floor is lively (context for the tracker, not speech)
SOFT_MIN_P = 0.2  # a talker heard in a lively block is not reported when Silero heard it below this probability


def _r(v: float, nd: int = 3) -> float:
    return round(float(v), nd)


@dataclass(frozen=True)
class Heard:
    """What one block ending at ``t`` says: the dominant active talker's azimuth (None when nobody local
    talks), whether there is speech, whether the far end dominates, and every tracked source."""

    t: float
    azimuth_deg: float | None
    speech: bool
    farend: bool
    level_db: float = -120.0
    confidence: float = 0.0
    sources: tuple[Source, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "azimuth_deg": None if self.azimuth_deg is None else _r(self.azimuth_deg, 2),
            "speech": bool(self.speech),
            "level_db": _r(self.level_db, 1),
            "confidence": _r(self.confidence),
            "farend": bool(self.farend),
            "sources": [s.to_json() for s in self.sources],
        }

    def to_doa(self) -> Doa:
        """The same block as the director's :class:`Doa` message (far-end blocks are not speech)."""
        return Doa(
            t=self.t,
            azimuth_deg=self.azimuth_deg,
            speech=self.speech and not self.farend,
            level_db=self.level_db,
            confidence=self.confidence,
            farend=self.farend,
        )


class _GivenLevelVad(EnergyVad):
    """The energy gate on a level computed elsewhere (the block's voice-band level from the DOA's transform,
    which saves a second transform of every block)."""

    given_db = -120.0

    def level_db(self, block: npt.ArrayLike) -> float:
        return self.given_db


class _Fifo:
    """Samples appended at the end and dropped from the front, without copying what is kept on every append
    (a store with room to spare, compacted when full): ``view`` is the kept samples."""

    def __init__(self, channels: int | None, room: int) -> None:
        shape = (max(1, room),) if channels is None else (max(1, room), channels)
        self._store = np.zeros(shape, np.float32)
        self._lo = self._hi = 0

    @property
    def view(self) -> npt.NDArray[np.float32]:
        return self._store[self._lo : self._hi]

    def __len__(self) -> int:
        return self._hi - self._lo

    def append(self, x: npt.NDArray[np.float32]) -> None:
        n, kept = x.shape[0], self._hi - self._lo
        if self._hi + n > self._store.shape[0]:
            if kept + n > self._store.shape[0]:  # a long chunk: more room
                store = np.zeros((2 * (kept + n), *self._store.shape[1:]), np.float32)
                store[:kept] = self._store[self._lo : self._hi]
                self._store = store
            else:
                self._store[:kept] = self._store[self._lo : self._hi]
            self._lo, self._hi = 0, kept
        self._store[self._hi : self._hi + n] = x
        self._hi += n

    def drop(self, n: int) -> None:
        self._lo = min(self._hi, self._lo + n)


class Listener:
    """Voice activity, far end, soft DOA evidence and tracked sources of a mic-array stream."""

    def __init__(
        self,
        mic: MicArraySection,
        cfg: TrackerConfig | None = None,
        doa: DoaConfig | None = None,
        compiled: bool = True,
        adaptive_beam: bool = True,
    ) -> None:
        """``compiled``: the DOA evidence through its compiled kernels (the default) or its numpy path (the
        same estimates; the bench's ``listener+numpy``, to measure what the kernels save). ``adaptive_beam``
        false: the voice gate hears the delay-and-sum beam only (the bench's ``listener+ds``)."""
        self.mic = mic
        self.cfg = cfg = cfg or TrackerConfig()
        self.doa = doa = doa or DoaConfig()
        self.sample_rate = fs = int(mic.sample_rate)
        self.n_mics = len(mic.positions)
        self.srp = SoftSrp(
            np.asarray(mic.positions, dtype=np.float64),
            fs,
            doa.block_ms,
            doa.fmin_hz,
            doa.fmax_hz,
            doa.grid_deg,
            hop_ms=cfg.hop_ms,
            full_circle=cfg.full_circle,
            max_azimuth_deg=cfg.max_azimuth_deg,
            compiled=compiled,
        )
        self.vad = _GivenLevelVad(doa.model_copy(update={"hop_ms": cfg.hop_ms}), fs)
        self.silero: SileroVad | None = None
        if doa.vad == "silero":
            from appliance.perception.silero import SileroVad

            self.silero = SileroVad(doa.model_copy(update={"hop_ms": cfg.hop_ms}), fs)
        self.tracker = SourceTracker(cfg, hop_s=cfg.hop_ms / 1000.0)
        self.block_len = self.srp.block_len
        self.hop_len = max(1, round(cfg.hop_ms * fs / 1000.0))
        self.max_delay = max(1, round(cfg.farend_max_delay_ms * fs / 1000.0))
        self.window_len = max(self.block_len, round(cfg.farend_window_ms * fs / 1000.0))
        self._history = self.window_len + self.max_delay  # samples kept behind a block's end
        self.farend_meter = FarendMeter(fs, self.max_delay)
        self._farend_until = -math.inf
        self._ref_live_t = -math.inf  # when the playback reference last carried sound (its window's end)
        self._steer_az: float | None = None
        self._steer_heard = False  # the attended source was heard in the last block
        # the voice gate's beam, MVDR once it has learnt the background: on an array with a 2-D aperture only;
        # a line array's azimuths are pulled towards its broadside by up to 25 deg in a reverberant room (its
        # cone of confusion), and an MVDR beam aimed there loses the talker (docs/hearing-grid.md)
        self.beam = VoiceBeam(mic.positions, fs, self.hop_len, adaptive_beam and self.srp.planar_2d)
        self._quiet_hops = 0
        self._blocks = 0
        # the network hears the background this long before it may rest (from a blank state it is slow to
        # take the first words for speech)
        self._silero_warmup = math.ceil(SILERO_WARMUP_S * 1000.0 / cfg.hop_ms - 1e-9)
        self._delay: int | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the buffered audio (not the learnt noise floor nor the sources)."""
        room = 4 * (self._history + self.block_len)  # kept audio, and room for the chunks to come
        self._x = _Fifo(self.n_mics, room)
        self._ref = _Fifo(None, room)
        self._base = 0  # absolute index of the first buffered sample
        self._next = 0  # absolute index of the next block's first sample
        self._t_origin: float | None = None  # time of absolute sample 0
        self._has_ref = False
        self.farend_meter.reset()

    def _check(self, samples: npt.ArrayLike, reference: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1 and self.n_mics == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.n_mics:
            got = x.shape[1] if x.ndim == 2 else f"shape {x.shape}"
            raise ValueError(
                f"audio has the wrong number of channels: expected {self.n_mics} "
                f"(one per microphone in [mic_array] positions), got {got}"
            )
        if reference is None:
            return x, None
        r = np.asarray(reference, dtype=np.float32)
        if r.ndim == 2 and r.shape[1] == 1:
            r = r[:, 0]
        if r.ndim != 1:
            raise ValueError(f"the playback reference must be mono, got shape {r.shape}")
        if r.shape[0] != x.shape[0]:
            raise ValueError(
                f"the playback reference has {r.shape[0]} samples but the array chunk has "
                f"{x.shape[0]}: they must be sample-aligned"
            )
        return x, r

    def feed(self, samples: npt.ArrayLike, t0: float, reference: npt.ArrayLike | None = None) -> list[Heard]:
        """Add a chunk (frames, channels) whose first sample is at ``t0`` seconds, with, when the box plays
        something, the matching chunk of the playback reference (frames,). Returns a :class:`Heard` for
        every block completed, stamped with the time of the block's end."""
        x, r = self._check(samples, reference)
        if x.shape[0] == 0:
            return []
        fs = self.sample_rate
        if self._t_origin is not None:
            expected = self._t_origin + (self._base + len(self._x)) / fs
            if abs(t0 - expected) > self.block_len / fs:
                self.reset()
        if self._t_origin is None:
            self._t_origin = float(t0)
        if r is not None and not self._has_ref:  # the reference starts: silence before it
            self._has_ref = True
            self._ref.append(np.zeros(len(self._x), np.float32))
        self._x.append(x)
        if self._has_ref:  # kept sample-aligned with the mics once the box plays something
            self._ref.append(r if r is not None else np.zeros(x.shape[0], np.float32))

        out: list[Heard] = []
        end = self._base + len(self._x)
        while self._next + self.block_len <= end:
            block_end = self._next + self.block_len
            out.append(self._analyse(block_end, self._t_origin + block_end / fs))
            self._next += self.hop_len
        keep_from = max(self._base, min(self._next, self._next + self.block_len - self._history))
        drop = keep_from - self._base
        if drop > 0:
            self._x.drop(drop)
            self._ref.drop(drop)
            self._base = keep_from
        return out

    def _farend(self, block_end: int, t: float) -> bool:
        cfg = self.cfg
        i_end = block_end - self._base
        n = min(self.window_len, i_end)
        need = n + self.max_delay
        ref = self._ref.view[max(0, i_end - need) : i_end]
        if ref.size < need:
            ref = np.concatenate([np.zeros(need - ref.size, np.float32), ref])
        # the room path changes rarely: search its delay again every DELAY_EVERY blocks, or when lost
        if n < 2 * self.farend_meter.frame:  # the stream's first short blocks: too little of it for a share
            if self._ref_onset(ref):
                self._farend_until = t + cfg.farend_hold_s
            return t <= self._farend_until
        search = self._delay is None or self._blocks % DELAY_EVERY == 0
        est = self.farend_meter.share(
            self._x.view[i_end - n : i_end], ref, block_end - n, delay=None if search else self._delay
        )
        if est.reference_db > SILENT_DB:
            self._ref_live_t = t
            self._delay = est.delay if est.share >= cfg.farend_ratio / 2.0 else None
        # hysteresis: while the far end plays, half the share keeps the block marked
        playing = t <= self._farend_until + self.hop_len / self.sample_rate
        ratio = cfg.farend_ratio / 2.0 if playing else cfg.farend_ratio
        if est.share >= ratio or self._ref_onset(ref):
            self._farend_until = t + cfg.farend_hold_s
        return t <= self._farend_until

    def _ref_onset(self, ref: npt.NDArray[np.float32]) -> bool:
        """Whether the far end starts a turn in the newest hop of ``ref``: the rest of the window near silence
        (below ``ONSET_QUIET_DB`` above it), the newest hop ``ONSET_DB`` louder. The window's share cannot tell
        yet (a hop of sound in a window of silence), but the box knows what it just sent to the loudspeaker.
        (A word after a pause within a turn is not an onset: the window still holds the turn's last words.)"""
        h = self.hop_len
        new_db = power_db(float(np.mean(np.square(ref[-h:], dtype=np.float64))))
        old_db = power_db(float(np.mean(np.square(ref[:-h], dtype=np.float64)))) if ref.size > h else -120.0
        return old_db < SILENT_DB + ONSET_QUIET_DB and new_db >= old_db + ONSET_DB

    def _steered(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The new samples (n, M) as one channel for the voice gate: the beam towards the source the listener
        attends to (delay-and-sum, then MVDR against the learnt background: :mod:`appliance.perception.beam`),
        or the mics' mean before any source is heard."""
        if self._steer_az is None or self.n_mics < 2:
            out: npt.NDArray[np.float32] = x.mean(axis=1)
            return out
        # MVDR while the attended source is being heard; otherwise delay-and-sum, which lets a new talker
        # elsewhere through (MVDR, sharper, would keep their first words from the voice gate)
        return self.beam.steer(x, self._steer_az, adaptive=self._steer_heard)

    def _may_be_voice(self) -> bool:
        """Whether the block may carry a voice the gate missed: with Silero, unless the network heard it and
        is sure nobody talks (typing or a cough next to a talker heard before is not that talker)."""
        return self.silero is None or self.silero.probability >= SOFT_MIN_P

    def _aim(self, sources: list[Source]) -> None:
        """Attend to the dominant talker, else to the liveliest source heard now that is not a learnt noise."""
        talker = self.tracker.dominant_talker()
        if talker is not None:
            self._steer_az, self._steer_heard = talker.azimuth_deg, talker.heard
            return
        heard = [s for s in sources if s.heard and s.kind not in ("noise", "farend")]
        if heard:
            self._steer_az, self._steer_heard = max(heard, key=lambda s: s.evidence).azimuth_deg, True
        else:
            self._steer_heard = False

    def _analyse(self, block_end: int, t: float) -> Heard:
        cfg = self.cfg
        i_end = block_end - self._base
        block = self._x.view[i_end - self.block_len : i_end]
        self.vad.given_db = self.srp.prepare(block)  # the voice-band level, from the DOA's own transform
        energetic, level = self.vad.update(block)
        floor = self.vad.floor_db
        # nothing above the steady background: no talk spurt can start here (context for the tracker)
        quiet = not energetic and (floor is None or level <= floor + LIVELY_DB)
        if self.silero is not None:  # the trained gate decides; the energy gate still learns the floor
            if quiet and not self.silero.speaking and self.n_mics > 1:
                self._quiet_hops += 1
                if self._quiet_hops % BEAM_LEARN_EVERY == 0:  # the background the voice gate's beam keeps out
                    self.beam.learn(block[-self.hop_len :])
            if quiet and not self.silero.speaking and self._blocks >= self._silero_warmup:
                speech = self.silero.skip()  # between talk spurts the network is not worth its cost
            else:
                new = self._steered(block[-self.hop_len :])
                speech = self.silero.hear(new) and level > self.doa.min_level_db
        else:
            speech = energetic
        voiced = speech  # the gate's verdict, before a new source's spurt is confirmed
        self._blocks += 1
        farend = self._has_ref and self._farend(block_end, t)
        # the context the tracker classifies sources by: a block a little above the noise floor counts as
        # speech too (the gate is strict; a talker starting softly is not a fan)
        lively = speech or not quiet
        # Bins near the learnt noise floor are down-weighted (a talker the gate missed still shows), except
        # in one block out of NOISE_EVERY without speech, where the steady sources show and are learnt.
        masked = speech or self._blocks % NOISE_EVERY != 0
        if masked and not lively and not farend:
            # a quiet block analysed with the floor's weights: next to nothing stands above the floor, and
            # the steady sources are learnt in the unweighted blocks; only the floor learns from it
            self.srp.skip()
            cands = []
        else:
            cands = self.srp.evidence(
                masked,
                max_sources=cfg.max_sources if speech else 1,
                second_ratio=cfg.second_ratio,
                min_weight=cfg.min_weight,
            )
        held = False
        if voiced and self.silero is not None and not self.silero.confirmed:
            # a talk spurt shorter than silero.MIN_SPEECH_S (a chair scrape, a burst of typing) is speech
            # only when it comes from a talker already heard talking; until then nobody is reported
            speech = bool(cands) and self.tracker.known_talker_at(cands[0].azimuth_deg)
            held = not speech
        sources = self.tracker.update(
            t,
            cands,
            speech=lively,
            farend=farend,
            level_db=level,
            voiced=voiced,
            confirmed=not held,
            far_silent=t - self._ref_live_t >= FAR_SILENT_S,
            span=1 if masked or lively else NOISE_EVERY,  # one quiet block analysed stands for NOISE_EVERY
        )
        self._aim(sources)
        azimuth: float | None = None
        confidence = 0.0
        if not farend and not held:
            talker = self.tracker.dominant_talker()
            if talker is not None and (speech or (lively and talker.heard and self._may_be_voice())):
                azimuth, confidence = talker.azimuth_deg, talker.activity
        return Heard(
            t=t,
            azimuth_deg=azimuth,
            speech=speech or azimuth is not None,
            farend=farend,
            level_db=level,
            confidence=confidence,
            sources=tuple(sources),
        )


def read_reference(path: str | os.PathLike[str], samples: npt.NDArray[np.float32], sample_rate: int) -> np.ndarray:
    """The playback reference WAV at ``path`` as float32 (frames,), checked against the array recording
    ``samples`` (frames, channels) at ``sample_rate``: mono, the same rate, the same length."""
    from drivers.files import MediaFileError, read_wav

    ref, rate = read_wav(path)
    if rate != sample_rate:
        raise MediaFileError(
            f"{path}: the reference's sample rate is {rate} Hz but the array recording's is {sample_rate} Hz"
        )
    if ref.shape[1] != 1:
        raise MediaFileError(
            f"{path}: the reference has {ref.shape[1]} channels; it must be mono (what was sent to the loudspeaker)"
        )
    if ref.shape[0] != samples.shape[0]:
        raise MediaFileError(
            f"{path}: the reference has {ref.shape[0]} samples but the array recording has "
            f"{samples.shape[0]}: they must be sample-aligned and of the same length"
        )
    out: np.ndarray = ref[:, 0]
    return out


class ListeningDoas:
    """A :class:`Listener` that gives the director's :class:`Doa` blocks, as :class:`Hearing` does."""

    def __init__(
        self,
        mic: MicArraySection,
        cfg: TrackerConfig,
        doa: DoaConfig,
        compiled: bool = True,
        adaptive_beam: bool = True,
    ) -> None:
        self.listener = Listener(mic, cfg, doa, compiled, adaptive_beam)
        self.last: list[Heard] = []

    def reset(self) -> None:
        self.listener.reset()

    def feed(self, samples: npt.ArrayLike, t0: float, reference: npt.ArrayLike | None = None) -> list[Doa]:
        self.last = self.listener.feed(samples, t0, reference)
        return [h.to_doa() for h in self.last]
