"""Prometheus metrics at ``/metrics`` and a health verdict at ``/api/health`` (ok, degraded or dead).

One :class:`Metrics` object per box holds one ``CollectorRegistry``. Most figures are read when Prometheus
scrapes, from what the box already keeps: the event bus's latest ``stats`` and ``device:*`` payloads, the
``LatestFrame`` and ``AudioHub`` counters, the panel server's viewers and panels and their WebRTC senders'
byte counts (and the room display's peers, when it has one). Two timings need the box to report them:
``metrics.observe_detection(seconds)`` and ``metrics.observe_doa(seconds)`` (thread-safe). The process's CPU,
memory and file descriptors come from ``prometheus_client``'s process collector (``process_cpu_seconds_total``,
...).

The lead's wiring::

    metrics = Metrics(events=events, frames=frames, audio=audio)
    health = HealthCheck(events, frames)
    add_metrics_routes(app, metrics, health)     # app from streaming.server.create_app

Both need credentials with the ``read`` scope, as ``/api/status`` does (they tell as much: devices, viewers,
faces in the room), and a scrape starts work (each viewer's stats): Prometheus sends a ``read`` token with
``authorization: {credentials_file: ...}`` in its scrape config. ``/healthz`` stays open for liveness.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from appliance.control.guard import Control, default_control
from appliance.messages import DeviceState
from appliance.streaming.hub import AudioHub, EventBus, LatestFrame

log = logging.getLogger(__name__)

DEVICE_STATES: tuple[DeviceState, ...] = ("starting", "running", "lost", "retrying", "stopped")
# the box's "stats" payload (appliance.box.Counters): cumulative counts exported as counters
_STATS_COUNTERS = {
    "frames": ("roombox_frames_in", "Camera frames the box took in"),
    "detections": ("roombox_detections", "Face detections run"),
    "audio_blocks": ("roombox_audio_blocks_in", "Mic-array audio blocks the box took in"),
    "doa_blocks": ("roombox_doa_blocks", "Direction-of-arrival analysis blocks"),
    "audio_overflows": ("roombox_audio_overflows", "Mic-array driver buffer overruns (samples lost at the card)"),
    "audio_blocks_dropped": ("roombox_audio_blocks_dropped", "Mic-array blocks dropped: the box did not take them"),
    "audio_gaps": ("roombox_audio_gaps", "Gaps in the mic array's stream (a stall or a lost block)"),
}
_DETECTION_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
_DOA_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


def device_states(events: EventBus) -> dict[str, str]:
    """Each device's latest state as published on the bus (``device:NAME`` payloads)."""
    return {name: state for name, (state, _) in device_details(events).items()}


def device_details(events: EventBus) -> dict[str, tuple[str, str]]:
    """Each device's latest state and its detail (why it was lost, when it is tried again)."""
    out: dict[str, tuple[str, str]] = {}
    for key, payload in events.snapshot().items():
        if key.startswith("device:") and isinstance(payload.get("state"), str):
            detail = payload.get("detail")
            name = str(payload.get("name") or key.split(":", 1)[1])
            out[name] = (payload["state"], detail if isinstance(detail, str) else "")
    return out


class _ScrapeCollector(Collector):
    """Figures read at scrape time from the box's own counters."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        if m.frames is not None:
            yield CounterMetricFamily(
                "roombox_frames_out", "Framed pictures published to the viewers", value=m.frames.published
            )
            yield CounterMetricFamily(
                "roombox_frames_dropped",
                "Framed pictures no viewer ever took (out of the kept history)",
                value=m.frames.dropped,
            )
        if m.audio is not None:
            yield CounterMetricFamily(
                "roombox_audio_chunks_out", "Audio chunks published to the viewers", value=m.audio.published
            )
            yield CounterMetricFamily(
                "roombox_audio_chunks_dropped", "Audio chunks a viewer missed", value=m.audio.dropped
            )
        if m.events is not None:
            ev = m.events
            yield CounterMetricFamily(
                "roombox_events_published", "Messages published on the event bus", value=ev.published
            )
            yield CounterMetricFamily(
                "roombox_events_dropped", "Event-bus messages a slow subscriber lost", value=ev.dropped
            )
            yield GaugeMetricFamily("roombox_event_subscribers", "Event-bus subscribers", value=ev.subscribers)
            snap = ev.snapshot()
            stats = snap.get("stats", {})
            for key, (name, doc) in _STATS_COUNTERS.items():
                if isinstance(stats.get(key), int | float):
                    yield CounterMetricFamily(name, doc, value=float(stats[key]))
            if isinstance(stats.get("detection_ms"), int | float):
                yield GaugeMetricFamily(
                    "roombox_detection_recent_seconds",
                    "Face detection time, recent average",
                    value=float(stats["detection_ms"]) / 1000.0,
                )
            states = GaugeMetricFamily(
                "roombox_device_state", "1 for the state each device is in", labels=["device", "state"]
            )
            for dev, state in sorted(device_states(ev).items()):
                for s in DEVICE_STATES:
                    states.add_metric([dev, s], 1.0 if state == s else 0.0)
            yield states
            shot = snap.get("shot", {})
            if isinstance(shot.get("mode"), str):
                g = GaugeMetricFamily("roombox_shot_mode", "1 for the director's current shot mode", labels=["mode"])
                for mode in (
                    "speaker",
                    "group",
                    "wide",
                    *([shot["mode"]] if shot["mode"] not in ("speaker", "group", "wide") else []),
                ):
                    g.add_metric([mode], 1.0 if shot["mode"] == mode else 0.0)
                yield g
            faces = snap.get("faces", {})
            if isinstance(faces.get("faces"), list):
                yield GaugeMetricFamily("roombox_faces", "Faces in the latest detection", value=len(faces["faces"]))
        viewers, displays, panels = m.viewers(), m.displays(), m.panels()
        if viewers is not None:
            yield GaugeMetricFamily("roombox_viewers", "WebRTC viewers (peer connections)", value=viewers)
        if displays is not None:
            yield GaugeMetricFamily("roombox_displays", "Room displays (peer connections to /display)", value=displays)
        if panels is not None:
            yield GaugeMetricFamily("roombox_panels", "Panels connected to the event WebSocket", value=panels)


@dataclass
class _PeerBytes:
    seen: dict[str, int] = field(default_factory=dict)  # bytes sent so far, by stats id


class Metrics:
    """The box's metrics in one ``CollectorRegistry`` (``metrics.registry``).

    Pass what the box has (any may be None); ``viewers``/``displays``/``panels`` are filled in by
    :func:`add_metrics_routes` from the panel server when it has them.
    """

    def __init__(
        self,
        events: EventBus | None = None,
        frames: LatestFrame | None = None,
        audio: AudioHub | None = None,
        process: bool = True,
    ) -> None:
        self.events, self.frames, self.audio = events, frames, audio
        self.registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, open fds
        self.detection_seconds = Histogram(
            "roombox_detection_seconds",
            "Face detection time per picture",
            buckets=_DETECTION_BUCKETS,
            registry=self.registry,
        )
        self.doa_seconds = Histogram(
            "roombox_doa_seconds",
            "Voice activity and DOA time per audio block",
            buckets=_DOA_BUCKETS,
            registry=self.registry,
        )
        self.stream_bytes = Counter(
            "roombox_stream_sent_bytes", "RTP bytes sent to the viewers", ["kind"], registry=self.registry
        )
        self.stream_bitrate = Gauge(
            "roombox_stream_bitrate_bps",
            "RTP bitrate to all viewers since the last scrape (bits/s)",
            ["kind"],
            registry=self.registry,
        )
        self.scrape_seconds = Gauge(
            "roombox_metrics_scrape_seconds", "Time the last scrape took", registry=self.registry
        )
        self.viewers: Callable[[], int | None] = lambda: None
        self.displays: Callable[[], int | None] = lambda: None
        self.panels: Callable[[], int | None] = lambda: None
        self.peers: Callable[[], Iterable[Any]] = lambda: ()
        self._peer_bytes: weakref.WeakKeyDictionary[Any, _PeerBytes] = weakref.WeakKeyDictionary()
        self._last_sample: float | None = None
        self.registry.register(_ScrapeCollector(self))

    # -- what the box reports --------------------------------------------------------------------
    def observe_detection(self, seconds: float) -> None:
        """One face detection took ``seconds`` (any thread)."""
        self.detection_seconds.observe(seconds)

    def observe_doa(self, seconds: float) -> None:
        """Voice activity + DOA over one audio block took ``seconds``."""
        self.doa_seconds.observe(seconds)

    # -- scrape ------------------------------------------------------------------------------------
    async def sample_stream(self, timeout_s: float = 1.0) -> None:
        """Add the bytes each viewer's RTP senders sent since the last call; set the bitrate."""
        now = time.monotonic()
        sent: dict[str, int] = {"video": 0, "audio": 0}
        for pc in list(self.peers()):
            try:
                report = await asyncio.wait_for(pc.getStats(), timeout_s)
            except Exception as e:
                log.debug("no stats from a viewer: %s", e)
                continue
            seen = self._peer_bytes.setdefault(pc, _PeerBytes()).seen
            for sid, s in report.items():
                if getattr(s, "type", "") != "outbound-rtp":
                    continue
                kind = str(getattr(s, "kind", "") or "video")
                total = int(getattr(s, "bytesSent", 0) or 0)
                delta = max(0, total - seen.get(sid, 0))
                seen[sid] = total
                sent[kind] = sent.get(kind, 0) + delta
        for kind, delta in sent.items():
            self.stream_bytes.labels(kind).inc(delta)
            if self._last_sample is not None and now > self._last_sample:
                self.stream_bitrate.labels(kind).set(8.0 * delta / (now - self._last_sample))
        self._last_sample = now

    async def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        began = time.perf_counter()
        await self.sample_stream()
        self.scrape_seconds.set(time.perf_counter() - began)
        return generate_latest(self.registry)


HealthStatus = Literal["ok", "degraded", "dead"]
_RANK: dict[HealthStatus, int] = {"ok": 0, "degraded": 1, "dead": 2}
Check = Callable[[], "tuple[HealthStatus, str] | None"]


class HealthCheck:
    """Tells a box that works (ok) from one that works partly (degraded) from one that cannot do its job
    (dead).

    - dead: no framed picture for ``dead_s`` (counted from start, or from the last picture);
    - degraded: a device not running, no framed picture for ``stale_s``, or a check added with
      :meth:`add_check` says so (e.g. the fleet's MQTT link is down);
    - ok: otherwise.

    :meth:`wedged` is the narrower verdict for systemd's watchdog: the camera says it runs, yet nothing
    has been framed for ``dead_s``, so restarting the process may help (an unplugged camera is not wedged:
    the supervisor already retries it).
    """

    def __init__(
        self,
        events: EventBus,
        frames: LatestFrame | None,
        clock: Callable[[], float] = time.monotonic,
        stale_s: float = 5.0,
        dead_s: float = 30.0,
    ) -> None:
        if not 0 < stale_s <= dead_s:
            raise ValueError("expected 0 < stale_s <= dead_s")
        self.events, self.frames, self.clock = events, frames, clock
        self.stale_s, self.dead_s = stale_s, dead_s
        self.started = clock()
        self._published = frames.published if frames is not None else 0
        self._checks: dict[str, Check] = {}

    def add_check(self, name: str, check: Check) -> None:
        """``check()`` returns ``(status, detail)`` or None (nothing to say); an exception counts as dead."""
        self._checks[name] = check

    def _picture_age(self) -> float | None:
        """Seconds since the last framed picture was put (from start if none yet); None without frames. The
        pictures' own clock (``LatestFrame(clock)``) must be this check's. (Before, the age counted from the
        request that first saw a new picture: a monitor asking every minute was told 0 s about a box whose
        pictures had stopped 45 s before.)"""
        if self.frames is None:
            return None
        self._published = self.frames.published
        at = self.frames.put_at
        return self.clock() - (self.started if at is None else max(at, self.started))

    def wedged(self) -> bool:
        age = self._picture_age()
        running = [s == "running" for n, s in device_states(self.events).items() if n.startswith("camera")]
        return age is not None and age > self.dead_s and bool(running) and all(running)

    def evaluate(self) -> dict[str, Any]:
        """``{"status": "ok"|"degraded"|"dead", "reasons": [...], "devices": {...}, "uptime_s", ...}``."""
        status: HealthStatus = "ok"
        reasons: list[str] = []

        def worse(s: HealthStatus, why: str) -> None:
            nonlocal status
            reasons.append(f"{s}: {why}")
            if _RANK[s] > _RANK[status]:
                status = s

        details = device_details(self.events)
        devices = {name: state for name, (state, _) in details.items()}
        room = self.events.snapshot().get("room") or {}
        for name, (state, detail) in sorted(details.items()):
            if state != "running":  # with the reason, and which of the configured devices it is
                which = room.get(name) if name in ("camera", "mic_array") else None
                what = f"{name} {which!r}" if isinstance(which, str) and which else name
                worse("degraded", f"{what} is {state}: {detail}" if detail else f"{what} is {state}")
        age = self._picture_age()
        out: dict[str, Any] = {}
        if age is not None:
            out["frames"] = {"published": self._published, "age_s": round(age, 2)}
            if age > self.dead_s:
                worse("dead", f"no framed picture for {age:.0f} s")
            elif age > self.stale_s:
                worse("degraded", f"no framed picture for {age:.1f} s")
        for name, check in self._checks.items():
            try:
                verdict = check()
            except Exception as e:
                verdict = ("dead", f"check failed: {type(e).__name__}: {e}")
            if verdict is not None:
                s, detail = verdict
                if s != "ok":
                    worse(s, f"{name}: {detail}")
        return {
            "status": status,
            "reasons": reasons,
            "devices": devices,
            "uptime_s": round(self.clock() - self.started, 1),
            **out,
        }


METRICS = web.AppKey("roombox_metrics", Metrics)
HEALTH = web.AppKey("roombox_health", HealthCheck)
CONTROL = web.AppKey("roombox_metrics_control", Control)


async def _metrics(request: web.Request) -> web.Response:
    request.app[CONTROL].require(request, "read")
    body = await request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"})


async def _health(request: web.Request) -> web.Response:
    request.app[CONTROL].require(request, "read")
    verdict = request.app[HEALTH].evaluate()
    return web.json_response(
        verdict, status=503 if verdict["status"] == "dead" else 200, headers={"Cache-Control": "no-store"}
    )


def add_metrics_routes(
    app: web.Application, metrics: Metrics, health: HealthCheck | None = None, control: Control | None = None
) -> None:
    """``GET /metrics`` (Prometheus text format) and, with ``health``, ``GET /api/health`` (200 ok, 200
    degraded, 503 dead; JSON), both for credentials with the ``read`` scope. Call before the app starts.
    Viewers, displays, panels, stream bytes and the credentials (``control``, unless given) come from the
    panel server's state when ``app`` is :func:`appliance.streaming.server.create_app`'s; else ``control``
    defaults to :func:`appliance.control.guard.default_control`."""
    from appliance.streaming.server import PARTS

    if control is None:
        control = app[PARTS].control if PARTS in app else default_control()
    app[CONTROL] = control
    if PARTS in app:
        parts = app[PARTS]
        metrics.viewers = lambda: len(parts.peers)
        metrics.displays = parts.displays
        metrics.panels = lambda: len(parts.sockets)
        metrics.peers = lambda: list(parts.peers)
    app[METRICS] = metrics
    app.router.add_get("/metrics", _metrics)
    if health is not None:
        app[HEALTH] = health
        app.router.add_get("/api/health", _health)
