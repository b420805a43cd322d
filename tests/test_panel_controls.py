"""The panel's controls end to end: ``roombox run`` on the simulated room (two cameras and two mic arrays
configured, a meeting in a real Janus VideoRoom and a WHIP endpoint that refuses), driven by clicks in real
headless Chromium; each click is checked in the box's state (``/api/state``, the config file, Janus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.boxproc import BoxProcess
from tests.janus_fixture import ROOM, Janus, free_port
from tests.test_streaming import run_async

ROOT = Path(__file__).resolve().parent.parent
PIN = "2468"

CONFIG = """
[cameras.main]
type = "simroom"
scenario = "short"

[cameras.door]
type = "simroom"
scenario = "short"

[mic_arrays.table]
type = "simroom"
scenario = "short"

[mic_arrays.ceiling]
type = "simroom"
scenario = "short"

[stream]
width = 640
height = 360
fps = 15.0
codecs = ["VP8"]

[director]
manual_resume_s = 30.0

[janus]
url = "{janus}"
room = {room}
display = "roombox"
retry_min_s = 0.5
retry_max_s = 2.0

[whip]
url = "{whip}"
token = "not-the-token"
"""


def roombox(home: Path, *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "ROOMBOX_HOME": str(home)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class RunningBox:
    """``roombox run`` on 127.0.0.1 with a control token (the kiosk's) and an admin PIN."""

    def __init__(self, folder: Path, janus: Janus, whip_url: str) -> None:
        self.home = folder / "home"
        self.config = folder / "room.toml"
        self.config.write_text(CONFIG.format(janus=janus.url, room=ROOM, whip=whip_url))
        self.token = roombox(self.home, "token", "create", "--scope", "control", "--name", "kiosk").strip().split()[-1]
        roombox(self.home, "pin", "set", stdin=PIN + "\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = BoxProcess(["run", "--config", str(self.config), "--port", str(self.port)], self.home)
        self.out = self.process.out
        self.process.start()

    def state(self) -> dict[str, Any]:
        req = urllib.request.Request(self.url + "/api/state", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def room(self) -> dict[str, Any]:
        room: dict[str, Any] = self.state()["room"]
        return room

    def meeting(self, name: str) -> dict[str, Any]:
        return next(m for m in self.room()["meetings"] if m["name"] == name)

    def close(self) -> int:
        return self.process.stop()


def until(check: Callable[[], Any], what: str, bound_s: float = 60.0) -> Any:
    """Poll ``check()`` until it is truthy; a bound for a box that never gets there, not a figure."""
    deadline = time.monotonic() + bound_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)
    return value


@pytest.fixture(scope="module")
def janus(chromium: Any) -> Iterator[Janus]:
    """Janus, started after Chromium so that it is stopped before the Chromium fixture looks for leftovers."""
    with Janus.running() as j:
        yield j


@pytest.fixture(scope="module")
def box(janus: Janus) -> Iterator[RunningBox]:
    with tempfile.TemporaryDirectory(prefix="roombox-panel-") as folder:
        # Janus's HTTP API is no WHIP endpoint: the publisher gets a refusal it cannot retry away
        b = RunningBox(Path(folder), janus, janus.url.replace("/janus", "/whip/endpoint/nothing"))
        try:
            yield b
        finally:
            code = b.close()
        assert code == 0, "roombox run did not stop cleanly:\n" + "".join(b.out[-40:])


def test_bad_commands_are_refused_with_the_reason_and_change_nothing(box: RunningBox) -> None:
    async def talk() -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {box.token}"}
        async with aiohttp.ClientSession() as s, s.ws_connect(box.url + "/ws", headers=headers) as ws:
            out = []
            for cmd in (
                {"cmd": "join", "meeting": "zoom"},
                {"cmd": "set_mute", "muted": "yes"},
                {"cmd": "set_volume", "volume": 150},
                {"cmd": "set_volume", "volume": True},
                {"cmd": "choose_source", "kind": "camera", "name": "attic"},
                {"cmd": "choose_source", "kind": "speaker", "name": "main"},
            ):
                await ws.send_json(cmd)
                while (msg := await ws.receive_json(timeout=30))["kind"] not in ("reply", "error"):
                    pass
                out.append(msg)
            return out

    before = box.room()
    replies = run_async(talk())
    assert all(r["kind"] == "error" for r in replies), replies
    errors = [r["data"]["error"] for r in replies]
    assert errors[0] == "no meeting 'zoom' configured; configured: janus, whip"
    assert "set_mute wants muted: true or false" in errors[1]
    assert "from 0 to 100, not 150" in errors[2] and "not True" in errors[3]
    assert errors[4] == "no camera 'attic' in [cameras]; configured: main, door"
    assert "kind camera or mic_array" in errors[5]
    after = box.room()
    keys = ("muted", "volume", "camera_chosen", "mic_array_chosen", "restart_required")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}


VISIBLE_TARGETS = """() => [...document.querySelectorAll('button, input, select')]
  .filter((e) => e.offsetParent !== null)
  .map((e) => { const r = e.getBoundingClientRect();
    return {id: e.id || e.dataset.key || e.dataset.mode || e.dataset.ptz || e.textContent.trim(),
            w: Math.round(r.width), h: Math.round(r.height)}; })"""

LAYOUT = """() => { const s = document.querySelector('.stage').getBoundingClientRect();
  const a = document.querySelector('.side').getBoundingClientRect();
  return {stage: [s.left, s.top, s.right, s.bottom], side: [a.left, a.top, a.right, a.bottom]}; }"""


def _audio_levels(page: Any, seconds: float) -> list[float]:
    levels = []
    for _ in range(int(seconds / 0.25)):
        levels.append(page.evaluate("window.roombox.rtcSummary()")["audio"]["audioLevel"] or 0.0)
        page.wait_for_timeout(250)
    return levels


@pytest.mark.e2e
def test_panel_runs_the_room_in_chromium(box: RunningBox, janus: Janus, chromium: Any, artifacts_dir: Path) -> None:
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(box.url + "/#token=" + box.token)
        page.wait_for_function("window.roombox.room !== null && window.roombox.framesDecoded > 5", timeout=90_000)

        # -- meetings: the configured ones with their state; Leave and Join change the box's -----------
        janus_row, whip_row = "#meetings [data-meeting=janus]", "#meetings [data-meeting=whip]"
        page.wait_for_selector(f"{janus_row} [data-state='in meeting']", timeout=60_000)
        until(lambda: any(p["packets"] > 0 for p in janus.published()), "the room's video received by Janus")
        page.wait_for_selector(f"{whip_row} [data-state=failed]", timeout=60_000)
        assert "whip" in page.inner_text(f"{whip_row} .meeting-detail").lower()  # the reason, on the panel
        page.click(f"{janus_row} button")  # Leave
        page.wait_for_selector(f"{janus_row} [data-state=idle]", timeout=60_000)
        assert box.meeting("janus")["state"] == "stopped"
        until(lambda: not janus.sessions(), "no session left in Janus")
        page.click(f"{janus_row} button")  # Join
        page.wait_for_selector(f"{janus_row} [data-state='in meeting']", timeout=60_000)
        assert box.meeting("janus")["state"] == "connected"

        # -- microphones: muted, the box sends silence (heard in the panel's own preview) ---------------
        page.click("#sound")
        until(lambda: max(_audio_levels(page, 2.0)) > 1e-3, "the room's sound in the preview")
        page.click("#mute")
        page.wait_for_selector("#muted-badge:not(.hidden)", timeout=30_000)
        assert page.inner_text("#muted-badge").lower() == "microphones muted"
        assert page.is_visible("#muted-banner")
        assert box.room()["muted"] is True
        # what was on its way before the mute drains (the receiver's level lags it, longer on a busy machine);
        # then it stays silent
        until(lambda: max(_audio_levels(page, 0.5)) < 1e-4, "silence in the preview after muting", bound_s=15.0)
        (artifacts_dir / "panel-muted.png").write_bytes(page.screenshot())
        assert max(_audio_levels(page, 3.0)) < 1e-4, "the room is still heard while muted"
        page.click("#mute")
        page.wait_for_selector("#muted-badge.hidden", state="attached", timeout=30_000)
        assert box.room()["muted"] is False
        until(lambda: max(_audio_levels(page, 2.0)) > 1e-3, "the room's sound back after unmuting")

        # -- speaker volume ----------------------------------------------------------------------------
        page.click("#vol-down")
        page.wait_for_function("window.roombox.room.volume === 90", timeout=30_000)
        page.click("#vol-down")
        page.wait_for_function("document.getElementById('volume-value').textContent === '80'", timeout=30_000)
        assert box.room()["volume"] == 80

        # -- framing mode --------------------------------------------------------------------------------
        page.click("#modes [data-mode=group]")
        page.wait_for_selector("#modes [data-mode=group][aria-pressed=true]", timeout=30_000)
        assert box.room()["policy"] == "group"

        # -- camera and microphones: the box changes device at once, and the choice is a config revision ---
        page.click("#cameras [data-name=door]")
        page.wait_for_selector("#cameras [data-name=door][aria-pressed=true]", timeout=30_000)
        page.click("#mic-arrays [data-name=ceiling]")
        page.wait_for_function("window.roombox.room.mic_array_chosen === 'ceiling'", timeout=30_000)
        assert page.inner_text("#sources-note") == ""  # nothing waits for a restart
        room = box.room()
        assert (room["camera"], room["camera_chosen"], room["mic_array"], room["mic_array_chosen"]) == (
            "door",
            "door",
            "ceiling",
            "ceiling",
        )
        assert not {"cameras", "mic_arrays"} & set(room["restart_required"])
        # the new devices deliver: the camera's info names it, and both report running again
        until(lambda: box.state().get("camera", {}).get("name") == "door", "the door camera's info")
        until(
            lambda: all(box.state().get(f"device:{d}", {}).get("state") == "running" for d in ("camera", "mic_array")),
            "the new camera and mic array running",
        )
        written = tomllib.loads(box.config.read_text())
        assert list(written["cameras"]) == ["door", "main"] and list(written["mic_arrays"]) == ["ceiling", "table"]

        # -- settings behind the admin PIN: refusals show the reason; a good change is written ---------
        page.click("#settings-open")
        page.wait_for_selector("#pin-pad:not(.hidden)", timeout=30_000)
        for key in "1111":
            page.click(f"#keys [data-key='{key}']")
        page.click("#keys [data-key=enter]")
        page.wait_for_function("window.roombox.settings && window.roombox.settings.text === 'wrong PIN'")
        for key in PIN:
            page.click(f"#keys [data-key='{key}']")
        page.click("#keys [data-key=enter]")
        page.wait_for_selector("#settings:not(.hidden)", timeout=30_000)
        assert page.input_value("#set-resume") == "30.0" or page.input_value("#set-resume") == "30"
        page.fill("#set-resume", "-5")
        page.click("#settings-save")
        page.wait_for_function("window.roombox.settings && window.roombox.settings.ok === false", timeout=30_000)
        assert "[director.manual_resume_s] Input should be greater than or equal to 0" in page.inner_text(
            "#settings-msg"
        )
        page.fill("#set-resume", "12")
        page.fill("#set-exclude", "50,10")
        page.click("#settings-save")
        page.wait_for_function("document.getElementById('settings-msg').textContent.includes('range 0')")
        assert "give [from, to] with -180 <= from < to <= 180" in page.inner_text("#settings-msg")
        assert tomllib.loads(box.config.read_text())["director"]["manual_resume_s"] == 30.0  # nothing written
        page.fill("#set-exclude", "-90,-60; 40, 55")
        page.select_option("#set-mode", "group")
        page.click("#settings-save")
        page.wait_for_function("window.roombox.settings.ok === true", timeout=30_000)
        assert page.inner_text("#settings-msg").startswith("saved as revision")
        director = tomllib.loads(box.config.read_text())["director"]
        assert (director["mode"], director["manual_resume_s"], director["exclude_deg"]) == (
            "group",
            12.0,
            [[-90.0, -60.0], [40.0, 55.0]],
        )
        # changed elsewhere since the form was filled: the form shows what is in force and says so (before, every
        # save answered 412 until the form was closed and opened again)
        page.evaluate(
            """async () => { const d = await (await fetch('/api/config')).json(); d.director.manual_resume_s = 44;
            await fetch('/api/config', {method: 'PUT', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify(d)}); }"""
        )
        page.fill("#set-resume", "13")
        page.click("#settings-save")
        page.wait_for_function(
            "document.getElementById('settings-msg').textContent.includes('shown again')", timeout=30_000
        )
        assert page.input_value("#set-resume") in ("44", "44.0")
        # two taps on Save at once: the first saves, the second waits for it (before, the second's 412 replaced the
        # first's "saved" with a refusal)
        page.fill("#set-resume", "14")
        page.evaluate("() => { const b = document.getElementById('settings-save'); b.click(); b.click(); }")
        page.wait_for_function(
            "window.roombox.settings.ok === true"
            " && document.getElementById('settings-msg').textContent.startsWith('saved')",
            timeout=30_000,
        )
        page.wait_for_timeout(1000)  # a second save, had it gone, would have answered by now
        assert page.inner_text("#settings-msg").startswith("saved as revision")
        assert tomllib.loads(box.config.read_text())["director"]["manual_resume_s"] == 14.0

        # -- big touch targets, landscape and portrait ------------------------------------------------
        for name, size in (("landscape", (1280, 800)), ("portrait", (800, 1280))):
            page.set_viewport_size({"width": size[0], "height": size[1]})
            page.evaluate("document.querySelector('.side').scrollTop = 0")
            page.wait_for_timeout(500)
            targets = page.evaluate(VISIBLE_TARGETS)
            assert len(targets) > 20, targets
            small = [t for t in targets if t["w"] < 48 or t["h"] < 48]
            assert not small, f"{name}: touch targets under 48 px: {small}"
            layout = page.evaluate(LAYOUT)
            stage, side = layout["stage"], layout["side"]
            if name == "landscape":
                assert stage[2] <= side[0], layout  # the picture beside the controls
            else:
                assert stage[3] <= side[1] and side[2] - side[0] > 700, layout  # the picture above them
            assert stage[2] <= size[0] and side[2] <= size[0], layout
            (artifacts_dir / f"panel-{name}.png").write_bytes(page.screenshot())
        assert not errors, errors
    finally:
        page.close()
