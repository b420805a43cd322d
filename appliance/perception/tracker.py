"""Sound-source tracking: per-block direction estimates in, sources with an identity out.

Pure core: no clock, no I/O; time is what the caller passes to :meth:`SourceTracker.update`.

Each source is a one-dimensional Kalman filter on azimuth (a random walk: a talker turns or shifts in
the chair, ``process_noise_deg`` per second; angles wrap at +-180) plus a smoothed elevation, as ODAS tracks
its sources with one filter each. A block's estimates (:class:`appliance.perception.evidence.Candidate`) are
associated greedily, strongest first, with the nearest source inside the gate (``gate_deg`` widened by
the source's own uncertainty); the measurement noise of an estimate is ``measurement_deg / weight``, so
a weak estimate moves a source little. An estimate that fits no source starts a tentative one.

- **Birth**: a tentative source is confirmed once its evidence (the sum of its estimates' weights,
  forgetting with ``evidence_tau_s``) reaches ``birth_evidence``; until then it is not reported. A new
  talker is confirmed sooner when someone would otherwise be reported in its place: heard talking (as a
  talker is reported, :data:`MIN_VOICED`), with more evidence than every active talker, away from them.
  A talker who stopped a while ago, woken by one stray estimate (a reflection of the new voice), would
  else be the dominant talker through the new one's first words. And while nobody would be reported, the
  strongest new talker heard talking is confirmed half-way to ``birth_evidence`` (:data:`LONE_BIRTH`):
  in a reverberant, noisy room a voice's estimates are weak, and the box would else report nobody
  through a confirmed talk spurt's first half second.
- **Persistence / activity**: a source is active while it has had evidence within ``active_hold_s``.
- **Death**: a talker unheard for ``forget_s`` is dropped, a learnt noise or loudspeaker after
  ``forget_noise_s``; a tentative source that never got enough evidence fades out. Two sources that come
  closer than ``merge_deg`` become one (the older keeps its id).
- **Kinds**: every estimate comes with the block's context (speech by the voice-activity gate, far end
  by the playback reference, level). A source mostly heard in blocks the voice gate calls silence, or
  heard at a steady level block after block (a fan, a projector), is learnt as ``noise``; one mostly
  heard while the far end plays is the ``farend`` loudspeaker; one high above the array (above
  ``max_talker_elevation_deg``) is ``above`` (a ceiling loudspeaker); the rest are ``talker``s. Kinds are
  decided after ``noise_learn_s`` of observation and a learnt noise stays noise. While the far end plays,
  no estimate feeds a talker. Once the playback has been silent long enough for its sound to have died away
  (``far_silent``), the loudspeaker cannot be what is heard: a voice from its learnt direction is a person
  seated there (under a ceiling loudspeaker), and its source is reported as a talker's until the far end plays
  again. (Its kind would follow by itself, but only after a couple of seconds of local speech, since the kind
  is a long average; meanwhile a reflection would be reported in the person's place.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from appliance.config import TrackerConfig
from appliance.perception.evidence import Candidate

Kind = Literal["talker", "noise", "farend", "above", "unknown"]
STAT_TAU_OBS = 25.0  # observations over which a source's context statistics are averaged
CONTEXT_LIMIT = 0.5  # share of a source's observations in silence / far end that decides its kind
MIN_VOICED = 2  # a talker is reported once active in this many blocks the voice gate passed
NEAR_NOISE_VOICED = 6  # the same, for a source next to a learnt noise
EL_FORGET = 0.98  # per estimate: the elevation averages about the last 1 / (1 - EL_FORGET) estimates
EL_POWER = 2.0  # an estimate's say in the elevation: its weight to this power
STRONGER = 1.0  # in speech, an estimate this many times a learnt noise's usual weight is not the noise's
LONE_BIRTH = 0.5  # nobody reportable: a new talker heard talking is confirmed at this share of birth_evidence


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class Source:
    """A tracked sound source: ``id`` stays the same for its whole life; angles in degrees in the camera
    frame; ``age_s`` since its birth; ``activity`` in 0..1 (recent evidence)."""

    id: int
    azimuth_deg: float
    elevation_deg: float
    active: bool
    age_s: float
    kind: Kind
    activity: float = 0.0
    evidence: float = 0.0
    heard: bool = False  # an estimate of this block was associated with it
    voiced: int = 0  # in how many blocks the voice gate passed while it was active
    talked: bool = True  # active once in a block whose talk spurt was confirmed (not a mere click)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "azimuth_deg": round(self.azimuth_deg, 2),
            "elevation_deg": round(self.elevation_deg, 1),
            "active": bool(self.active),
            "age_s": round(self.age_s, 3),
            "kind": self.kind,
        }


@dataclass
class _Track:
    id: int
    az: float
    var: float
    born: float
    last_obs: float
    first_obs: float
    evidence: float = 0.0
    confirmed: bool = False
    silent_frac: float = 0.0  # share of observations in blocks without speech
    farend_frac: float = 0.0  # share of observations in far-end blocks
    level: float | None = None  # smoothed level of the blocks it is heard in (dB)
    level_dev: float = 6.0  # smoothed absolute deviation of that level (dB): small = steady
    n_obs: int = 0
    n_voiced: int = 0  # blocks the strict voice gate passed while it was active
    talked: bool = False  # active in a block whose talk spurt was confirmed
    weight: float = 0.0  # smoothed weight of its estimates
    learnt_noise: bool = False
    kind: Kind = "unknown"
    el_sum: float = 0.0  # forgetting sums of the elevation estimates, weighted (see :meth:`add_elevation`)
    el_norm: float = 0.0

    @property
    def el(self) -> float:
        """The elevation (degrees): the weighted average of its estimates (0 before the first)."""
        return self.el_sum / self.el_norm if self.el_norm > 0.0 else 0.0

    def add_elevation(self, elevation_deg: float, weight: float) -> None:
        """Fold an estimate into the elevation: an average weighted by ``weight ** EL_POWER``, forgetting
        by ``EL_FORGET`` per estimate. A weak estimate says little: reverberation and noise flatten the
        peak of a small planar array and push its elevation up (a seated talker then reads 60-85 degrees)."""
        w = max(weight, 0.05) ** EL_POWER
        self.el_sum = EL_FORGET * self.el_sum + w * elevation_deg
        self.el_norm = EL_FORGET * self.el_norm + w


class SourceTracker:
    """Block estimates in, :class:`Source` list out (confirmed sources, oldest first)."""

    def __init__(self, cfg: TrackerConfig, hop_s: float = 0.064) -> None:
        """``hop_s``: the time between blocks, to tell a source heard in every block (steady) from one
        that pauses."""
        if hop_s <= 0.0:
            raise ValueError(f"hop_s must be positive, got {hop_s}")
        self.cfg = cfg
        self.hop_s = float(hop_s)
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._t: float | None = None
        self._cache: list[Source] | None = None
        self._dominant: tuple[Source | None] | None = None  # dominant_talker() since the last update
        self._far_silent = False  # the last update's: a learnt loudspeaker's direction is a person's now

    @property
    def sources(self) -> list[Source]:
        """The confirmed sources as of the last update."""
        return list(self._sources())

    def _sources(self) -> list[Source]:
        if self._cache is None:
            t = self._t if self._t is not None else 0.0
            self._cache = [self._source(tr, t) for tr in self._tracks if tr.confirmed]
        return self._cache

    def reset(self) -> None:
        self._tracks.clear()
        self._t = None
        self._cache = None
        self._dominant = None

    def update(
        self,
        t: float,
        candidates: list[Candidate],
        speech: bool = True,
        farend: bool = False,
        level_db: float | None = None,
        voiced: bool | None = None,
        confirmed: bool | None = None,
        span: int = 1,
        far_silent: bool = False,
    ) -> list[Source]:
        """Advance to time ``t`` (seconds, increasing) with the estimates of the block ending then.

        The block's context: ``speech`` (something lively, not the steady background), ``farend`` (the
        playback dominates: estimates then never feed a talker), ``level_db``, and ``voiced`` (the strict
        voice gate's verdict, ``speech`` when not given): a talker is only reported once it has been heard
        in voiced blocks, and once in a ``confirmed`` one (a talk spurt long enough not to be a click or a
        scrape; ``voiced`` when not given). ``span``: how many blocks these estimates stand for (the caller
        analyses only one quiet block in several: each of its estimates counts for all of them in a source's
        statistics, so that a fan heard in every quiet block is seen as heard in silence and steadily).
        ``far_silent``: the playback reference has been silent long enough for the loudspeaker's sound to have
        died away: a learnt loudspeaker (``farend``) heard talking is then a person seated in its direction
        (under a ceiling loudspeaker), reported as a talker is."""
        self._far_silent = far_silent
        voiced = speech if voiced is None else voiced
        confirmed = voiced if confirmed is None else confirmed
        self._cache = None
        self._dominant = None
        cfg = self.cfg
        dt = 0.0 if self._t is None else max(0.0, t - self._t)
        self._t = t
        decay = math.exp(-dt / cfg.evidence_tau_s)
        q = cfg.process_noise_deg**2 * dt
        for tr in self._tracks:
            tr.var += q
            tr.evidence *= decay

        used: set[int] = set()
        for cand in sorted(candidates, key=lambda c: -c.weight):
            if cand.weight < cfg.min_weight:
                continue
            r = (cfg.measurement_deg / max(cand.weight, 0.05)) ** 2
            best: _Track | None = None
            best_d = math.inf
            for tr in self._tracks:
                if tr.id in used or (farend and tr.kind == "talker"):
                    continue
                if tr.learnt_noise and voiced and not farend and cand.weight > STRONGER * tr.weight:
                    continue  # the fan's bins are masked while someone talks: a strong estimate there is speech
                d = abs(_wrap(cand.azimuth_deg - tr.az))
                # the gate widens with the source's uncertainty, but only so far: a source unheard for
                # a while must not capture an estimate from elsewhere
                gate = cfg.gate_deg + 2.0 * min(math.sqrt(tr.var), cfg.gate_deg / 2.0)
                if tr.learnt_noise and speech:
                    gate = cfg.gate_deg / 2.0  # a fan does not move: a talker near it is not the fan
                if d <= gate and d / gate < best_d:
                    best, best_d = tr, d / gate
            if best is None:
                best = _Track(id=0, az=cand.azimuth_deg, var=r, born=t, last_obs=t, first_obs=t)
                best.add_elevation(cand.elevation_deg, cand.weight)
                self._tracks.append(best)
            elif best.learnt_noise and speech:
                pass  # claimed, but a learnt noise's place is learnt without speech only
            else:
                gain = best.var / (best.var + r)
                best.az = _wrap(best.az + gain * _wrap(cand.azimuth_deg - best.az))
                best.var *= 1.0 - gain
                best.add_elevation(cand.elevation_deg, cand.weight)
            used.add(best.id)
            self._observe(best, t, cand, speech, farend, level_db, span)

        if voiced:  # the voice gate passed while these sources were active
            for tr in self._tracks:
                if t - tr.last_obs <= cfg.active_hold_s:
                    tr.n_voiced += 1
                    tr.talked = tr.talked or confirmed
        self._confirm_and_prune(t)
        return self.sources

    def _observe(
        self, tr: _Track, t: float, cand: Candidate, speech: bool, farend: bool, level_db: float | None, span: int = 1
    ) -> None:
        tr.last_obs = t
        tr.evidence += cand.weight
        tr.n_obs += span
        a = 1.0 - (1.0 - 1.0 / min(tr.n_obs, STAT_TAU_OBS)) ** span  # ``span`` observations at the new count's rate
        tr.weight += a * (cand.weight - tr.weight)
        tr.silent_frac += a * ((0.0 if speech else 1.0) - tr.silent_frac)
        tr.farend_frac += a * ((1.0 if farend else 0.0) - tr.farend_frac)
        if level_db is not None:
            if tr.level is None:
                tr.level = level_db
            else:
                tr.level_dev += a * (abs(level_db - tr.level) - tr.level_dev)
                tr.level += a * (level_db - tr.level)

    def _confirm_and_prune(self, t: float) -> None:
        cfg = self.cfg
        # the active talkers a tentative talker would be reported in place of (see the module's Birth)
        rivals = [tr for tr in self._tracks if tr.confirmed and self._reportable(tr, t)]
        # with none, the new talker who would be reported (the strongest heard talking), half-way to birth
        lone = None
        if not rivals:
            heard = [
                tr
                for tr in self._tracks
                if not tr.confirmed and self._reportable(tr, t) and tr.evidence >= LONE_BIRTH * cfg.birth_evidence
            ]
            lone = max(heard, key=lambda tr: tr.evidence, default=None)
        keep: list[_Track] = []
        for tr in self._tracks:
            if not tr.confirmed and (
                tr.evidence >= cfg.birth_evidence
                or tr is lone
                or (
                    rivals
                    and self._reportable(tr, t)
                    and all(tr.evidence > o.evidence and abs(_wrap(tr.az - o.az)) > cfg.gate_deg for o in rivals)
                )
            ):
                tr.confirmed = True
                tr.born = tr.first_obs
            if tr.id == 0:
                tr.id = self._next_id
                self._next_id += 1
            self._classify(tr, t)
            unheard = t - tr.last_obs
            if tr.confirmed:
                limit = cfg.forget_noise_s if tr.kind in ("noise", "farend") else cfg.forget_s
                if unheard > limit:
                    continue
            elif unheard > cfg.evidence_tau_s and tr.evidence < 0.1 * cfg.birth_evidence:
                continue
            keep.append(tr)
        # merge sources that came together: the older (smaller id) stays, with the evidence of both
        keep.sort(key=lambda tr: tr.id)
        merged: list[_Track] = []
        for tr in keep:
            twin: _Track | None = None
            for m in merged:
                if (
                    abs(_wrap(m.az - tr.az)) < cfg.merge_deg
                    and (m.confirmed or not tr.confirmed)
                    # a talker in front of the fan stays a talker
                    and not (m.learnt_noise != tr.learnt_noise and {m.kind, tr.kind} & {"talker", "unknown"})
                ):
                    twin = m
                    break
            if twin is None:
                merged.append(tr)
                continue
            twin.evidence += tr.evidence
            twin.last_obs = max(twin.last_obs, tr.last_obs)
            twin.confirmed = twin.confirmed or tr.confirmed
        self._tracks = merged

    def _classify(self, tr: _Track, t: float) -> None:
        cfg = self.cfg
        if tr.learnt_noise:
            tr.kind = "noise"
            return
        observed = tr.last_obs - tr.first_obs
        if observed >= cfg.noise_learn_s and tr.n_obs >= 8:
            if tr.farend_frac >= CONTEXT_LIMIT:
                tr.kind = "farend"
                return
            steady = tr.level_dev <= cfg.steady_db and tr.n_obs >= 0.8 * observed / self.hop_s
            if tr.silent_frac >= CONTEXT_LIMIT or steady:
                tr.learnt_noise = True
                tr.kind = "noise"
                return
        if tr.el > cfg.max_talker_elevation_deg:
            tr.kind = "above"
        elif tr.farend_frac >= CONTEXT_LIMIT:
            tr.kind = "farend"
        elif tr.silent_frac >= CONTEXT_LIMIT:
            tr.kind = "unknown"  # heard mostly in silence so far: not a talker (yet)
        elif tr.n_voiced < NEAR_NOISE_VOICED and self._near_noise(tr):
            tr.kind = "unknown"  # next to a learnt fan: a talker there must first be heard talking for a while
        else:
            tr.kind = "talker"

    def _reportable(self, tr: _Track, t: float) -> bool:
        """Whether ``tr``, were it confirmed, could be the dominant talker now (:meth:`_dominant_talker`)."""
        active = t - tr.last_obs <= self.cfg.active_hold_s
        kind_ok = tr.kind == "talker" or (tr.kind == "farend" and self._far_silent)
        return kind_ok and active and tr.n_voiced >= MIN_VOICED and tr.talked

    def _near_noise(self, tr: _Track) -> bool:
        for o in self._tracks:
            if o.learnt_noise and o is not tr and abs(_wrap(o.az - tr.az)) < self.cfg.gate_deg:
                return True
        return False

    def _source(self, tr: _Track, t: float) -> Source:
        cfg = self.cfg
        active = t - tr.last_obs <= cfg.active_hold_s
        activity = min(1.0, tr.evidence / max(cfg.birth_evidence, 1e-9))
        return Source(
            id=tr.id,
            azimuth_deg=tr.az,
            elevation_deg=tr.el,
            active=active,
            age_s=max(0.0, t - tr.born),
            kind=tr.kind,
            activity=activity,
            evidence=tr.evidence,
            heard=tr.last_obs == t,
            voiced=tr.n_voiced,
            talked=tr.talked,
        )

    def known_talker_at(self, azimuth_deg: float) -> bool:
        """Whether a talker already heard talking (in voiced blocks) is within ``gate_deg`` of
        ``azimuth_deg``: a talk spurt from there is that talker again, not a new source to be wary of."""
        return any(
            s.kind == "talker"
            and s.voiced >= MIN_VOICED
            and s.talked
            and abs(_wrap(s.azimuth_deg - azimuth_deg)) <= self.cfg.gate_deg
            for s in self._sources()
        )

    def dominant_talker(self) -> Source | None:
        """The active talker (heard in voiced blocks) with the most recent evidence, or None."""
        if self._dominant is None:
            self._dominant = (self._dominant_talker(),)
        return self._dominant[0]

    def _dominant_talker(self) -> Source | None:
        best: Source | None = None
        t = self._t if self._t is not None else 0.0
        confirmed = (tr for tr in self._tracks if tr.confirmed)
        for tr, s in zip(confirmed, self._sources(), strict=True):  # the sources cached since the last update
            if self._reportable(tr, t) and (best is None or s.evidence > best.evidence):
                best = s
        return best
