"""The director: decides whom to show and frames them the way a camera operator would.

Pure and deterministic: ``Director.step(faces, doas, now) -> Shot`` takes the newest faces (or None when
no new detection came), the DOA blocks that arrived since the last step and the current time. No clock,
no I/O.

How it decides:
- Speech evidence is kept as a histogram over azimuth that forgets with time constant ``evidence_tau_s``;
  every speech block adds its duration (a Gaussian bump at its azimuth). A face's evidence is the
  histogram's mass within ``match_deg`` of the face's azimuth, so it reads as "seconds of recent speech".
- A talker earns a cut when their evidence reaches what ``switch_after_s`` of continuous speech gives,
  beats the framed talker's evidence, and the current shot has been held ``min_hold_s``.
- After ``silence_to_group_s`` without attributable speech the director shows the group.
- Cuts jump; small changes of the same shot (a talker leaning) glide with time constant ``smooth_tau_s``.

Modes (``[director] mode`` at start, :meth:`Director.set_mode` from the panel): ``speaker`` (the rules above),
``group`` (everyone present), ``gallery`` (up to ``gallery_max`` people, each in a tile of one picture; the
recent talkers first), ``off`` (the whole view) and ``manual`` (:meth:`Director.manual_view`: a pan, tilt and
zoom from the panel, until ``manual_resume_s`` later the previous mode resumes). Faces inside an
``exclude_deg`` range (a TV, a picture on the wall) are never framed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from appliance.config import DirectorConfig
from appliance.messages import Crop, Doa, Face, Faces, Shot, ShotMode
from common.geometry import PinholeCamera, fit_aspect

_GRID = np.arange(-90.0, 90.5, 0.5)
_BUMP_SIGMA_DEG = 3.0
_DEADBAND = 0.03  # changes smaller than this fraction of the crop width are not followed
Policy = Literal["speaker", "group", "gallery", "off", "manual"]
POLICIES: tuple[Policy, ...] = ("speaker", "group", "gallery", "off", "manual")


@dataclass(frozen=True)
class _Seen:
    face: Face
    azimuth_deg: float


class Director:
    """Frames the talker, or the group when nobody talks. See the module docstring for the rules."""

    def __init__(self, camera: PinholeCamera, cfg: DirectorConfig, aspect: float = 16 / 9) -> None:
        self.camera = camera
        self.cfg = cfg
        self.aspect = aspect
        self._evidence = np.zeros_like(_GRID)
        self._last_t: float | None = None
        self._seen: list[_Seen] = []
        self.policy: Policy = cfg.mode
        self._resume_policy: Policy = cfg.mode
        self._manual_crop: tuple[float, float, float, float] | None = None
        self._manual_until = math.inf
        self._pending_reason: str | None = None  # a mode change waiting for the next step's cut
        self._mode: ShotMode = "wide"
        self._target_az: float | None = None
        self._last_cut_t = -math.inf
        self._last_speech_t = -math.inf
        self._crop = (0.0, 0.0, float(camera.width), float(camera.height))
        self._reason = "starting: whole room"
        self._glide_t: float | None = None
        self._last_doa_t: float | None = None
        tau = cfg.evidence_tau_s
        self._switch_level = tau * (1.0 - math.exp(-cfg.switch_after_s / tau)) if cfg.switch_after_s else 1e-6

    # -- evidence -------------------------------------------------------------------------------
    def _decay(self, now: float) -> None:
        if self._last_t is not None and now > self._last_t:
            self._evidence *= math.exp(-(now - self._last_t) / self.cfg.evidence_tau_s)
        self._last_t = now if self._last_t is None else max(self._last_t, now)

    def _add(self, doa: Doa, weight: float) -> None:
        assert doa.azimuth_deg is not None
        bump = np.exp(-0.5 * ((_GRID - doa.azimuth_deg) / _BUMP_SIGMA_DEG) ** 2)
        self._evidence += weight * bump / bump.sum()

    def _evidence_at(self, azimuth_deg: float) -> float:
        near = np.abs(_GRID - azimuth_deg) <= self.cfg.match_deg
        return float(self._evidence[near].sum())

    def _nearest(self, azimuth_deg: float) -> _Seen | None:
        best = min(self._seen, key=lambda s: abs(s.azimuth_deg - azimuth_deg), default=None)
        if best is None or abs(best.azimuth_deg - azimuth_deg) > self.cfg.match_deg:
            return None
        return best

    # -- the step -------------------------------------------------------------------------------
    def step(self, faces: Faces | None, doas: Sequence[Doa], now: float) -> Shot:
        """Advance to ``now`` with the new evidence and return the shot to show."""
        if faces is not None:
            seen = [_Seen(f, self.camera.azimuth_of_column(f.center[0])) for f in faces.faces]
            self._seen = [s for s in seen if not any(lo <= s.azimuth_deg <= hi for lo, hi in self.cfg.exclude_deg)]
        self._decay(now)
        for d in doas:
            # each block counts for the time it covers since the previous one
            span = 0.032 if self._last_doa_t is None else min(max(d.t - self._last_doa_t, 0.0), 0.25)
            self._last_doa_t = d.t
            if d.speech and d.azimuth_deg is not None:
                self._add(d, span)
                if self._nearest(d.azimuth_deg) is not None:
                    self._last_speech_t = max(self._last_speech_t, d.t)
        if self._target_az is not None:
            followed = self._nearest(self._target_az)
            if followed is not None:
                self._target_az = followed.azimuth_deg

        if self.policy == "manual" and now >= self._manual_until:
            self.policy, self._manual_crop = self._resume_policy, None
            self._pending_reason = f"automatic framing ({self.policy}) resumed after {self.cfg.manual_resume_s:g} s"
        cut = self._decide_for_policy(now)
        if self._mode == "gallery":
            tiles = self._gallery_tiles()
            if tiles:
                self._crop = _bounding(tiles)
                return Shot(
                    t=now,
                    crop=_as_int(self._crop),
                    mode="gallery",
                    reason=self._reason,
                    cut=cut,
                    tiles=tuple(_as_int(c) for c in tiles),
                    policy=self.policy,
                )
            self._mode, self._reason, cut = "wide", "gallery: nobody seen: whole room", True
        target = self._manual_crop if self._mode == "manual" and self._manual_crop else self._target_crop()
        crop = self._move(target, now, cut)
        self._crop = crop
        return Shot(
            t=now,
            crop=_as_int(crop),
            mode=self._mode,
            target_azimuth_deg=self._target_az,
            reason=self._reason,
            cut=cut,
            policy=self.policy,
        )

    # -- modes ----------------------------------------------------------------------------------
    def set_mode(self, policy: Policy, now: float) -> None:
        """Frame by ``policy`` from the next step on (a cut). ``manual`` keeps the current view."""
        if policy not in POLICIES:
            raise ValueError(f"unknown mode {policy!r}: one of {', '.join(POLICIES)}")
        if policy == "manual":
            self._start_manual(self._crop, now)
            return
        self.policy = self._resume_policy = policy
        self._manual_crop, self._manual_until = None, math.inf
        self._pending_reason = f"mode {policy} chosen"

    def manual_view(self, pan: float, tilt: float, zoom: float, now: float) -> tuple[float, float, float, float]:
        """Manual pan-tilt-zoom: ``pan`` and ``tilt`` in [-1, 1] (left/top to right/bottom of the free
        travel), ``zoom`` from 1 (the whole view) to the narrowest crop. Returns the crop."""
        if not (-1.0 <= pan <= 1.0 and -1.0 <= tilt <= 1.0) or not (math.isfinite(zoom) and zoom >= 1.0):
            raise ValueError(f"pan and tilt must be in [-1, 1] and zoom >= 1, got {pan}, {tilt}, {zoom}")
        cam = self.camera
        full = fit_aspect(cam.cx, cam.cy, float(cam.width), self.aspect, cam.width, cam.height, 1.0)
        w = max(full[2] / zoom, self.cfg.min_crop_frac * cam.width)
        h = w / self.aspect
        x = (cam.width - w) * (pan + 1.0) / 2.0
        y = (cam.height - h) * (tilt + 1.0) / 2.0
        crop = fit_aspect(x + w / 2, y + h / 2, w, self.aspect, cam.width, cam.height, 1.0)
        self._start_manual(crop, now)
        return crop

    def _start_manual(self, crop: tuple[float, float, float, float], now: float) -> None:
        if self.policy != "manual":
            self._resume_policy = self.policy
        self.policy, self._manual_crop = "manual", crop
        resume = self.cfg.manual_resume_s
        self._manual_until = now + resume if resume > 0 else math.inf
        self._pending_reason = "manual framing from the panel" + (
            f" (automatic again after {resume:g} s)" if resume > 0 else ""
        )

    def _decide_for_policy(self, now: float) -> bool:
        pending, self._pending_reason = self._pending_reason, None
        if self.policy == "speaker":
            if pending is not None:  # back to automatic: start from the group and let the rules cut
                self._mode, self._target_az, self._last_cut_t = ("group" if self._seen else "wide"), None, now
                self._reason = pending
                return True
            return self._decide(now)
        want: ShotMode
        if self.policy == "manual":
            want = "manual"
        elif self.policy == "off" or not self._seen:
            want = "wide"
        else:
            want = "group" if self.policy == "group" else "gallery"
        if pending is None and want == self._mode:
            return False
        self._mode, self._target_az, self._last_cut_t = want, None, now
        self._reason = (
            pending
            or {
                "wide": "whole room",
                "group": f"{len(self._seen)} people: group",
                "gallery": f"{len(self._seen)} people: gallery",
                "manual": "manual",
            }[want]
        )
        return True

    def _gallery_tiles(self) -> list[tuple[float, float, float, float]]:
        """One crop per person (at most ``gallery_max``): recent talkers first, then left to right; the
        tiles are laid out left to right in azimuth order."""
        if not self._seen:
            return []

        def talked(s: _Seen) -> float:  # seconds of recent speech, when there is a meaningful amount
            ev = self._evidence_at(s.azimuth_deg)
            return ev if ev >= 0.05 else 0.0

        ranked = sorted(self._seen, key=lambda s: (-talked(s), s.azimuth_deg))
        chosen = sorted(ranked[: self.cfg.gallery_max], key=lambda s: s.azimuth_deg)
        aspect = gallery_tile_aspect(len(chosen), self.aspect)
        cam, out = self.camera, []
        for s in chosen:
            x, y, w, h = s.face.box
            cw = max(w * self.cfg.face_widths * 0.8, h * 2.2 * aspect)
            out.append(fit_aspect(x + w / 2, y + h / 2 + 0.1 * cw / aspect, cw, aspect, cam.width, cam.height, w * 1.5))
        return out

    def _decide(self, now: float) -> bool:
        held = now - self._last_cut_t
        scored = [(self._evidence_at(s.azimuth_deg), s) for s in self._seen]
        best_ev, best = max(scored, key=lambda p: p[0], default=(0.0, None))
        current_ev = self._evidence_at(self._target_az) if self._target_az is not None else 0.0
        is_current = best is not None and self._target_az is not None and abs(best.azimuth_deg - self._target_az) < 1e-6
        if (
            best is not None
            and not is_current
            and best_ev >= self._switch_level
            and best_ev > 1.25 * current_ev
            and (held >= self.cfg.min_hold_s or self._mode != "speaker")
        ):
            self._mode, self._target_az, self._last_cut_t = "speaker", best.azimuth_deg, now
            self._reason = f"talker at {best.azimuth_deg:+.1f} deg: {best_ev:.2f} s of recent speech" + (
                f" vs {current_ev:.2f} s" if current_ev > 0 else ""
            )
            return True
        silent_for = now - self._last_speech_t
        if self._mode == "speaker" and silent_for >= self.cfg.silence_to_group_s and held >= self.cfg.min_hold_s:
            self._mode, self._target_az, self._last_cut_t = "group", None, now
            self._reason = f"no speech for {silent_for:.1f} s: group"
            return True
        if self._mode == "wide" and self._seen:
            self._mode, self._last_cut_t = "group", now
            self._reason = f"{len(self._seen)} people seen: group"
            return True
        if self._mode == "group" and not self._seen and held >= self.cfg.min_hold_s:
            self._mode, self._last_cut_t, self._reason = "wide", now, "nobody seen: whole room"
            return True
        return False

    # -- framing --------------------------------------------------------------------------------
    def _target_crop(self) -> tuple[float, float, float, float]:
        cam, cfg = self.camera, self.cfg
        min_w = cfg.min_crop_frac * cam.width
        if self._mode == "speaker" and self._target_az is not None:
            seen = self._nearest(self._target_az)
            if seen is None:  # the talker's face is not detected right now: keep the framing
                return self._crop
            x, y, w, h = seen.face.box
            cw = max(w * cfg.face_widths, min_w)
            ch = cw / self.aspect
            # eyes about a third down the picture: face centre 40 % from the top
            return fit_aspect(x + w / 2, y + h / 2 + 0.1 * ch, cw, self.aspect, cam.width, cam.height, min_w)
        if self._mode == "group" and self._seen:
            boxes = np.array([s.face.box for s in self._seen])
            fw = float(np.median(boxes[:, 2]))
            m = cfg.group_margin * fw + fw
            x0, x1 = boxes[:, 0].min() - m, (boxes[:, 0] + boxes[:, 2]).max() + m
            y0, y1 = boxes[:, 1].min() - m, (boxes[:, 1] + boxes[:, 3]).max() + 2 * m
            cw = max(x1 - x0, (y1 - y0) * self.aspect)
            return fit_aspect((x0 + x1) / 2, (y0 + y1) / 2, cw, self.aspect, cam.width, cam.height, min_w)
        return fit_aspect(cam.cx, cam.cy, float(cam.width), self.aspect, cam.width, cam.height, min_w)

    def _move(
        self, target: tuple[float, float, float, float], now: float, cut: bool
    ) -> tuple[float, float, float, float]:
        cur = self._crop
        if cut or self.cfg.smooth_tau_s <= 0:
            self._glide_t = now
            return target
        if max(abs(a - b) for a, b in zip(cur, target, strict=True)) < _DEADBAND * cur[2]:
            self._glide_t = now
            return cur
        dt = 0.0 if self._glide_t is None else max(0.0, now - self._glide_t)
        self._glide_t = now
        a = 1.0 - math.exp(-dt / self.cfg.smooth_tau_s)
        return (
            cur[0] + a * (target[0] - cur[0]),
            cur[1] + a * (target[1] - cur[1]),
            cur[2] + a * (target[2] - cur[2]),
            cur[3] + a * (target[3] - cur[3]),
        )


def gallery_tile_aspect(n: int, aspect: float) -> float:
    """The aspect of each tile when ``n`` people share one picture of ``aspect``: one fills it, two stand
    side by side (halves), three or four take a quarter each."""
    return aspect if n <= 1 else aspect / 2 if n == 2 else aspect


def _bounding(crops: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    x0, y0 = min(c[0] for c in crops), min(c[1] for c in crops)
    x1, y1 = max(c[0] + c[2] for c in crops), max(c[1] + c[3] for c in crops)
    return x0, y0, x1 - x0, y1 - y0


def _as_int(crop: tuple[float, float, float, float]) -> Crop:
    x, y, w, h = (int(round(v)) for v in crop)
    return x, y, w - (w % 2), h - (h % 2)
