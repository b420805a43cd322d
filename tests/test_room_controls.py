"""The room's controls without a browser: the source choice as a config revision needing a restart (the
running box keeps its devices), the volume handed to the far end's audio path, the state on the bus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config, config_to_toml
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
