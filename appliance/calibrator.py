"""The guided calibration of the mic array on the live box: prompts, captures, the fit, saving.

:class:`Calibrator` runs one point at a time (:meth:`Calibrator.capture`): for ``[calibration] capture_s``
seconds of the capture clock it hands the box's DOA blocks (:meth:`feed_doas`, as the hearing gives them, in
the array's own frame) and face detections (:meth:`feed_faces`) to a
:class:`appliance.calibration.PointCollector`, then keeps the point or says why not. The points captured so
far give a proposal (:func:`appliance.calibration.fit`, and the array's gain their speech levels call for,
:func:`appliance.calibration.speech_gain_db`); :meth:`save` writes it as ``[calibration] points`` and
``gain_db`` through the config store (atomically, a revision: the box keeps it across restarts) and applies it live;
:meth:`discard` forgets the captures; :meth:`forget` removes the saved calibration. Its state goes on the
event bus as a :class:`appliance.messages.CalibrationState` (``/api/state`` has it under ``"calibration"``).

The HTTP API (``/api/calibration``) is :mod:`appliance.control.calibration_api`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from appliance.calibration import (
    POINT_NAMES,
    PROMPTS,
    CalibrationRefused,
    Point,
    PointCollector,
    face_azimuths,
    fit,
    speech_gain_db,
)
from appliance.config import CalibrationConfig, Config
from appliance.control.store import ConfigStore, OnConfig, Revision
from appliance.messages import CalibrationState, Doa, Faces
from appliance.ports import EventSink
from appliance.step import calibration_of, gain_of
from common.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

SETTLE_S = 1.0  # after a capture's end, how long to wait for the hearing's last blocks of it
PROGRESS_EVERY_S = 0.5


class CalibrationBusy(RuntimeError):
    """A capture is already running."""


class Calibrator:
    """The guided calibration of one live box.

    ``live()``: the config the box runs with (its devices first); ``store``: where a saved calibration is
    written (``None``: it is only applied live); ``on_config``: the box's live config hook; ``wall()``: the
    wall-clock time a calibration is stamped with.
    """

    def __init__(
        self,
        live: Callable[[], Config],
        events: EventSink,
        clock: Clock = SYSTEM_CLOCK,
        *,
        store: ConfigStore | None = None,
        on_config: OnConfig | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.live, self.events, self.clock = live, events, clock
        self.store, self.on_config, self.wall = store, on_config, wall
        self.captured: dict[str, Point] = {}
        self._array = ""  # the mic array the captured points were heard with
        self.error = ""
        self._collector: PointCollector | None = None
        self._window = (0.0, 0.0)
        self._last_doa_t = -math.inf
        self._published_at = -math.inf
        if store is not None:  # a revision from the API, MQTT or the panel: the panels show the calibration it holds
            store.on_change.append(lambda rev: self.publish())

    # -- what the box feeds ------------------------------------------------------------------------
    @property
    def capturing(self) -> str | None:
        return None if self._collector is None else self._collector.name

    def feed_doas(self, doas: Iterable[Doa]) -> None:
        """The hearing's DOA blocks (the array's frame, not mapped through a calibration)."""
        col = self._collector
        if col is None:
            return
        t0, t1 = self._window
        inside = [d for d in doas if t0 < d.t <= t1]
        for d in doas:
            self._last_doa_t = max(self._last_doa_t, d.t)
        col.add_doas(inside)
        if inside and inside[-1].t - self._published_at >= PROGRESS_EVERY_S:
            self._published_at = inside[-1].t
            self.publish()

    def feed_faces(self, faces: Faces) -> None:
        """One face detection (its picture's size and time)."""
        col = self._collector
        if col is None or not self._window[0] <= faces.t <= self._window[1]:
            return
        col.add_faces(face_azimuths(faces, self.live().camera.hfov_deg))

    # -- the guided steps --------------------------------------------------------------------------
    async def capture(self, name: Any) -> Point:
        """Listen for one point (``left``, ``right`` or ``centre``) for ``capture_s``; returns it, or raises
        :class:`CalibrationRefused` saying why (:class:`CalibrationBusy` while another capture runs)."""
        if self._collector is not None:
            raise CalibrationBusy(f"already capturing the {self._collector.name} point")
        if name not in POINT_NAMES:
            raise CalibrationRefused(f"no calibration point {name!r}: one of {', '.join(POINT_NAMES)}")
        live = self.live()
        array = next(iter(live.mic_arrays))
        dropped = ""
        if self.captured and array != self._array:  # points heard by another array do not fit together
            dropped = f"; the points heard by mic array {self._array!r} were dropped: {array!r} runs now"
            log.info("calibration: %s", dropped[2:])
            self.captured.clear()
        self._array = array
        cfg = live.calibration
        col = PointCollector(name, cfg.limits)
        t0 = self.clock.now()
        self._collector, self._window = col, (t0, t0 + cfg.capture_s)
        self._last_doa_t, self._published_at = -math.inf, t0
        log.info("calibration: capturing the %s point for %.1f s", name, cfg.capture_s)
        self.publish()
        try:
            end = t0 + cfg.capture_s
            await self.clock.sleep_until(end)
            while self._last_doa_t < end and self.clock.now() < end + SETTLE_S:
                await self.clock.sleep_until(min(end + SETTLE_S, self.clock.now() + 0.05))
        finally:
            self._collector = None
        try:
            now = next(iter(self.live().mic_arrays))
            if now != array:  # its blocks came from two arrays
                raise CalibrationRefused(f"the mic array changed during the capture ({array!r}, now {now!r})")
            point = col.point()
        except CalibrationRefused as e:
            self.error = f"{name}: {e}{dropped}"
            log.info("calibration: %s", self.error)
            self.publish()
            raise CalibrationRefused(self.error) from None
        self.captured[name] = point
        self.error = dropped[2:]
        log.info(
            "calibration: %s heard at %+.1f deg, face at %+.1f deg (%d blocks, spread %.1f deg)",
            name,
            point.doa_deg,
            point.camera_deg,
            point.blocks,
            point.spread_deg,
        )
        self.publish()
        return point

    def proposal(self) -> tuple[str, bool]:
        """What the captured points fit to, or why they do not."""
        if not self.captured:
            return "", False
        try:
            cal = fit(self._pairs(), self.live().calibration.limits)
        except CalibrationRefused as e:
            return str(e), False
        return f"{cal.describe()}, {self._describe_gain(self._gain())}", True

    def _gain(self) -> float:
        """The array's gain the captured points' speech levels call for (heard with the gain in force)."""
        return speech_gain_db((p.level_db for p in self.captured.values()), gain_of(self.live()))

    def _describe_gain(self, gain_db: float) -> str:
        levels = [p.level_db for p in self.captured.values() if p.level_db is not None]
        if not levels:
            return f"gain {gain_db:+.1f} dB (no speech level heard)"
        heard = statistics.median(levels)
        return f"gain {gain_db:+.1f} dB (speech heard at {heard:.0f} dBFS)"

    def _pairs(self) -> list[tuple[float, float]]:
        return [
            (round(p.doa_deg, 2), round(p.camera_deg, 2))
            for n in POINT_NAMES
            if (p := self.captured.get(n)) is not None
        ]

    def save(self, who: str = "panel") -> Revision | None:
        """Write the captured points as the calibration (a config revision; applied live at once). Refused
        (:class:`CalibrationRefused`, the last good calibration stays) when nothing was captured or the fit is
        not plausible. Returns the revision (``None`` without a store)."""
        if not self.captured:
            raise CalibrationRefused(
                "nothing captured yet: capture the left and right points first (one point alone gives the array's "
                "rotation only)"
            )
        pairs = self._pairs()
        live = self.live()
        running = next(iter(live.mic_arrays))
        if running != self._array:
            self.captured.clear()
            self.error = f"not saved: the points were heard by mic array {self._array!r}, now {running!r} runs"
            self.publish()
            raise CalibrationRefused(self.error)
        try:
            cal = fit(pairs, live.calibration.limits)
        except CalibrationRefused as e:
            self.error = f"not saved: {e}"
            self.publish()
            raise CalibrationRefused(self.error) from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wall()))
        gain = self._gain()
        keys = {"points": pairs, "mic_array": self._array, "when": stamp, "gain_db": gain}
        rev = self._write(keys, who, f"{cal.describe()}, {self._describe_gain(gain)}")
        self.captured.clear()
        self.error = ""
        self.publish()
        return rev

    def discard(self) -> None:
        """Forget the points captured (the saved calibration stays)."""
        self.captured.clear()
        self.error = ""
        self.publish()

    def forget(self, who: str = "panel") -> Revision | None:
        """Remove the saved calibration: the array's azimuths are used as heard."""
        rev = self._write({"points": [], "mic_array": "", "when": "", "gain_db": 0.0}, who, "removed")
        self.publish()
        return rev

    def _write(self, keys: dict[str, Any], who: str, what: str) -> Revision | None:
        def with_keys(cfg: Config) -> Config:
            section = CalibrationConfig.model_validate({**cfg.calibration.model_dump(), **keys})
            return cfg.model_copy(update={"calibration": section})

        live = with_keys(self.live())
        note = f"mic array calibration: {what}"
        if self.store is None:
            if self.on_config is not None:
                self.on_config(live)
            return None
        on_config = self.on_config

        def apply(_: Config) -> list[str]:  # the running box keeps its own devices first
            return on_config(live) if on_config is not None else []

        rev = self.store.write(with_keys(self.store.current), who, apply, note=note)
        if rev.changed:
            log.info("config revision %d by %s: %s", rev.id, who, note)
        return rev

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> CalibrationState:
        live = self.live()
        saved = (self.store.current if self.store is not None else live).calibration
        cal = calibration_of(live.model_copy(update={"calibration": saved}))  # None: not for the running array
        any_cal = cal if cal is not None or not saved.points else fit(saved.points, saved.limits)
        proposal, ok = self.proposal()
        return CalibrationState(
            self.clock.now(),
            calibrated=bool(saved.points),
            in_use=cal is not None,
            when=saved.when,
            mic_array=saved.mic_array,
            rotation_deg=None if any_cal is None else any_cal.rotation_deg,
            scale=None if any_cal is None else any_cal.scale,
            points=tuple(saved.points),
            capturing=self.capturing,
            until=self._window[1] if self._collector is not None else 0.0,
            blocks=0 if self._collector is None else len(self._collector.azimuths),
            captured=tuple(p for n in POINT_NAMES if (p := self.captured.get(n)) is not None),
            proposal=proposal,
            proposal_ok=ok,
            error=self.error,
            gain_db=saved.gain_db,
        )

    def publish(self) -> CalibrationState:
        state = self.state()
        self.events.publish(state)
        return state

    def prompts(self) -> dict[str, str]:
        return dict(PROMPTS)
