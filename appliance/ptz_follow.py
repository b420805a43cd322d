"""A PTZ camera that shows the director's shot.

The director frames on the main (wide) camera: each :class:`~appliance.messages.Shot` is a crop of its
picture. A PTZ head beside it (``[ptz_follow]``, ``[ptz.NAME]``) can show the same view optically, at its
full resolution. Two parts:

- :class:`PtzPlanner`, pure (a shot and its time in, a target or nothing out; no clock, no I/O): where the
  head must point and how far it must zoom to show a crop (:func:`target_of`), and *when* to move it, as a
  good camera operator would: on a cut at once; on the director's slow glides only once the target is off by
  more than ``deadband`` (a fraction of the head's current field of view) and not more often than every
  ``min_interval_s``; never the same position twice.
- :class:`PtzFollower`, the async edge: takes each shot (:meth:`PtzFollower.offer`, from the frame loop,
  never blocking it, or :meth:`PtzFollower.follow` on the box's event bus), keeps one move in flight (the
  newest target wins) and runs as a supervised device (``DeviceStatus`` ``ptz``): a head that does not
  answer is reported lost and retried, never a crash or a hang.

Geometry: the head is taken to sit at the wide camera (parallax ignored: at a few metres a head 20 cm away
is off by a few degrees at most), its home position pointing at (``home_azimuth_deg``,
``home_elevation_deg``) of the wide camera's frame. A crop's centre is a ray of the wide camera
(:class:`common.geometry.PinholeCamera`, square pixels); pan and tilt are the head's angles to that ray in
the order :func:`drivers.ptz.base.room_direction` uses (tilt, then pan); the zoom gives a horizontal field of
view equal to the angle the crop spans (:meth:`drivers.ptz.base.PtzSection.hfov_at` inverted).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from appliance.config import Config, PtzFollowConfig
from appliance.messages import CameraInfo, DeviceStatus, Shot
from appliance.supervisor import supervise
from common.clock import SYSTEM_CLOCK, Clock
from common.geometry import PinholeCamera
from drivers.ptz.base import PtzControl, PtzError, PtzPosition, PtzRefused, PtzSection
from drivers.registry import DriverContext, open_device

log = logging.getLogger(__name__)

Crop = tuple[float, float, float, float]

# two positions closer than this are the same (well below a VISCA unit: 1/14.4 degree, zoom 1/16384)
SAME_DEG = 0.01
SAME_ZOOM = 1e-4


# --- geometry ---------------------------------------------------------------------------------------------


def _ray(cam: PinholeCamera, u: float, v: float) -> tuple[float, float, float]:
    """The unit ray of the wide camera through pixel (u, v): x right, y up, z forward."""
    x, y, z = (u - cam.cx) / cam.focal_px, (cam.cy - v) / cam.focal_px, 1.0
    n = math.sqrt(x * x + y * y + z * z)
    return x / n, y / n, z / n


def _to_head(
    ray: tuple[float, float, float], home_azimuth_deg: float, home_elevation_deg: float
) -> tuple[float, float, float]:
    """A ray of the wide camera in the head's frame (its home position on z): the inverse of rotating by the
    home pose (tilt about x, then pan about y, as :func:`drivers.ptz.base.room_direction`)."""
    x, y, z = ray
    p = math.radians(home_azimuth_deg)
    x, z = x * math.cos(p) - z * math.sin(p), x * math.sin(p) + z * math.cos(p)
    t = math.radians(home_elevation_deg)
    y, z = y * math.cos(t) - z * math.sin(t), y * math.sin(t) + z * math.cos(t)
    return x, y, z


def _angles(ray: tuple[float, float, float]) -> tuple[float, float]:
    """(pan, tilt) in degrees that put a ray at the head's picture centre."""
    x, y, z = ray
    return math.degrees(math.atan2(x, z)), math.degrees(math.asin(max(-1.0, min(1.0, y))))


def _angle_between(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    dot = sum(p * q for p, q in zip(a, b, strict=True))
    return math.degrees(math.acos(max(-1.0, min(1.0, dot))))


def crop_span_deg(cam: PinholeCamera, crop: Crop) -> float:
    """The angle (degrees) a crop spans from its left edge to its right edge, along its middle row."""
    x, y, w, h = crop
    v = y + h / 2.0
    return _angle_between(_ray(cam, x, v), _ray(cam, x + w, v))


def zoom_for_hfov(ptz: PtzSection, hfov_deg: float) -> float:
    """The normalised zoom (0 widest .. 1 tightest, clamped) whose field of view is ``hfov_deg``: the inverse
    of :meth:`PtzSection.hfov_at`."""
    if ptz.optical_zoom <= 1.0 or hfov_deg >= ptz.hfov_wide_deg:
        return 0.0
    mag = math.tan(math.radians(ptz.hfov_wide_deg) / 2.0) / math.tan(math.radians(max(hfov_deg, 1e-3)) / 2.0)
    return min(1.0, max(0.0, math.log(mag) / math.log(ptz.optical_zoom)))


def target_of(
    crop: Crop, cam: PinholeCamera, ptz: PtzSection, home_azimuth_deg: float = 0.0, home_elevation_deg: float = 0.0
) -> PtzPosition:
    """The head's (pan, tilt, zoom) that shows ``crop`` (x, y, w, h in the wide camera's pixels), clamped to
    the head's travel and zoom range."""
    x, y, w, h = crop
    centre = _to_head(_ray(cam, x + w / 2.0, y + h / 2.0), home_azimuth_deg, home_elevation_deg)
    pan, tilt = _angles(centre)
    return ptz.limits.clamp(pan, tilt, zoom_for_hfov(ptz, crop_span_deg(cam, crop)))


def view_error_deg(a: PtzPosition, b: PtzPosition) -> float:
    """How far apart (degrees) the picture centres of two head positions are."""

    def ray(p: PtzPosition) -> tuple[float, float, float]:
        pan, tilt = math.radians(p.pan_deg), math.radians(p.tilt_deg)
        return math.cos(tilt) * math.sin(pan), math.sin(tilt), math.cos(tilt) * math.cos(pan)

    return _angle_between(ray(a), ray(b))


def same_position(a: PtzPosition | None, b: PtzPosition | None) -> bool:
    if a is None or b is None:
        return False
    return (
        abs(a.pan_deg - b.pan_deg) < SAME_DEG
        and abs(a.tilt_deg - b.tilt_deg) < SAME_DEG
        and abs(a.zoom - b.zoom) < SAME_ZOOM
    )


# --- when to move -----------------------------------------------------------------------------------------


class PtzPlanner:
    """Turns the director's shots into head moves. Pure: :meth:`plan` takes a shot (its ``t`` is the time)
    and returns the position to command now, or None.

    ``commanded`` is what was last asked of the head (None: unknown, e.g. after a failure; the next shot
    then moves it at once); ``desired`` what the latest shot wants."""

    def __init__(
        self,
        ptz: PtzSection,
        follow: PtzFollowConfig,
        camera: PinholeCamera,
    ) -> None:
        self.ptz, self.follow, self.camera = ptz, follow, camera
        self.commanded: PtzPosition | None = None
        self.desired: PtzPosition | None = None
        self._last_t = -math.inf
        self.reason = ""  # why the last command was given (first, cut, glide)

    def set_camera(self, camera: PinholeCamera) -> None:
        """The wide camera's picture changed size or field of view: the next shot moves the head at once."""
        if camera != self.camera:
            self.camera = camera
            self.commanded = None

    def target(self, shot: Shot) -> PtzPosition:
        f = self.follow
        return target_of(shot.crop, self.camera, self.ptz, f.home_azimuth_deg, f.home_elevation_deg)

    def off_by(self, target: PtzPosition, current: PtzPosition) -> float:
        """How far ``target`` is from ``current``, as a fraction of the view at ``current``: the larger of the
        centres' distance over the field of view and the relative change of the view's width."""
        hfov = self.ptz.hfov_at(current.zoom)
        centre = view_error_deg(target, current) / hfov
        width = abs(
            math.log(math.tan(math.radians(self.ptz.hfov_at(target.zoom)) / 2) / math.tan(math.radians(hfov) / 2))
        )
        return max(centre, width)

    def plan(self, shot: Shot) -> PtzPosition | None:
        target = self.desired = self.target(shot)
        cur = self.commanded
        if same_position(target, cur):
            return None
        if cur is None:
            reason = "first"
        elif shot.cut:
            reason = "cut"
        elif self.off_by(target, cur) <= self.follow.deadband or shot.t - self._last_t < self.follow.min_interval_s:
            return None
        else:
            reason = "glide"
        self.commanded, self._last_t, self.reason = target, shot.t, reason
        return target

    def forget(self) -> None:
        """The head's position is not known any more (a move failed): the next shot moves it at once."""
        self.commanded = None

    def resume(self, t: float | None = None) -> PtzPosition | None:
        """The latest shot's target, to send to a head that has just come back; it counts as commanded."""
        if self.desired is not None:
            self.commanded = self.desired
            if t is not None:
                self._last_t = t
            self.reason = "resume"
        return self.desired


# --- the async edge ---------------------------------------------------------------------------------------


class PtzFollower:
    """Moves ``ptz`` with the director's shots through a :class:`PtzPlanner`, as a supervised device.

    :meth:`offer` is synchronous and cheap (the frame loop calls it with each shot); :meth:`run` keeps one
    move in flight and sends the newest target when it is done. Every move is bounded by ``move_timeout_s``
    on top of the driver's own timeout; a :class:`PtzError` (or any failure) ends the run: ``DeviceStatus``
    ``lost`` with the reason, a retry after ``retry_s`` (doubling while it keeps failing), and on return the
    latest target at once. A move the head refuses (:class:`PtzRefused`: it answered, e.g. "command not
    executable" beyond its travel) is not a loss: it is logged and reported (``running``, the refusal as the
    detail, counter ``refused``), the connection kept, and the next target sent."""

    def __init__(
        self,
        ptz: PtzControl,
        planner: PtzPlanner,
        report: Callable[[DeviceStatus], None],
        clock: Clock = SYSTEM_CLOCK,
        retry_s: float = 2.0,
        move_timeout_s: float = 10.0,
        name: str = "ptz",
    ) -> None:
        self.ptz, self.planner, self.report, self.clock = ptz, planner, report, clock
        self.retry_s, self.move_timeout_s, self.name = retry_s, move_timeout_s, name
        self._pending: PtzPosition | None = None
        self._wake = asyncio.Event()
        self.sent = 0  # moves the head accepted
        self.superseded = 0  # targets replaced by a newer one before they were sent
        self.position: PtzPosition | None = None  # the last move the head accepted
        self.connected = False
        self._moving = False
        self.refused = 0  # moves the head refused (it answered, it did not move)
        self.refusal = ""  # the last refusal, until a move is accepted again

    @classmethod
    def from_config(
        cls, cfg: Config, ptz: PtzControl, report: Callable[[DeviceStatus], None], clock: Clock = SYSTEM_CLOCK
    ) -> PtzFollower:
        """The follower ``[ptz_follow]`` describes, moving ``ptz`` (opened from its ``[ptz.NAME]``)."""
        f = cfg.ptz_follow
        name = cfg.followed_ptz
        if name is None:
            raise ValueError("[ptz_follow] needs a [ptz.NAME] section")
        c = cfg.camera
        planner = PtzPlanner(cfg.ptz[name], f, PinholeCamera(c.width, c.height, c.hfov_deg))
        return cls(ptz, planner, report, clock, retry_s=f.retry_s)

    async def serve(self, events: Any) -> None:
        """:meth:`run` and :meth:`follow` on ``events`` together, until cancelled (what the box runs)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.run())
            tg.create_task(self.follow(events))

    def offer(self, shot: Shot) -> PtzPosition | None:
        """Take one shot of the director; returns the target it asks the head for, if any (sent by
        :meth:`run`; a target not yet sent is replaced by a newer one)."""
        target = self.planner.plan(shot)
        if target is not None:
            if self._pending is not None:
                self.superseded += 1
            self._pending = target
            self._wake.set()
        return target

    @property
    def idle(self) -> bool:
        """No move in flight and none waiting."""
        return self._pending is None and not self._moving

    def set_camera(self, width: int, height: int, hfov_deg: float) -> None:
        self.planner.set_camera(PinholeCamera(width, height, hfov_deg))

    async def follow(self, events: Any) -> None:
        """Take the shots (and the wide camera's geometry) published on an :class:`EventBus` until cancelled."""
        q = events.subscribe()
        try:
            while True:
                kind, payload = await q.get()
                try:
                    if kind == Shot.KIND:
                        self.offer(Shot.from_json(payload))
                    elif kind == CameraInfo.KIND:
                        info = CameraInfo.from_json(payload)
                        self.set_camera(info.width, info.height, info.hfov_deg)
                except (KeyError, TypeError, ValueError) as e:  # a bad message must not stop the head
                    log.warning("ptz follow: skipped a %s message: %s", kind, e)
        finally:
            events.unsubscribe(q)

    async def run(self) -> None:
        """Until cancelled: reports as device ``name`` and retries a head that fails."""
        await supervise(self.name, self._drive, self.report, self.clock, self.retry_s)

    async def _bounded(self, what: str, call: Any) -> Any:
        try:
            return await asyncio.wait_for(call, self.move_timeout_s)
        except TimeoutError:
            raise PtzError(f"[ptz.{self.ptz.name}]: {what} took longer than {self.move_timeout_s:g} s") from None

    def _say(self, detail: str) -> None:
        """Report the head running, with ``detail`` (a refused move, or "" once moves are taken again)."""
        self.report(
            DeviceStatus(self.name, "running", detail=detail, t=self.clock.now(), counters={"refused": self.refused})
        )

    async def _drive(self, started: Callable[[], None]) -> None:
        try:
            await self._bounded("opening", self.ptz.open())
            self.position = await self._bounded("the position inquiry", self.ptz.position())  # does it answer?
            self.connected = True
            started()
            if self.planner.desired is not None:  # (back) on line: the newest shot's view, not a stale target
                self._pending = self.planner.resume()
            while True:
                if self._pending is None:
                    self._wake.clear()
                    await self._wake.wait()
                target, self._pending = self._pending, None
                if target is None or same_position(target, self.position):
                    continue
                self._moving = True
                try:
                    pos = await self._bounded("a move", self.ptz.move_to(target.pan_deg, target.tilt_deg, target.zoom))
                except PtzRefused as e:  # the head answered: keep it, try the next target
                    self._moving = False
                    self.refused += 1
                    self.refusal = str(e)
                    log.warning("%s: %s; the head stays, the next move is tried", self.name, e)
                    self._say(f"refused a move: {e}")
                    continue
                self._moving = False
                self.position = pos
                self.sent += 1
                if self.refusal:  # a move taken again: the status says so
                    self.refusal = ""
                    self._say("")
        except BaseException:
            self.connected = self._moving = False
            self.planner.forget()  # where the head is is not known: move it at once when it is back
            raise
        finally:
            await self.ptz.close()


def follower_from_config(
    cfg: Config, events: Any, context: DriverContext | None = None, clock: Clock = SYSTEM_CLOCK
) -> PtzFollower | None:
    """The PTZ camera ``[ptz_follow]`` names, opened through the driver registry (not connected yet: that is
    :meth:`PtzFollower.run`'s, which reports it on ``events``), or None when ``[ptz_follow]`` is off."""
    name = cfg.followed_ptz
    if not cfg.ptz_follow.enabled or name is None:
        return None
    ptz = open_device("ptz", name, cfg.ptz[name], context or DriverContext(clock=clock))
    return PtzFollower.from_config(cfg, ptz, events.publish, clock)
