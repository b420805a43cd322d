"""Fleet control over MQTT: the box reports to a broker and takes its desired config from it.

Topics, under ``<topic_prefix>/<box_id>/``:

- ``availability`` (retained): ``online`` while connected; the broker publishes ``offline`` (the last will)
  when the connection dies without a goodbye; a clean stop publishes ``offline`` itself. Whether the box is up
  is this topic's to say (the status has no state of its own, so a status left behind never says online). A
  live ``offline`` (or a cleared availability) seen while connected (the will of a connection of this box
  that the broker has not yet noticed was dead, a box with the same id stopping) is answered with
  ``online`` again.
- ``status`` (retained, JSON): the box's ``instance`` (below), devices and their states (with the detail:
  ``"lost: OSError: /dev/video0 gone"``, and while retrying, the reason of the loss), the shot, faces, the
  config revision and the last config error; sent when something in it changes (at most once a second) and
  every ``telemetry_s``.
- ``telemetry`` (JSON): the box's counters every ``telemetry_s``.
- ``config/set`` (subscribed): a desired config, the whole document, as a JSON object or TOML text, or as
  ``{"id": "...", "config": {...}}`` so that the reply carries the id (a string or an integer). It is
  validated by the same model as the file (``appliance.config.parse_config``). The sections that describe the
  box itself (``OWN_SECTIONS``: its devices, their calibration, its panel's address, its fleet link) are kept
  where the document has none, so that one fleet-wide document can go to every box; an ``[mqtt]`` given
  changes only the keys it names, and may not switch the link off (nothing could switch it on again). An
  empty message (how MQTT clears a retained one) asks nothing: the box keeps its config and acknowledges
  ``"cleared": true``; an empty document (``{}``, a TOML file of comments) is refused, since it would put every
  key back to its default.
- ``config/ack`` (retained, JSON): ``{"id", "ok": true, "revision"}`` (with ``"restart_required": [keys]`` when
  some wait for a restart) or ``{"id", "ok": false, "error"}`` (the error names the key and the reason). The
  last ack is retained, so a fleet client that was away (the broker restarted) finds it; an ack the broker
  has not confirmed (QoS 1) when the connection drops, e.g. the broker died while the box applied the
  config, is published again at the next connection, before any new desired config is taken. So every ack
  reaches the broker at least once while the box runs; the fleet may see one twice (match on ``id``). An
  ack not yet sent when the box itself stops is lost: ``status.config.revision`` says what is in force.

Each run of the box is an *instance* with a random id (8 hex digits) of its own: the MQTT client id is
``roombox-<box_id>-<instance>`` (an ACL pattern should key on the user name, ``%u``, not on the client id),
and the status carries ``"instance"``. Two boxes given the same ``box_id`` therefore both stay connected
(with one client id they would take the connection from each other in turn, forever), and each sees the
other's status on its own topic: it logs it and reports health degraded, "another box uses box_id X; give
each box its own [mqtt] box_id", for ``CONFLICT_HOLD_S`` after it last saw the other. A retained status
from an earlier instance (the box before a restart) is no conflict: only a status published live counts.

When the broker refuses the subscription to ``config/set`` (SUBACK 0x80, e.g. mosquitto's dynamic-security
plugin; its plain ``acl_file`` grants the subscription and drops the messages, which no client can tell), the
box logs it and reports health degraded: "the broker refused the subscription to ...: check its ACL".

With ``state_dir`` (the box passes ``$ROOMBOX_HOME``) the box keeps there the retained topics it publishes, and
clears those of an id it ran under before (:mod:`appliance.control.fleet_state`). With ``ha_discovery``, Home
Assistant's MQTT discovery entries (retained) describe the box (:mod:`appliance.control.fleet_wire`).

The lead's wiring::

    fleet = FleetClient(cfg.mqtt, events, on_config=apply, current_config=lambda: running_cfg, state_dir=home)
    task = asyncio.create_task(fleet.run())     # reconnects by itself; cancel to stop (says offline)
    health.add_check("mqtt", fleet.health)

``apply(cfg)`` returns the new revision (or the store's ``Revision``, whose ``restart`` keys the ack names, or
an awaitable of either) and raises ``ValueError`` (e.g. ``ConfigError``) to refuse. ``fleet.revision = r``
tells the fleet about changes made elsewhere (API, panel). With ``applied_path`` (by default
``mqtt-desired.sha256`` in ``state_dir``), the hash of the last desired message applied is kept there: the
same message again is acknowledged ``"applied_before": true`` and not applied over a change made locally since
(:mod:`appliance.control.fleet_state`).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiomqtt

from appliance.config import Config, parse_config
from appliance.control.fleet_state import APPLIED_FILE, RETAINED_FILE, AppliedDesired, RetainedTopics
from appliance.control.fleet_wire import DEVICE_TEXT_MAX, decode_desired, discovery_entries, discovery_prefix
from appliance.control.mqtt_link import FleetError, handshake_hint, honour_cancel, read_password, tls_context
from appliance.control.settings import MqttConfig
from appliance.streaming.hub import EventBus
from common.errors import RoomboxError

log = logging.getLogger(__name__)

STAYED_S = 10.0  # a connection that held this long starts the reconnection back-off over
CONFLICT_HOLD_S = 600.0  # health stays degraded this long after another box with this box's id was last seen
Revision = str | int
# the new revision, or an object with ``id`` and ``restart`` (the store's), or an awaitable of either
OnConfig = Callable[[Config], Any]


# the sections that describe the box itself, not the fleet's policy: its devices, their calibration against the
# camera, where its panel listens and its own fleet link. A desired config without one keeps the box's own, so
# that one document can go to every box; one given replaces the box's (and [mqtt]'s keys go over the box's own)
OWN_SECTIONS = ("cameras", "mic_arrays", "ptz", "speakers", "ptz_follow", "calibration", "panel", "mqtt")


def with_own_sections(doc: dict[str, Any], current: Config) -> dict[str, Any]:
    """The desired document ``doc`` with the box's own sections where it has none (``OWN_SECTIONS``); an
    ``[mqtt]`` given changes only the keys it names (the link's id, broker and credentials are the box's)."""
    own = current.model_dump(mode="json")
    out = {**doc}
    given = set(doc) | {new for old, new in (("camera", "cameras"), ("mic_array", "mic_arrays")) if old in doc}
    for key in OWN_SECTIONS:
        if key not in given:  # [camera] and [mic_array], as written before named devices, are given devices
            out[key] = own[key]
    if isinstance(doc.get("mqtt"), dict):
        out["mqtt"] = {**own["mqtt"], **doc["mqtt"]}
    return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("roombox")
    except Exception:
        return "unknown"


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
        state_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.events = events
        self.on_config = on_config
        self.current_config = current_config
        self.telemetry = telemetry
        self.retry_min_s = retry_min_s
        self.timeout_s = timeout_s
        self.box_id = cfg.resolved_box_id()
        self.instance = secrets.token_hex(4)  # this run of the box: two boxes given one box_id differ here
        self.identifier = f"roombox-{self.box_id}-{self.instance}"
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
        self._up_since: float | None = None  # when the current session connected (for the back-off)
        self.connections = 0
        self.last_error: str | None = None
        self.subscribe_error: str | None = None  # the broker refused the subscription to config/set
        self._conflict: str | None = None  # another box publishes under this box's id
        self._conflict_at = 0.0
        self._ack_unsent: bytes | None = None  # the last ack, until the broker confirmed it
        self._started = time.time()
        # the hash of the last desired message applied, kept across restarts (``applied_path``): the same
        # retained message, delivered again at each connection, is not applied again over a local change
        if applied_path is None and state_dir is not None:
            applied_path = state_dir / APPLIED_FILE
        self.applied_path = applied_path
        self._applied = AppliedDesired(applied_path)
        # the retained topics this box publishes, kept in ``state_dir`` so that those of an id it ran under
        # before are cleared after the id changed
        self.retained_path = state_dir / RETAINED_FILE if state_dir is not None else None
        self._retained = RetainedTopics(self.retained_path, self.topic_availability, self._ours)
        self._devices: dict[str, str] = {}
        self._lost: dict[str, str] = {}  # a device's last loss, said while it retries
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
            detail = str(payload.get("detail") or "")
            if state == "lost":
                self._lost[name] = detail or "no detail"
            elif state in ("running", "stopped"):
                self._lost.pop(name, None)
            text = f"{state}: {detail}" if detail else state
            if state != "lost" and name in self._lost:
                text += f" (lost: {self._lost[name]})"
            text = text[:DEVICE_TEXT_MAX]
            if self._devices.get(name) != text:
                self._devices[name] = text
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
            "instance": self.instance,
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

    def config_written(self, revision: Revision) -> None:
        """A config revision was written, by whoever (the store's ``on_change``): the status says it, and an
        error of a desired config refused before no longer stands for the config in force."""
        self.revision = revision
        self.config_error = None
        self._changed.set()

    def conflict(self) -> str | None:
        """Another box using this box's id, when one was seen in the last ``CONFLICT_HOLD_S``."""
        if self._conflict is not None and time.monotonic() - self._conflict_at <= CONFLICT_HOLD_S:
            return self._conflict
        return None

    def health(self) -> tuple[str, str] | None:
        """For ``HealthCheck.add_check``: degraded while the fleet's broker is unreachable, while it refuses
        the desired config's subscription, and while another box uses this box's id."""
        problems = []
        if not self.connected:
            problems.append(
                f"not connected to {self.cfg.host}:{self.cfg.port}"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        elif self.subscribe_error:
            problems.append(self.subscribe_error)
        conflict = self.conflict()
        if conflict:
            problems.append(conflict)
        return ("degraded", "; ".join(problems)) if problems else None

    # -- the link --------------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        # read at every attempt: a password or a CA rotated on the box is taken without a restart
        self.password = read_password(self.cfg)
        self.tls = tls_context(self.cfg)
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            identifier=self.identifier,
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
        self._say_exposure()
        queue = self.events.subscribe() if self.events is not None else None
        if self.events is not None:
            for kind, payload in self.events.snapshot_messages():
                self._take(kind, payload)
        follower = asyncio.create_task(self._follow_events(queue)) if queue is not None else None
        pause = self.retry_min_s / 2
        try:
            while True:
                self._up_since = None
                try:
                    await self._session()
                except (aiomqtt.MqttError, OSError, FleetError) as e:
                    self._lost_link(e)
                except Exception as e:  # a bug must not end the fleet link for good: logged, retried
                    log.exception("mqtt: session failed")
                    self._lost_link(e)
                # the back-off starts over once a connection held ``STAYED_S``: by whether it connected, not by
                # how long the attempt took (one that times out after 10 s each time backs off too)
                stayed = self._up_since is not None and time.monotonic() - self._up_since >= STAYED_S
                pause = self.retry_min_s if stayed else min(pause * 2, self.cfg.retry_max_s)
                wait = min(pause * random.uniform(0.8, 1.2), self.cfg.retry_max_s)
                log.info("mqtt: reconnecting in %.1f s", wait)
                await asyncio.sleep(wait)
        finally:
            self.connected = False
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            if queue is not None and self.events is not None:
                self.events.unsubscribe(queue)

    def _say_exposure(self) -> None:
        """A warning when the link has no user name, or goes in clear to another host: whoever may publish
        to ``config/set`` has this box's admin scope."""
        gaps = []
        if not self.cfg.username:
            gaps.append("no user name")
        if not self.cfg.tls and self.cfg.host not in ("localhost", "127.0.0.1", "::1"):
            gaps.append("no TLS")
        if gaps:
            log.warning(
                "mqtt: the fleet link has %s: whoever can publish to %s can change this box's config (set "
                "[mqtt] username and tls, and allow each box only its own topics at the broker)",
                " and ".join(gaps),
                self.topic_desired,
            )

    def _lost_link(self, e: BaseException) -> None:
        was, self._link_up = self._link_up, False
        self.connected = False
        self.last_error = str(e) or type(e).__name__
        if was:
            log.warning("mqtt: connection to %s:%d lost: %s", self.cfg.host, self.cfg.port, self.last_error)
        else:
            self.last_error += handshake_hint(self.cfg, e)
            log.warning("mqtt: cannot connect to %s:%d: %s", self.cfg.host, self.cfg.port, self.last_error)

    async def _session(self) -> None:
        await self._session_on(self._client())

    async def _session_on(self, client: aiomqtt.Client) -> None:
        async with client:
            self.connected = self._link_up = True
            self._up_since = time.monotonic()
            self.connections += 1
            self.last_error = None
            log.info("mqtt: connected to %s:%d as %s (%s)", self.cfg.host, self.cfg.port, self.box_id, self.identifier)
            loops: list[asyncio.Task[None]] = []
            try:
                self._retained.note([self.topic_availability, self.topic_status, self.topic_ack])
                if self._retained.stale():
                    await self._retained.clear_old(client, self.timeout_s)  # says online itself
                else:
                    await client.publish(self.topic_availability, b"online", qos=1, retain=True)
                honour_cancel()
                if self._ack_unsent is not None:  # the broker went away before it confirmed the last ack
                    await self._send_ack(client, self._ack_unsent, again=True)
                    honour_cancel()
                topics = [(self.topic_desired, 1), (self.topic_status, 0), (self.topic_availability, 0)]
                self._check_granted(topics, await client.subscribe(topics))
                honour_cancel()
                if self.cfg.ha_discovery:
                    self._announced.clear()
                    await self._announce(client)
                    honour_cancel()
                loops = [
                    asyncio.create_task(self._publish_loop(client)),
                    asyncio.create_task(self._receive_loop(client)),
                ]
                done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the MqttError that ended the session
                raise aiomqtt.MqttError("the session ended")
            except asyncio.CancelledError:
                for task in loops:  # first, so that the goodbye's own "offline" is not answered "online"
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                await self._goodbye(client)
                raise
            finally:
                self.connected = False
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    def _check_granted(self, topics: list[tuple[str, int]], granted: Iterable[Any]) -> None:
        """The SUBACK's answer per topic: a code of 0x80 or more is a refusal (an ACL, most often)."""
        refused = [
            t for (t, _), code in zip(topics, granted, strict=False) if int(getattr(code, "value", code)) >= 0x80
        ]
        error = None
        if self.topic_desired in refused:
            error = f"the broker refused the subscription to {self.topic_desired}: check its ACL"
            if error != self.subscribe_error:
                log.error("mqtt: %s (the box takes no desired config)", error)
        self.subscribe_error = error
        for topic in refused:
            if topic != self.topic_desired:
                log.warning(
                    "mqtt: the broker refused the subscription to %s: another box with the same box_id would go "
                    "unnoticed",
                    topic,
                )

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        try:
            await asyncio.wait_for(client.publish(self.topic_availability, b"offline", qos=1, retain=True), 2.0)
        except (aiomqtt.MqttError, TimeoutError, asyncio.CancelledError) as e:
            log.debug("mqtt: no goodbye: %s", e)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        next_telemetry = time.monotonic()
        while True:
            self._changed.clear()  # before the status is taken: a change while it is sent is sent next
            await client.publish(self.topic_status, json.dumps(self.status()), qos=1, retain=True)
            honour_cancel()
            if self.cfg.ha_discovery:
                await self._announce(client)
                honour_cancel()
            now = time.monotonic()
            if now >= next_telemetry:
                await client.publish(self.topic_telemetry, json.dumps(self.telemetry_payload(), default=str), qos=0)
                honour_cancel()
                next_telemetry = now + self.cfg.telemetry_s
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, next_telemetry - time.monotonic()))
                await asyncio.sleep(1.0)  # at most one status a second, however busy the room
            except TimeoutError:
                pass

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = bytes(payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode())
            if message.topic.matches(self.topic_desired):
                ack = await self.handle_desired(data)
                await self._send_ack(client, json.dumps(ack, default=str).encode())
                await client.publish(self.topic_status, json.dumps(self.status()), qos=1, retain=True)
                honour_cancel()
            elif message.retain:  # what the broker kept: this box's own, or an earlier instance's
                continue
            elif message.topic.matches(self.topic_status):
                self._check_status(data)
            elif message.topic.matches(self.topic_availability) and data != b"online":
                log.info("mqtt: %s was set to %r by another client; saying online again", message.topic, data[:20])
                await client.publish(self.topic_availability, b"online", qos=1, retain=True)
                honour_cancel()

    async def _send_ack(self, client: aiomqtt.Client, ack: bytes, again: bool = False) -> None:
        """Publish ``ack`` (retained, QoS 1); until the broker confirms it, it is kept to be sent again at the
        next connection."""
        self._ack_unsent = ack
        if again:
            log.info("mqtt: sending again the last ack, which the broker had not confirmed: %s", ack[:200].decode())
        await client.publish(self.topic_ack, ack, qos=1, retain=True)
        if self._ack_unsent is ack:
            self._ack_unsent = None

    def _check_status(self, data: bytes) -> None:
        """A status published live on this box's topic: another box's, unless it carries this instance."""
        if not data.strip():  # a retained status cleared (a box that left this id): nobody's
            return
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        other = doc.get("instance") if isinstance(doc, dict) else None
        if other == self.instance:
            return
        fresh = self.conflict() is None
        self._conflict = (
            f"another box uses box_id {self.box_id}; give each box its own [mqtt] box_id (instance "
            f"{str(other)[:40]} publishes on {self.topic_status}, this one is {self.instance})"
        )
        self._conflict_at = time.monotonic()
        if fresh:
            log.error("mqtt: %s", self._conflict)

    # -- the retained topics of an id the box ran under before -----------------------------------
    def _ours(self, topic: str) -> bool:
        """Whether ``topic`` is one of this id's (the others a record names are an earlier id's)."""
        if topic.startswith(self.base + "/"):
            return True
        return self.cfg.ha_discovery and topic.startswith(discovery_prefix(self.cfg.ha_prefix, self.box_id) + "/")

    # -- the desired config ----------------------------------------------------------------------
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
            current = self.current_config() if self.current_config is not None else None
            if current is not None:
                doc = with_own_sections(doc, current)
            cfg = parse_config(doc, f"mqtt {self.topic_desired}")
            if current is not None and current.mqtt.enabled and not cfg.mqtt.enabled:
                raise ValueError(
                    "[mqtt.enabled] a desired config may not switch the fleet link off: nothing could reach the "
                    "box to switch it on again; set it at the box (the panel's settings, the API or its file)"
                )
            # applied before (then a reconnection or a restart): not over a local change
            if digest == self._applied.digest:
                log.info("mqtt: the desired config applied before came again; the config in force is kept")
                ack = {"id": request_id, "ok": True, "revision": self.revision, "applied_before": True}
                if current is None or cfg == current:
                    ack["unchanged"] = True
                else:  # a change made at the box since stands; the same document with a new id applies it again
                    ack["changed_since"] = True
                return ack
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
            self._applied.remember(digest)
            self.config_error = None
            log.info("mqtt: desired config applied, revision %s", ack["revision"])
        except (ValueError, RoomboxError) as e:  # ConfigError, FleetError, the decoding errors, a store's
            self.config_error = str(e) or type(e).__name__  # StoreError (a full disk): said, not a traceback
            ack = {"id": request_id, "ok": False, "error": self.config_error}
            log.warning("mqtt: desired config refused: %s", self.config_error)
        except Exception as e:
            self.config_error = f"applying failed: {type(e).__name__}: {e}"
            ack = {"id": request_id, "ok": False, "error": self.config_error}
            log.exception("mqtt: applying the desired config failed")
        return ack

    # -- Home Assistant ------------------------------------------------------------------------------
    def discovery(self) -> dict[str, dict[str, Any]]:
        """Home Assistant MQTT discovery: topic -> config payload, one sensor per figure."""
        return discovery_entries(
            self.cfg.ha_prefix, self.box_id, self.version, self._devices, self.topic_status, self.topic_availability
        )

    async def _announce(self, client: aiomqtt.Client) -> None:
        entries = self.discovery()
        self._retained.note(entries)
        for topic, payload in entries.items():
            if topic not in self._announced:
                await client.publish(topic, json.dumps(payload), qos=1, retain=True)
                self._announced.add(topic)
