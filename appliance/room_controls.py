"""The room's controls behind the panel: meetings (join, leave), the microphones (mute), the speaker volume,
the choice of camera and mic array, on top of the box's own commands (framing mode, manual pan-tilt-zoom).

:class:`RoomControls` is the panel's command handler (``create_app(..., on_command=controls.command)``).
After every command, and whenever a meeting's state changes, it publishes a :class:`RoomState` on the event
bus: every panel sees the change at once (and ``/api/state`` has it under ``"room"``). Commands (JSON
objects over the panel's WebSocket, which needs the ``control`` scope):

- ``{"cmd": "join", "meeting": "janus"}`` / ``{"cmd": "leave", "meeting": "janus"}``: start or stop a
  configured connector (``[whip]``, ``[janus]``);
- ``{"cmd": "set_mute", "muted": true}``: the box stops sending the room's sound (the hearing goes on);
- ``{"cmd": "set_volume", "volume": 0..100}``: the far end's sound on the room's speaker (``on_volume``
  gets 0..1);
- ``{"cmd": "choose_source", "kind": "camera" | "mic_array", "name": N}``: the device the box uses, written
  through the config store (a revision, the device first in its section); with ``switch`` (the live box)
  the box changes to it at once, without it the choice is reported as needing a restart;
- anything else goes to the box (``set_mode``, ``ptz``).

With ``kept_path`` the mute and the volume are kept there (``read_kept`` at the next start), so that a box
that restarts (a crash, an update) does not open the room's microphones to the meeting it joins again.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.control.store import ConfigStore, OnConfig
from appliance.messages import MeetingStatus, RoomState
from appliance.ports import EventSink
from appliance.streaming.connector import Connector
from common.atomic import write_atomic
from common.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

BoxCommand = Callable[[dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]
SOURCE_KINDS = {"camera": "cameras", "mic_array": "mic_arrays"}
KEPT_FILE = "room.json"  # in $ROOMBOX_HOME: the microphones' mute and the speaker volume, over a restart


def read_kept(path: Path) -> dict[str, Any]:
    """The mute (``"muted"``) and the volume (``"volume"``) kept at ``path`` by the box before, and the volume
    its config gave then (``"config_volume"``: a config changed since has its own say); {} when there is
    none. A file that cannot be read is said (the microphones then start on, the volume at its default)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("%s: the room's mute and volume before the restart cannot be read (%s)", path, e)
        return {}
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        if isinstance(data.get("muted"), bool):
            out["muted"] = data["muted"]
        volume = data.get("volume")
        if isinstance(volume, int) and not isinstance(volume, bool) and 0 <= volume <= 100:
            out["volume"] = volume
        if isinstance(data.get("config_volume"), int):
            out["config_volume"] = data["config_volume"]
    if "muted" not in out or "volume" not in out:
        log.warning("%s: the room's mute or volume before the restart is not as written (%.80r)", path, data)
    return out


def kept_volume(kept: dict[str, Any], config_volume: int | None) -> int | None:
    """The speaker volume to start with from what :func:`read_kept` found: the panel's last, unless the config's
    volume (``config_volume``) is not what it was then (changed since: the config's, None)."""
    if "volume" in kept and kept.get("config_volume") == config_volume and config_volume is not None:
        return int(kept["volume"])
    return None


class RoomControls:
    """The panel's commands and the room's state.

    ``box_command(cmd)``: the box's own commands (:meth:`appliance.box.RoomBox.command`); ``policy()``: the
    framing mode now; ``muted()``: the box's microphones muted; ``connectors``: the meetings configured
    (:func:`connectors_from_config`); ``store``: the config store the source choice is written through
    (``None``: no choice can be kept); ``on_config``: the box's live config hook; ``running``: the camera
    and mic array opened at start; ``on_volume(gain)``: the far end's audio path (0..1), when there is one;
    ``switch(kind, name, cfg)`` (or an awaitable of it): opens that device, checks that it delivers, and
    makes the running box use it (``cfg``: the config with it first); a failure to open it refuses the choice.
    """

    def __init__(
        self,
        box_command: BoxCommand,
        events: EventSink,
        cfg: Config,
        *,
        policy: Callable[[], str | None] = lambda: None,
        muted: Callable[[], bool] | None = None,
        connectors: Sequence[Connector] = (),
        store: ConfigStore | None = None,
        on_config: OnConfig | None = None,
        running: tuple[str, str] | None = None,
        on_volume: Callable[[float], None] | None = None,
        volume: int = 100,
        switch: Callable[[str, str, Config], Awaitable[None] | None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        kept_path: Path | None = None,
        config_volume: int | None = None,
    ) -> None:
        self.box_command = box_command
        self.events = events
        self._cfg = cfg
        self.policy = policy
        self.connectors = {c.kind: c for c in connectors}
        self.store = store
        self.on_config = on_config
        self.running = running if running is not None else (next(iter(cfg.cameras)), next(iter(cfg.mic_arrays)))
        self.on_volume = on_volume
        self.switch = switch
        self.clock = clock
        self._muted = muted
        self._muted_here = False
        if store is not None:  # a revision from the API or MQTT: the panels show its devices and what waits
            store.on_change.append(lambda rev: self.publish())
        self.volume = volume
        self.kept_path = kept_path
        self.config_volume = config_volume  # the speaker's volume as the config gave it at start
        for c in connectors:
            self._follow(c)

    def _follow(self, connector: Connector) -> None:
        before = connector.on_state

        def on_state(state: str, detail: str) -> None:
            if before is not None:
                before(state, detail)
            self.publish()

        connector.on_state = on_state

    @property
    def muted(self) -> bool:
        """The microphones muted: the box's own flag when given (``muted()``), else the last set_mute's."""
        return self._muted() if self._muted is not None else self._muted_here

    @property
    def cfg(self) -> Config:
        return self.store.current if self.store is not None else self._cfg

    def state(self) -> RoomState:
        """The room's controls now."""
        cfg = self.cfg
        meetings = tuple(
            MeetingStatus(kind, c.state, c.detail, self.clock.now()) for kind, c in sorted(self.connectors.items())
        )
        pending = sorted(self.store.pending_restart) if self.store is not None else []
        return RoomState(
            self.clock.now(),
            self.policy(),
            self.muted,
            self.volume,
            meetings,
            tuple(cfg.cameras),
            self.running[0],
            next(iter(cfg.cameras)),
            tuple(cfg.mic_arrays),
            self.running[1],
            next(iter(cfg.mic_arrays)),
            tuple(pending),
        )

    def publish(self) -> RoomState:
        """Send the room's state to every panel."""
        state = self.state()
        self.events.publish(state)
        return state

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """One panel command; returns the room's state (and the box's reply under ``"box"``). A ValueError
        names what is wrong; nothing changes then."""
        name = cmd.get("cmd")
        box_reply: dict[str, Any] | None = None
        if name in ("join", "leave"):
            connector = self._meeting(cmd.get("meeting"))
            await (connector.start() if name == "join" else connector.stop())
            log.info("meeting %s: %s from the panel", connector.kind, name)
        elif name == "set_mute":
            box_reply = await self._box({"cmd": "set_mute", "muted": cmd.get("muted")})
            self._muted_here = bool(box_reply.get("muted", cmd.get("muted")))
            log.info("microphones %s from the panel", "muted" if self.muted else "on")
            self._keep()
        elif name == "set_volume":
            self.set_volume(cmd.get("volume"))
            self._keep()
        elif name == "choose_source":
            await self.choose_source(cmd.get("kind"), cmd.get("name"))
        else:
            box_reply = await self._box(cmd)
        out = self.publish().to_json()
        if box_reply is not None:
            out["box"] = box_reply
        if isinstance(out.get("policy"), str):
            out["mode"] = out["policy"]
        return out

    def _keep(self) -> None:
        """The mute and the volume written to ``kept_path`` (atomically); a failure is said, the change stands."""
        if self.kept_path is None:
            return
        try:
            kept = {"muted": self.muted, "volume": self.volume, "config_volume": self.config_volume}
            write_atomic(self.kept_path, json.dumps(kept) + "\n")
        except (OSError, ValueError) as e:
            log.warning("%s: the mute and volume are not kept over a restart: %s", self.kept_path, e)

    async def _box(self, cmd: dict[str, Any]) -> dict[str, Any]:
        result = self.box_command(cmd)
        if inspect.isawaitable(result):
            result = await result
        return dict(result)

    def _meeting(self, kind: Any) -> Connector:
        connector = self.connectors.get(kind) if isinstance(kind, str) else None
        if connector is None:
            have = ", ".join(sorted(self.connectors)) or "none (add [whip] url or [janus] url to the config)"
            raise ValueError(f"no meeting {kind!r} configured; configured: {have}")
        return connector

    def set_volume(self, volume: Any) -> None:
        """The speaker volume, 0..100 (a ValueError outside)."""
        if isinstance(volume, bool) or not isinstance(volume, int | float) or not 0 <= volume <= 100:
            raise ValueError(f"set_volume wants a volume from 0 to 100, not {volume!r}")
        self.volume = round(volume)
        if self.on_volume is not None:
            self.on_volume(self.volume / 100.0)

    async def choose_source(self, kind: Any, name: Any) -> None:
        """Make ``name`` the camera (``kind`` "camera") or mic array ("mic_array") the box uses: written as a
        config revision with that device first in its section. With ``switch`` (a live box) the device is
        opened and put in use first; one that cannot be opened refuses the choice, and nothing changes."""
        section = SOURCE_KINDS.get(kind) if isinstance(kind, str) else None
        if section is None:
            raise ValueError(f"choose_source wants kind camera or mic_array, not {kind!r}")
        cfg = self.cfg
        devices: dict[str, Any] = getattr(cfg, section)
        if not isinstance(name, str) or name not in devices:
            raise ValueError(f"no {kind} {name!r} in [{section}]; configured: {', '.join(devices)}")
        if self.store is None:
            raise ValueError("this box keeps no config to write the choice to")
        if next(iter(devices)) == name:
            return
        ordered = {name: devices[name], **{k: v for k, v in devices.items() if k != name}}
        new = cfg.model_copy(update={section: ordered})
        running = self.running
        switch = self.switch
        if switch is not None:
            # the box changes device at once; the other kind stays the one it runs with
            other = ("mic_arrays", running[1]) if kind == "camera" else ("cameras", running[0])
            self.store.check(new)  # a choice the config cannot keep is refused before the device changes
            done = switch(kind, name, _first(new, *other))  # a device that cannot be opened refuses it here
            if inspect.isawaitable(done):
                await done
            try:
                rev = self.store.write(new, "panel", lambda changed: [], note=f"{kind} {name!r} chosen on the panel")
            except Exception:  # not saved (a full disk, say): the box goes back to the device the config names
                was = running[0] if kind == "camera" else running[1]
                try:
                    back = switch(kind, was, _first(cfg, *other))
                    if inspect.isawaitable(back):
                        await back
                except Exception as e:
                    log.warning("%s %r could not be put back after the choice was not saved: %s", kind, was, e)
                raise
            self.running = (name, running[1]) if kind == "camera" else (running[0], name)
            log.info("config revision %d: %s %r chosen on the panel, in use now", rev.id, kind, name)
            return

        def apply(changed: Config) -> list[str]:
            # the running box keeps framing and listening with the devices it opened
            live = _first(_first(changed, "cameras", running[0]), "mic_arrays", running[1])
            needs = list(self.on_config(live)) if self.on_config is not None else []
            return [*needs, section]

        rev = self.store.write(new, "panel", apply, note=f"{kind} {name!r} chosen on the panel")
        log.info("config revision %d: %s %r chosen on the panel (restart needed)", rev.id, kind, name)


def _first(cfg: Config, section: str, name: str) -> Config:
    devices: dict[str, Any] = getattr(cfg, section)
    if name not in devices or next(iter(devices)) == name:
        return cfg
    return cfg.model_copy(update={section: {name: devices[name], **{k: v for k, v in devices.items() if k != name}}})
