"""The composition root: which devices, which detector, which hubs and the panel, put together and run.

``serve(cfg)`` runs the box on the devices its config names (found through :mod:`drivers.registry`);
``run_demo(scenario, cfg)`` is the same box on the simulated room's camera and mic array.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NoReturn

from appliance.box import RoomBox
from appliance.config import Config
from common.clock import SYSTEM_CLOCK, Clock
from common.errors import RoomboxError
from drivers.registry import DriverContext, open_device

log = logging.getLogger(__name__)


def run_demo(scenario: Path, cfg: Config, config_path: Path | None = None, refused: str | None = None) -> int:
    """``roombox demo``: the box on the simulated room, with the panel served at cfg.panel.

    The camera and the mic array it starts with are the scenario's (:func:`demo_config`); every other section
    comes from ``cfg``. Changes made through the config API are written to ``config_path`` (default
    ``$ROOMBOX_HOME/config.toml``, which ``roombox demo`` reads at its next start). ``refused``: why the saved
    config was refused at start, when ``cfg`` is the last good revision instead (health says so).
    """
    return asyncio.run(_serve(demo_config(scenario, cfg), SYSTEM_CLOCK, config_path, demo_kiosk=True, refused=refused))


def demo_config(scenario: Path, cfg: Config) -> Config:
    """``cfg`` with the scenario's camera and mic array (type ``simroom``) as ``main``, first in their
    sections. The other devices configured stay, for the panel to choose (before, they were dropped, and the
    next write of any key took them out of the file)."""
    from drivers.simroom.devices import sections_for

    cam, mics = sections_for(str(scenario))
    cameras = {"main": cam, **{k: v for k, v in cfg.cameras.items() if k != "main"}}
    mic_arrays = {"main": mics, **{k: v for k, v in cfg.mic_arrays.items() if k != "main"}}
    return cfg.model_copy(update={"cameras": cameras, "mic_arrays": mic_arrays})


def meeting_check(connector: Any) -> Callable[[], tuple[Literal["degraded"], str] | None]:
    """A health check of a meeting connector: degraded while it retries or has failed (it was asked to
    join and is not in), nothing to say otherwise (connected, or left on purpose)."""

    def check() -> tuple[Literal["degraded"], str] | None:
        if connector.state in ("retrying", "failed"):
            return "degraded", f"{connector.state}: {connector.detail}".rstrip(": ")
        last = getattr(connector, "last_error", "")
        if connector.state == "connecting" and last:  # an attempt after a failed one: not in the meeting yet
            return "degraded", f"connecting ({connector.detail}); the last attempt: {last}"
        return None

    return check


def serve(cfg: Config, config_path: Path | None = None, clock: Clock = SYSTEM_CLOCK, refused: str | None = None) -> int:
    """Run the box on the devices of ``cfg`` until SIGINT or SIGTERM; returns the exit code. Changes made
    through the config API are written to ``config_path`` (default ``$ROOMBOX_HOME/config.toml``)."""
    return asyncio.run(_serve(cfg, clock, config_path, refused=refused))


def refused_check(store: Any, reason: str) -> Callable[[], tuple[Literal["degraded"], str] | None]:
    """Health while the box runs on its last good config because the saved one was refused at start:
    degraded with the reason, until a config is written (the panel, the API, the fleet), which mends it."""
    started_at = store.latest_id() if store is not None else 0

    def check() -> tuple[Literal["degraded"], str] | None:
        if store is not None and store.latest_id() != started_at:
            return None
        return "degraded", reason

    return check


async def _serve(
    cfg: Config, clock: Clock, config_path: Path | None, demo_kiosk: bool = False, refused: str | None = None
) -> int:
    from appliance.logs import setup_from_config

    setup_from_config(cfg.log)  # first: mediapipe's and aiortc's chatter stays out of the box's log

    from appliance.control import sdnotify
    from drivers.audio.devices import wait_for_sound_system

    def waiting(why: str) -> None:
        log.warning("%s", why)
        sdnotify.notify_status(why)

    wait_for_sound_system(waiting)  # before mediapipe's import, which sets PortAudio up too

    from appliance.control import Control
    from appliance.control.kiosk import kiosk_link
    from appliance.control.metrics import HealthCheck, Metrics, add_metrics_routes
    from appliance.messages import MeetingStatus
    from appliance.perception.watch import FaceWatcher
    from appliance.program import program_from_config
    from appliance.ptz_follow import follower_from_config
    from appliance.room_controls import KEPT_FILE, SOURCE_KINDS, RoomControls, kept_volume, read_kept
    from appliance.streaming.connector import connectors_from_config
    from appliance.streaming.display import show_far_end
    from appliance.streaming.encoder import EncodedVideo
    from appliance.streaming.hub import AudioHub, EventBus, LatestFrame
    from appliance.streaming.janus import JanusPublisher
    from appliance.streaming.server import create_app
    from common.paths import home_dir

    ctx = DriverContext(clock=clock)
    cam_name, mic_name = next(iter(cfg.cameras)), next(iter(cfg.mic_arrays))
    with _starting():  # a device its config cannot open: StartFailed (the CLI tries earlier revisions)
        camera = open_device("camera", cam_name, cfg.camera, ctx)
        mic_array = open_device("mic_array", mic_name, cfg.mic_array, ctx)
    frames, audio, events, far_end_picture = LatestFrame(), AudioHub(), EventBus(), LatestFrame()
    video = EncodedVideo(frames, cfg.stream)  # encoded once per codec for the panel, WHIP and Janus alike

    def meeting_state(kind: str, state: str, detail: str) -> None:
        events.publish(MeetingStatus(kind, state, detail, clock.now()))

    connectors = connectors_from_config(cfg, video, audio, on_state=meeting_state)
    with _starting():
        playback = _playback(cfg, ctx, connectors)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with _starting():
        follower = follower_from_config(cfg, events, ctx, clock)  # [ptz_follow]: a PTZ head shows the shot
        # ... and its camera, when its [ptz.NAME] names one, is what the meeting sees while it and the head are live
        program = program_from_config(cfg, frames, ctx, None if follower is None else lambda: follower.connected, clock)
    with FaceWatcher.from_config(cfg.detector, cfg.camera.hfov_deg) as detector:
        box = RoomBox(
            cfg, camera, mic_array, detector, frames, audio, events, clock=clock, playback=playback, program=program
        )
        control = Control.for_box(cfg, on_config=box.on_config, config_path=config_path)
        kept = read_kept(home_dir() / KEPT_FILE)  # the mute and the volume before a restart
        if kept.get("muted"):  # before any meeting is joined: a restart does not open the room's microphones
            box.command({"cmd": "set_mute", "muted": True})
            log.info("microphones muted, as they were before the restart")
        config_volume = None if playback is None else round(playback.speaker.volume)
        volume = kept_volume(kept, config_volume)  # the panel's last, unless the config's changed since
        if playback is not None and volume is not None:
            playback.speaker.volume = float(volume)
        controls = RoomControls(  # the panel's commands: the box's, meetings, mute, volume, sources
            box.command,
            events,
            cfg,
            policy=lambda: box.step.policy,
            muted=lambda: box.muted,
            connectors=connectors,
            store=control.store,
            on_config=box.on_config,
            running=(cam_name, mic_name),
            clock=clock,
            on_volume=None if playback is None else lambda gain: setattr(playback.speaker, "volume", 100.0 * gain),
            volume=kept.get("volume", 100) if playback is None else round(playback.speaker.volume),
            kept_path=home_dir() / KEPT_FILE,
            config_volume=config_volume,
            switch=lambda kind, name, new: box.try_source(
                kind, name, open_device(_source_kind(kind), name, getattr(new, SOURCE_KINDS[kind])[name], ctx), new
            ),
        )
        controls.publish()
        from appliance.calibrator import Calibrator

        box.calibrator = Calibrator(  # the guided mic-array calibration (panel settings, /api/calibration)
            lambda: box.cfg, events, clock, store=control.store, on_config=box.on_config
        )
        box.calibrator.publish()
        app = create_app(
            frames,
            audio,
            events,
            cfg.stream,
            on_command=controls.command,
            control=control,
            video=video,
            display=far_end_picture,
            calibration=box.calibrator,
        )
        health = HealthCheck(events, frames)
        if refused is not None:
            log.error("%s", refused)
            health.add_check("config", refused_check(control.store, refused))
        for connector in connectors:  # a meeting the box should be in and is not: degraded, with the reason
            health.add_check(f"meeting {connector.kind}", meeting_check(connector))
        metrics = Metrics(events=events, frames=frames, audio=audio)
        box.timings = metrics  # the face detection's and the hearing's histograms
        add_metrics_routes(app, metrics, health)
        fleet = _fleet(cfg, events, control, box.on_config, health)
        async with _listening(app, cfg.panel.host, cfg.panel.port):
            if demo_kiosk:  # a token for this machine's browser only, never stored, gone with the demo
                _, token = control.auth.tokens.create(
                    "control", "demo kiosk", allowed_from=["127.0.0.1", "::1"], persist=False
                )
                print(
                    f"roombox: kiosk link (this browser only, while the demo runs) {kiosk_link(token, cfg.panel)}",
                    flush=True,
                )
            print(f"roombox: panel at http://{cfg.panel.host}:{cfg.panel.port}/", flush=True)
            tasks = [asyncio.create_task(box.run())]
            if follower is not None:
                tasks.append(asyncio.create_task(follower.serve(events)))
            if fleet is not None:
                tasks.append(asyncio.create_task(fleet.run()))
            where = f"panel at http://{cfg.panel.host}:{cfg.panel.port}/"
            sdnotify.notify_ready(where)
            tasks.append(asyncio.create_task(sdnotify.watchdog_loop(alive=lambda: not health.wedged())))
            tasks.append(asyncio.create_task(sdnotify.status_loop(lambda: _status_line(health.evaluate(), where))))
            for c in connectors:
                await c.start()
                if isinstance(c, JanusPublisher):  # the first other participant's picture on /display
                    tasks.append(asyncio.create_task(show_far_end(_first_far_end(c), far_end_picture)))
            await stop.wait()
            sdnotify.notify_stopping()
            for c in connectors:
                await c.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await video.close()
    return 0


class StartFailed(RoomboxError):
    """The box cannot start on its config: a device it names cannot be opened as configured (a file camera
    without its file, ...), or the panel cannot listen where it says. ``roombox run`` and ``demo`` then try
    the config's earlier revisions (:func:`appliance.cli.start_or_fall_back`)."""


@contextlib.contextmanager
def _starting() -> Iterator[None]:
    try:
        yield
    except StartFailed:
        raise
    except (ValueError, OSError, RoomboxError) as e:
        raise StartFailed(str(e) or type(e).__name__) from e


@contextlib.asynccontextmanager
async def _listening(app: Any, host: str, port: int) -> AsyncIterator[None]:
    """Serve ``app`` while the block runs; an address it cannot listen on is StartFailed."""
    from appliance.streaming.server import run_server

    server = run_server(app, host, port)
    deadline = time.monotonic() + (BIND_WAIT_S if _booting() else 0.0)
    said = False
    while True:
        try:
            await server.start()
            break
        except OSError as e:
            await server.stop()
            # an address not on any interface yet, a name not resolved yet: at boot the network may come later
            if (e.errno == errno.EADDRNOTAVAIL or isinstance(e, socket.gaierror)) and time.monotonic() < deadline:
                if not said:
                    log.warning("[panel] %s is not an address of this machine yet: waiting for the network", host)
                    said = True
                await asyncio.sleep(2.0)
                continue
            _bind_failed(e, host, port)
    try:
        yield
    finally:
        await server.stop()


BIND_WAIT_S = 60.0  # how long the box waits at boot for its panel's address
BOOT_S = 300.0  # the machine up for less than this: booting


def _booting() -> bool:
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            return float(f.read().split()[0]) < BOOT_S
    except (OSError, ValueError, IndexError):
        return False


def _bind_failed(e: OSError, host: str, port: int) -> NoReturn:
    if e.errno == errno.EADDRINUSE:  # another process has it (the box before, still stopping): not the config's
        raise OSError(f"[panel] cannot listen on {host}:{port}: the address is in use by another process") from e
    raise StartFailed(f"[panel] cannot listen on {host}:{port}: {e.strerror or e}") from e


def _status_line(report: dict[str, Any], where: str) -> str:
    """systemd's STATUS= from the health report: ``ok; panel at ...`` or ``degraded: <the reasons>``."""
    reasons = report.get("reasons") or []
    if report.get("status") == "ok" or not reasons:
        return f"{report.get('status', 'ok')}; {where}"
    return "; ".join(str(r) for r in reasons)


def _source_kind(kind: str) -> Literal["camera", "mic_array"]:
    if kind not in ("camera", "mic_array"):
        raise ValueError(f"no source kind {kind!r}: camera or mic_array")
    return "camera" if kind == "camera" else "mic_array"


def _playback(cfg: Config, ctx: DriverContext, connectors: list[Any]) -> Any:
    """The far ends' sound on the first ``[speakers.NAME]`` (None without one), at the mic array's rate."""
    if not cfg.speakers:
        return None
    from appliance.streaming.playback import Playback, far_end_audio

    name, section = next(iter(cfg.speakers.items()))
    speaker = open_device("speaker", name, section, ctx)
    return Playback(speaker, cfg.mic_array.sample_rate, lambda: far_end_audio(connectors), ctx.clock)


def _first_far_end(janus: Any) -> Callable[[], Any]:
    return lambda: next((f.frames for f in janus.far_ends.values()), None)


def _fleet(cfg: Config, events: Any, control: Any, on_config: Callable[[Config], list[str]], health: Any) -> Any:
    """The MQTT fleet client when ``[mqtt] enabled``: a desired config goes through the same store as the API
    (validated, written atomically, a revision, applied live where it can be)."""
    if not cfg.mqtt.enabled:
        return None
    from appliance.control.mqtt import FleetClient
    from appliance.control.mqtt_link import FleetError
    from common.paths import home_dir

    def apply(new: Config) -> Any:
        return control.store.write(new, "mqtt", on_config)  # its revision: the id and what waits for a restart

    try:
        fleet = FleetClient(
            cfg.mqtt,
            events,
            on_config=apply,
            current_config=lambda: control.config,
            state_dir=home_dir(),  # mqtt-desired.sha256, mqtt-retained.json (the topics to clear after an id change)
        )
    except FleetError as e:  # e.g. a CA file gone: the box runs on, without its fleet link, and says so
        log.error("fleet link not started: %s", e)
        reason = f"fleet link not started: {e}"
        health.add_check("mqtt", lambda: ("degraded", reason))
        return None
    health.add_check("mqtt", fleet.health)
    if control.store is not None:  # the revision the fleet is told of follows every change, not only its own
        fleet.revision = control.store.latest_id()
        control.store.on_change.append(lambda rev: fleet.config_written(rev.id))
    return fleet
