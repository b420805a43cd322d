"""Fleet control over MQTT: the box reports to a broker and takes its desired config from it.

Topics, under ``<topic_prefix>/<box_id>/``:

- ``availability`` (retained): ``online`` while connected; the broker publishes ``offline`` (the last will)
  when the connection dies without a goodbye; a clean stop publishes ``offline`` itself.
- ``status`` (retained, JSON): devices and their states, the shot, faces, the config revision and the last
  config error; sent when something in it changes (at most once a second) and every ``telemetry_s``.
- ``telemetry`` (JSON): the box's counters every ``telemetry_s``.
- ``config/set`` (subscribed): a desired config, the whole document, as a JSON object or TOML text, or as
  ``{"id": "...", "config": {...}}`` so that the reply carries the id. It is validated by the same model as
  the file (``appliance.config.parse_config``). When it has no ``[mqtt]`` section the box keeps its own, so a
  fleet-wide document need not carry each box's id and credentials. An empty message (how MQTT clears a
  retained one) asks nothing: the box keeps its config and acknowledges ``"cleared": true``; an empty
  document (``{}``, a TOML file of comments) is refused, since it would put every key back to its default.
- ``config/ack`` (JSON): ``{"id", "ok": true, "revision"}`` (with ``"restart_required": [keys]`` when some
  wait for a restart) or ``{"id", "ok": false, "error"}`` (the error
  names the key and the reason).

With ``ha_discovery``, Home Assistant's MQTT discovery entries (retained) describe a device with sensors for
the shot mode, the faces seen, each device's state and the config revision.

The lead's wiring::

    fleet = FleetClient(cfg.mqtt, events, on_config=apply, current_config=lambda: running_cfg)
    task = asyncio.create_task(fleet.run())     # reconnects by itself; cancel to stop (says offline)
    health.add_check("mqtt", fleet.health)

``apply(cfg)`` returns the new revision (or the store's ``Revision``, whose ``restart`` keys the ack names, or
an awaitable of either) and raises ``ValueError`` (e.g. ``ConfigError``) to refuse. ``fleet.revision = r``
tells the fleet about changes made elsewhere (API, panel). With ``applied_path``, the hash of the last desired
message applied is kept there: the same message again (a retained one, at each connection and each start) is
acknowledged ``"applied_before": true`` and not applied over a change made locally since.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from appliance.config import Config, parse_config
from appliance.control.settings import MqttConfig
from appliance.control.store import EMPTY_CONFIG
from appliance.streaming.hub import EventBus
from common.atomic import write_atomic
from common.errors import RoomboxError
from common.settings import parse_toml

log = logging.getLogger(__name__)

MAX_DESIRED_BYTES = 256 * 1024
Revision = str | int
# the new revision, or an object with ``id`` and ``restart`` (the store's), or an awaitable of either
OnConfig = Callable[[Config], Any]


class FleetError(RoomboxError, ValueError):
    """An [mqtt] section that cannot be used (a missing password file, ...)."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("roombox")
    except Exception:
        return "unknown"


def read_password(cfg: MqttConfig, environ: dict[str, str] | None = None) -> str | None:
    """The broker password: the first line of ``password_file``, else ``$<password_env>``, else None."""
    if cfg.password_file:
        try:
            with open(cfg.password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as e:
            raise FleetError(f"[mqtt.password_file] {cfg.password_file}: {e.strerror or e}") from None
    env = os.environ if environ is None else environ
    return env.get(cfg.password_env) or None


def _honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop. Python 3.11's ``asyncio.wait_for`` (which aiomqtt
    awaits in every publish) loses a cancellation that arrives as the publish completes; the task stays
    "cancelling" and would otherwise never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails. paho-mqtt wraps and handshakes a socket of
    its own and drops it unclosed when the broker's certificate is refused (a ResourceWarning and a
    descriptor left to the garbage collector on every attempt)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except (ssl.SSLError, OSError):
            self.close()
            raise


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context for ``cfg`` (None without TLS); a bad file raises FleetError naming the key."""
    if not cfg.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise FleetError(f"[mqtt.ca_file] {cfg.ca_file}: {e}") from None
    ctx.sslsocket_class = _ClosingSSLSocket
    if cfg.cert_file:
        try:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        except (OSError, ssl.SSLError) as e:
            raise FleetError(f"[mqtt.cert_file] {cfg.cert_file} / {cfg.key_file}: {e}") from None
    return ctx


def decode_desired(payload: bytes) -> tuple[dict[str, Any], Any]:
    """A desired-config message as (document, request id). Raises ValueError saying what is wrong."""
    if len(payload) > MAX_DESIRED_BYTES:
        raise ValueError(f"desired config too large: {len(payload)} bytes (at most {MAX_DESIRED_BYTES})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("desired config is not UTF-8 text") from None
    request_id: Any = None
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
        else:
            doc = parse_toml(text)
    except RecursionError:
        raise ValueError("desired config is nested too deeply") from None
    except ValueError as e:  # TomlError and JSON's errors
        raise ValueError(f"desired config is neither a JSON object nor TOML: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("desired config must be a JSON object or a TOML document")
    if isinstance(doc.get("config"), dict):  # the envelope: {"id": ..., "config": {...}}
        extra = set(doc) - {"id", "config"}
        if extra:
            raise ValueError(f"desired config envelope has unknown keys: {', '.join(sorted(extra))}")
        request_id = doc.get("id")
        if request_id is not None and not isinstance(request_id, str | int):
            raise ValueError("desired config envelope: id must be a string or an integer")
        doc = doc["config"]
    if not doc:
        raise ValueError(f"desired config refused: {EMPTY_CONFIG}")
    return doc, request_id


class FleetClient:
    """The box's MQTT link. ``await run()`` until cancelled; see the module's doc for topics and wiring."""

    def __init__(
        self,
        cfg: MqttConfig,
        events: EventBus | None = None,
        on_config: OnConfig | None = None,
        current_config: Callable[[], Config] | None = None,
        telemetry: Callable[[], dict[str, Any]] | None = None,
        retry_min_s: float = 1.0,
        timeout_s: float = 10.0,
        applied_path: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.events = events
        self.on_config = on_config
        self.current_config = current_config
        self.telemetry = telemetry
        self.retry_min_s = retry_min_s
        self.timeout_s = timeout_s
        self.box_id = cfg.resolved_box_id()
        self.base = f"{cfg.topic_prefix}/{self.box_id}"
        self.topic_availability = f"{self.base}/availability"
        self.topic_status = f"{self.base}/status"
        self.topic_telemetry = f"{self.base}/telemetry"
        self.topic_desired = f"{self.base}/config/set"
        self.topic_ack = f"{self.base}/config/ack"
        self.password = read_password(cfg)
        self.tls = tls_context(cfg)
        self.version = _version()
        self.revision: Revision | None = None
        self.config_error: str | None = None
        self.connected = False
        self._link_up = False  # whether the session that just ended had connected (for the log)
        self.connections = 0
        self.last_error: str | None = None
        self._started = time.time()
        # the hash of the last desired message applied, kept across restarts (``applied_path``): the same
        # retained message, delivered again at each connection, is not applied again over a local change
        self.applied_path = applied_path
        self._applied: str | None = None
        if applied_path is not None:
            try:
                self._applied = applied_path.read_text(encoding="ascii").strip() or None
            except (OSError, UnicodeDecodeError):
                self._applied = None
        self._devices: dict[str, str] = {}
        self._shot: dict[str, Any] = {}
        self._faces: int | None = None
        self._stats: dict[str, Any] = {}
        self._changed = asyncio.Event()
        self._announced: set[str] = set()

    # -- state from the event bus ----------------------------------------------------------------
    def _take(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "device" or kind.startswith("device:"):
            name = str(payload.get("name") or kind.partition(":")[2])
            state = str(payload.get("state", ""))
            if self._devices.get(name) != state:
                self._devices[name] = state
                self._changed.set()
        elif kind == "shot":
            shot = {"mode": payload.get("mode"), "reason": payload.get("reason", "")}
            if shot["mode"] != self._shot.get("mode"):
                self._changed.set()
            self._shot = shot
        elif kind == "faces" and isinstance(payload.get("faces"), list):
            n = len(payload["faces"])
            if n != self._faces:
                self._changed.set()
            self._faces = n
        elif kind == "stats":
            self._stats = dict(payload)

    async def _follow_events(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        while True:
            kind, payload = await queue.get()
            self._take(kind, payload)

    def status(self) -> dict[str, Any]:
        return {
            "box": self.box_id,
            "state": "online",
            "version": self.version,
            "t": round(time.time(), 3),
            "started": round(self._started, 3),
            "devices": dict(self._devices),
            "shot": dict(self._shot),
            "faces": self._faces,
            "config": {"revision": self.revision, "error": self.config_error},
        }

    def telemetry_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "box": self.box_id,
            "t": round(time.time(), 3),
            "uptime_s": round(time.time() - self._started, 1),
            "stats": dict(self._stats),
        }
        if self.events is not None:
            out["bus"] = {"published": self.events.published, "dropped": self.events.dropped}
        if self.telemetry is not None:
            try:
                out.update(self.telemetry())
            except Exception as e:
                log.warning("telemetry callback failed: %s", e)
        return out

    def health(self) -> tuple[str, str] | None:
        """For ``HealthCheck.add_check``: degraded while the fleet's broker is unreachable."""
        if self.connected:
            return None
        return "degraded", f"not connected to {self.cfg.host}:{self.cfg.port}" + (
            f" ({self.last_error})" if self.last_error else ""
        )

    # -- the link --------------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            identifier=f"roombox-{self.box_id}",
            username=self.cfg.username or None,
            password=self.password if self.cfg.username else None,
            keepalive=self.cfg.keepalive_s,
            tls_context=self.tls,
            timeout=self.timeout_s,
            will=aiomqtt.Will(self.topic_availability, b"offline", qos=1, retain=True),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )  # small messages, sent at once

    async def run(self) -> None:
        """Connect, report and take desired configs; reconnect with back-off after any failure; on
        cancellation say ``offline`` and disconnect."""
        queue = self.events.subscribe() if self.events is not None else None
        if self.events is not None:
            for kind, payload in self.events.snapshot_messages():
                self._take(kind, payload)
        follower = asyncio.create_task(self._follow_events(queue)) if queue is not None else None
        pause = self.retry_min_s
        try:
            while True:
                began = time.monotonic()
                try:
                    await self._session()
                except (aiomqtt.MqttError, OSError) as e:
                    self._lost(e)
                except Exception as e:  # a bug must not end the fleet link for good: logged, retried
                    log.exception("mqtt: session failed")
                    self._lost(e)
                lasted = time.monotonic() - began
                pause = self.retry_min_s if lasted > pause else min(pause * 2, self.cfg.retry_max_s)
                wait = pause * random.uniform(0.8, 1.2)
                log.info("mqtt: reconnecting in %.1f s", wait)
                await asyncio.sleep(wait)
        finally:
            self.connected = False
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            if queue is not None and self.events is not None:
                self.events.unsubscribe(queue)

    def _lost(self, e: BaseException) -> None:
        was, self._link_up = self._link_up, False
        self.connected = False
        self.last_error = str(e) or type(e).__name__
        if was:
            log.warning("mqtt: connection to %s:%d lost: %s", self.cfg.host, self.cfg.port, self.last_error)
        else:
            log.warning("mqtt: cannot connect to %s:%d: %s", self.cfg.host, self.cfg.port, self.last_error)

    async def _session(self) -> None:
        await self._session_on(self._client())

    async def _session_on(self, client: aiomqtt.Client) -> None:
        async with client:
            self.connected = self._link_up = True
            self.connections += 1
            self.last_error = None
            log.info("mqtt: connected to %s:%d as %s", self.cfg.host, self.cfg.port, self.box_id)
            loops: list[asyncio.Task[None]] = []
            try:
                await client.publish(self.topic_availability, b"online", qos=1, retain=True)
                _honour_cancel()
                await client.subscribe(self.topic_desired, qos=1)
                _honour_cancel()
                if self.cfg.ha_discovery:
                    self._announced.clear()
                    await self._announce(client)
                    _honour_cancel()
                loops = [
                    asyncio.create_task(self._publish_loop(client)),
                    asyncio.create_task(self._receive_loop(client)),
                ]
                done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the MqttError that ended the session
                raise aiomqtt.MqttError("the session ended")
            except asyncio.CancelledError:
                await self._goodbye(client)
                raise
            finally:
                self.connected = False
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        try:
            await asyncio.wait_for(client.publish(self.topic_availability, b"offline", qos=1, retain=True), 2.0)
        except (aiomqtt.MqttError, TimeoutError, asyncio.CancelledError) as e:
            log.debug("mqtt: no goodbye: %s", e)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        next_telemetry = time.monotonic()
        while True:
            await client.publish(self.topic_status, json.dumps(self.status()), qos=1, retain=True)
            _honour_cancel()
            if self.cfg.ha_discovery:
                await self._announce(client)
                _honour_cancel()
            now = time.monotonic()
            if now >= next_telemetry:
                await client.publish(self.topic_telemetry, json.dumps(self.telemetry_payload(), default=str), qos=0)
                _honour_cancel()
                next_telemetry = now + self.cfg.telemetry_s
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, next_telemetry - time.monotonic()))
                await asyncio.sleep(1.0)  # at most one status a second, however busy the room
            except TimeoutError:
                pass

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(self.topic_desired):
                payload = message.payload
                data = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
                ack = await self.handle_desired(bytes(data))
                await client.publish(self.topic_ack, json.dumps(ack, default=str), qos=1)
                await client.publish(self.topic_status, json.dumps(self.status()), qos=1, retain=True)
                _honour_cancel()

    async def handle_desired(self, payload: bytes) -> dict[str, Any]:
        """Validate and apply one desired-config message; the acknowledgement to send."""
        digest = hashlib.sha256(payload).hexdigest()
        if not payload.strip():  # how MQTT clears a retained message: nothing is asked of the box
            ack: dict[str, Any] = {
                "id": None,
                "ok": True,
                "revision": self.revision,
                "unchanged": True,
                "cleared": True,
            }
            log.info("mqtt: the retained desired config was cleared; the config is kept")
            return ack
        request_id: Any = None
        try:
            doc, request_id = decode_desired(payload)
            if digest == self._applied:  # applied before (then a reconnection or a restart): not over a local change
                log.info("mqtt: the desired config applied before came again; the config in force is kept")
                return {
                    "id": request_id,
                    "ok": True,
                    "revision": self.revision,
                    "unchanged": True,
                    "applied_before": True,
                }
            current = self.current_config() if self.current_config is not None else None
            if "mqtt" not in doc and current is not None:
                doc = {**doc, "mqtt": current.mqtt.model_dump(mode="json")}
            cfg = parse_config(doc, f"mqtt {self.topic_desired}")
            if current is not None and cfg == current:
                ack = {"id": request_id, "ok": True, "revision": self.revision, "unchanged": True}
            elif self.on_config is None:
                raise ValueError("this box takes no config over MQTT")
            else:
                result = self.on_config(cfg)
                if inspect.isawaitable(result):
                    result = await result
                self.revision = getattr(result, "id", result)  # a store's Revision, or the revision itself
                ack = {"id": request_id, "ok": True, "revision": self.revision}
                restart = getattr(result, "restart", None)
                if restart:  # applied at the next start, as the API's reply says too
                    ack["restart_required"] = list(restart)
            self._remember(digest)
            self.config_error = None
            log.info("mqtt: desired config applied, revision %s", ack["revision"])
        except ValueError as e:  # ConfigError, FleetError and the decoding errors are ValueErrors
            self.config_error = str(e) or type(e).__name__
            ack = {"id": request_id, "ok": False, "error": self.config_error}
            log.warning("mqtt: desired config refused: %s", self.config_error)
        except Exception as e:
            self.config_error = f"applying failed: {type(e).__name__}: {e}"
            ack = {"id": request_id, "ok": False, "error": self.config_error}
            log.exception("mqtt: applying the desired config failed")
        return ack

    def _remember(self, digest: str) -> None:
        self._applied = digest
        if self.applied_path is not None:
            try:
                write_atomic(self.applied_path, digest + "\n")
            except (OSError, ValueError) as e:
                log.warning("mqtt: cannot keep the applied message's hash in %s: %s", self.applied_path, e)

    # -- Home Assistant ------------------------------------------------------------------------------
    def discovery(self) -> dict[str, dict[str, Any]]:
        """Home Assistant MQTT discovery: topic -> config payload, one sensor per figure."""
        device = {
            "identifiers": [f"roombox_{self.box_id}"],
            "name": f"Roombox {self.box_id}",
            "manufacturer": "Roombox",
            "model": "Meeting-room box",
            "sw_version": self.version,
        }
        sensors: dict[str, tuple[str, str, dict[str, Any]]] = {
            "shot_mode": ("Shot", "{{ value_json.shot.mode }}", {"icon": "mdi:camera-switch"}),
            "faces": ("Faces", "{{ value_json.faces }}", {"state_class": "measurement", "icon": "mdi:account-group"}),
            "config_revision": (
                "Config revision",
                "{{ value_json.config.revision }}",
                {"entity_category": "diagnostic"},
            ),
        }
        for name in sorted(self._devices):
            sensors[f"device_{name}"] = (
                f"{name} state",
                f"{{{{ value_json.devices['{name}'] }}}}",
                {"entity_category": "diagnostic"},
            )
        out: dict[str, dict[str, Any]] = {}
        for key, (title, template, extra) in sensors.items():
            uid = f"roombox_{self.box_id}_{key}"
            out[f"{self.cfg.ha_prefix}/sensor/roombox_{self.box_id}/{key}/config"] = {
                "name": title,
                "unique_id": uid,
                "state_topic": self.topic_status,
                "value_template": template,
                "availability_topic": self.topic_availability,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
                **extra,
            }
        return out

    async def _announce(self, client: aiomqtt.Client) -> None:
        for topic, payload in self.discovery().items():
            if topic not in self._announced:
                await client.publish(topic, json.dumps(payload), qos=1, retain=True)
                self._announced.add(topic)
