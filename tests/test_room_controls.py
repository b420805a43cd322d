"""The room's controls without a browser: the source choice as a config revision needing a restart (the
running box keeps its devices), the volume handed to the far end's audio path, the state on the bus."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config, config_to_toml, load_config
from appliance.control.store import ConfigStore, changed_keys
from appliance.room_controls import RoomControls
from appliance.streaming.hub import EventBus

DOC = {
    "cameras": {"main": {"type": "file", "path": "a.mp4"}, "door": {"type": "file", "path": "b.mp4"}},
    "mic_arrays": {"table": {"type": "wav", "path": "a.wav", "positions": [[0, 0, 0], [0.1, 0, 0]]}},
}


def test_devices_in_another_order_are_a_change() -> None:
    a = {"cameras": {"main": 1, "door": 2}, "stream": {"fps": 30}}
    b = {"cameras": {"door": 2, "main": 1}, "stream": {"fps": 30}}
    assert changed_keys(a, b) == ["cameras"]
    assert changed_keys(a, a) == []


def test_choosing_a_camera_writes_a_revision_that_needs_a_restart(tmp_path: Path) -> None:
    cfg = Config.model_validate(DOC)
    path = tmp_path / "room.toml"
    path.write_text(config_to_toml(cfg))
    store = ConfigStore(path, tmp_path / "revisions", cfg)
    events = EventBus()
    applied: list[Config] = []
    gains: list[float] = []

    def on_config(new: Config) -> list[str]:  # what the box is handed live
        applied.append(new)
        return []

    def box_command(cmd: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {cmd.get('cmd')!r}")

    controls = RoomControls(
        box_command, events, cfg, store=store, on_config=on_config, on_volume=gains.append, policy=lambda: "speaker"
    )

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        chosen = await controls.command({"cmd": "choose_source", "kind": "camera", "name": "door"})
        louder = await controls.command({"cmd": "set_volume", "volume": 80})
        with pytest.raises(ValueError, match="unknown command 'reboot'"):
            await controls.command({"cmd": "reboot"})
        with pytest.raises(ValueError, match="no meeting 'janus' configured; configured: none"):
            await controls.command({"cmd": "join", "meeting": "janus"})
        return chosen, louder

    chosen, louder = asyncio.run(run())
    assert (chosen["camera"], chosen["camera_chosen"], chosen["restart_required"]) == ("main", "door", ["cameras"])
    rev = store.revisions()[0]
    assert (rev.who, rev.changed, rev.restart) == ("panel", ["cameras"], ["cameras"])
    assert "camera 'door' chosen on the panel" in rev.note
    assert list(store.current.cameras) == ["door", "main"]
    assert list(applied[-1].cameras) == ["main", "door"]  # the running box keeps framing with its camera
    assert louder["volume"] == 80 and gains == [0.8]
    assert events.snapshot()["room"]["volume"] == 80 and events.snapshot()["room"]["camera_chosen"] == "door"
    # the same choice again changes nothing
    asyncio.run(controls.command({"cmd": "choose_source", "kind": "camera", "name": "door"}))
    assert store.revisions()[0].id == rev.id


def test_with_a_live_box_the_choice_switches_at_once_and_a_device_that_fails_is_refused(tmp_path: Path) -> None:
    switched: list[tuple[str, str, list[str]]] = []

    def switch(kind: str, name: str, new: Config) -> None:
        if name == "broken":
            raise ValueError("camera broken: no such device")
        switched.append((kind, name, list(new.cameras)))

    def box_command(cmd: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {cmd.get('cmd')!r}")

    cameras = {name: {"type": "file", "path": f"{name}.mp4"} for name in ("main", "door", "broken")}
    doc = {**DOC, "cameras": cameras}
    cfg = Config.model_validate(doc)
    path = tmp_path / "room.toml"
    path.write_text(config_to_toml(cfg))
    store = ConfigStore(path, tmp_path / "revisions", cfg)
    controls = RoomControls(box_command, EventBus(), cfg, store=store, switch=switch)
    chosen = asyncio.run(controls.command({"cmd": "choose_source", "kind": "camera", "name": "door"}))
    assert switched == [("camera", "door", ["door", "main", "broken"])]
    assert (chosen["camera"], chosen["camera_chosen"], chosen["restart_required"]) == ("door", "door", [])
    assert list(store.current.cameras)[0] == "door" and store.revisions()[0].restart == []
    with pytest.raises(ValueError, match="camera broken: no such device"):
        asyncio.run(controls.command({"cmd": "choose_source", "kind": "camera", "name": "broken"}))
    assert list(store.current.cameras)[0] == "door" and controls.running[0] == "door"  # nothing changed


def test_a_choice_the_config_cannot_keep_leaves_the_box_on_its_device(tmp_path: Path) -> None:
    """A sweep: the panel answered "refused" while the box had switched (the device changed first, the write
    failed after): panel, config and the running device disagreed. Now a choice the file cannot keep is
    refused before the device changes, and one whose write fails puts the box back on its device."""
    from appliance.control.store import StoreError

    switched: list[str] = []

    def switch(kind: str, name: str, new: Config) -> None:
        switched.append(name)

    def box_command(cmd: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {cmd.get('cmd')!r}")

    from appliance.app import demo_config
    from drivers.simroom.scenario import builtin_scenario

    # nine cameras, as roombox demo makes of a file with eight (its simulated room put in as "main"): no file
    # can say it, so no choice can be written
    eight = Config.model_validate({**DOC, "cameras": {f"c{i}": {"type": "file", "path": f"{i}.mp4"} for i in range(8)}})
    crowded = demo_config(builtin_scenario("default"), eight)
    store = ConfigStore(tmp_path / "crowded.toml", tmp_path / "crowded-revisions", crowded)
    controls = RoomControls(box_command, EventBus(), crowded, store=store, switch=switch)
    with pytest.raises(Exception, match="at most 8"):
        asyncio.run(controls.command({"cmd": "choose_source", "kind": "camera", "name": "c3"}))
    assert switched == [] and controls.running[0] == "main"
    # the file cannot be written (a directory in its place): switched, not saved, switched back
    cfg = Config.model_validate(DOC)
    path = tmp_path / "room.toml"
    path.write_text(config_to_toml(cfg))
    store = ConfigStore(path, tmp_path / "revisions", cfg)
    controls = RoomControls(box_command, EventBus(), cfg, store=store, switch=switch)
    path.unlink()
    path.mkdir()
    with pytest.raises(StoreError, match="not saved"):
        asyncio.run(controls.command({"cmd": "choose_source", "kind": "camera", "name": "door"}))
    assert switched == ["door", "main"] and controls.running[0] == "main"
    assert list(store.current.cameras)[0] == "main"


def test_a_revision_written_elsewhere_reaches_the_panels(tmp_path: Path) -> None:
    """A config written through the API or MQTT (the store, not the panel) is published as the room's state:
    before, the panels kept showing the devices and the pending restart of before the change."""
    cfg = Config.model_validate(DOC)
    store = ConfigStore(tmp_path / "room.toml", tmp_path / "revisions", cfg)
    events = EventBus()
    controls = RoomControls(lambda cmd: {}, events, cfg, store=store, on_config=lambda new: [])
    controls.publish()
    cameras: dict[str, Any] = {"main": {"type": "file", "path": "a.mp4"}, "door": {"type": "file", "path": "b.mp4"}}
    cameras["window"] = {"type": "file", "path": "c.mp4"}
    store.write(Config.model_validate({**DOC, "cameras": cameras}), "token it", lambda new: ["cameras"])
    room = events.snapshot()["room"]
    assert room["cameras"] == ["main", "door", "window"] and room["restart_required"] == ["cameras.window"]
    store.write(cfg, "token it", lambda new: [])  # taken back: nothing waits for a restart any more
    assert events.snapshot()["room"]["cameras"] == ["main", "door"]
    assert events.snapshot()["room"]["restart_required"] == []


def test_the_demo_keeps_the_devices_configured_besides_its_simulated_room(tmp_path: Path) -> None:
    """`roombox demo` puts the scenario's camera and mic array in as ``main``; the others configured (through
    the API, say) stay for the panel to choose. Before, they were dropped at each start, the store recorded a
    change "outside the API" and the next write of any key took them out of the file."""
    from appliance.app import demo_config
    from appliance.control import Control
    from drivers.simroom.scenario import builtin_scenario

    saved = Config.model_validate(DOC)  # main, door; the array "table"
    cfg = demo_config(builtin_scenario("short"), saved)
    assert list(cfg.cameras) == ["main", "door"] and cfg.cameras["door"] is saved.cameras["door"]
    assert type(cfg.camera).__name__ == "SimroomCameraConfig" and list(cfg.mic_arrays) == ["main", "table"]
    Control.for_box(cfg, home=tmp_path)  # a first start writes the file
    again = demo_config(builtin_scenario("short"), load_config(tmp_path / "config.toml"))
    control = Control.for_box(again, home=tmp_path)  # the next start: the same devices, no change recorded
    assert control.store is not None and again == cfg and len(control.store.revisions()) == 1


def test_the_demo_runs_a_ptz_head_with_its_own_camera(tmp_path: Path) -> None:
    """A config that `roombox run` takes, with a followed PTZ head whose picture is its own camera: the demo
    crashed on it (KeyError 'ptzcam': the demo had dropped every camera but its own), and so did the service,
    which runs `roombox demo`, with such a saved config."""
    from appliance.app import demo_config
    from appliance.config import parse_config
    from appliance.program import program_from_config
    from appliance.streaming.hub import LatestFrame
    from drivers.simroom.scenario import builtin_scenario

    head = {"type": "visca-ip", "host": "127.0.0.1", "camera": "ptzcam"}
    cams = {"main": {"type": "file", "path": "x.mp4"}, "ptzcam": {"type": "file", "path": str(tmp_path / "y.mp4")}}
    saved = parse_config({"cameras": cams, "ptz": {"head": head}, "ptz_follow": {"enabled": True}})
    program = program_from_config(demo_config(builtin_scenario("short"), saved), LatestFrame())
    assert program is not None and program.source.name == "ptzcam"


def test_the_mute_and_the_volume_are_kept_over_a_restart(tmp_path: Path) -> None:
    """A sweep of the panel: after the box restarted (a crash, an update), the room was unmuted and at full volume
    again, and the meeting it joined at start heard the room; the panel said nothing. Now the mute and the volume
    are kept in $ROOMBOX_HOME/room.json, and the box starts muted, before it joins a meeting, when it was."""
    from appliance.room_controls import KEPT_FILE, read_kept
    from tests.helpers.boxproc import BoxProcess
    from tests.test_control import _roombox
    from tests.test_demo_e2e import SHORT, free_port

    home = tmp_path / "home"
    muted: list[bool] = []

    def box_command(cmd: dict[str, Any]) -> dict[str, Any]:
        muted.append(bool(cmd["muted"]))
        return {"muted": muted[-1]}

    controls = RoomControls(box_command, EventBus(), Config(), kept_path=home / KEPT_FILE)
    asyncio.run(controls.command({"cmd": "set_mute", "muted": True}))
    asyncio.run(controls.command({"cmd": "set_volume", "volume": 30}))
    assert read_kept(home / KEPT_FILE) == {"muted": True, "volume": 30}
    (tmp_path / "damaged.json").write_text('{"muted": "yes"')
    assert read_kept(tmp_path / "damaged.json") == {} and read_kept(tmp_path / "none.json") == {}

    token = _roombox(home, "token", "create", "--scope", "read").stdout.strip()
    port = free_port()
    box = BoxProcess(["demo", "--port", str(port), "--scenario", str(SHORT)], home)
    box.start()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/state", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            room = json.loads(r.read())["room"]
        assert room["muted"] is True and room["volume"] == 30, room
        assert "microphones muted, as they were before the restart" in box.tail(), box.tail()
    finally:
        assert box.stop() == 0, box.tail()


def test_a_speaker_volume_configured_anew_is_not_overridden_by_the_panels_last() -> None:
    """A review: the volume kept over a restart replaced the config's speaker volume for good, so a volume set
    later in the config (the API, the fleet) had no effect after a restart."""
    from appliance.room_controls import kept_volume

    assert kept_volume({"muted": False, "volume": 30, "config_volume": 80}, 80) == 30  # the panel's, config as then
    assert kept_volume({"muted": False, "volume": 30, "config_volume": 80}, 40) is None  # the config changed since
    assert kept_volume({"muted": False, "volume": 30}, 80) is None  # kept before the config's volume was
    assert kept_volume({}, 80) is None
