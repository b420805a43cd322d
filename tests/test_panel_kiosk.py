"""The panel as a kiosk and on a touch screen, in real headless Chromium against ``roombox run`` on the simulated
room: it signs in again by itself after the box restarts (and forgets a token the box no longer takes), takes a
new kiosk link without a reload, greys the room's state while it cannot know it, counts fast taps from what it
sent, starts manual framing from the box's shot, fills "Why this shot" on connect, says a refused camera beside
the choice, fits a 480x800 portrait screen, reads the settings' numbers as people type them, and takes the PIN
from a keyboard with a countdown through the back-off."""

from __future__ import annotations

import json
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.boxproc import BoxProcess
from tests.janus_fixture import free_port
from tests.test_panel_controls import PIN, roombox, until

CONFIG = """
[cameras.main]
type = "simroom"
scenario = "short"

[cameras.broken]
type = "file"
path = "{folder}/no-such-video.mp4"

[mic_arrays.table]
type = "simroom"
scenario = "short"

[stream]
width = 640
height = 360
fps = 15.0
codecs = ["VP8"]

[director]
manual_resume_s = 30.0

[access]
pin_free_tries = 1
"""

# every command the page sends on its socket, for checking what a tap computed
RECORD_COMMANDS = """
window.__sent = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  try { window.__sent.push(JSON.parse(data)); } catch (e) { /* not JSON */ }
  return send.call(this, data);
};
"""
# the page has sent commands and the box has answered the last one
ANSWERED = """() => window.__sent.length > 0 && window.roombox.lastReply !== null
  && window.roombox.lastReply.id >= window.__sent[window.__sent.length - 1].id"""
LIVE = "() => window.roombox.wsConnected && window.roombox.room !== null && window.roombox.framesDecoded > 3"


class Box:
    """``roombox run`` that can be stopped and started again on the same home (tokens, PIN, config) and port."""

    def __init__(self, folder: Path, config: str | None = None) -> None:
        self.home = folder / "home"
        self.config = folder / "room.toml"
        self.config.write_text(CONFIG.format(folder=folder) if config is None else config)
        self.token = roombox(self.home, "token", "create", "--scope", "control", "--name", "kiosk").strip().split()[-1]
        self.admin = roombox(self.home, "token", "create", "--scope", "admin", "--name", "test").strip().split()[-1]
        roombox(self.home, "pin", "set", stdin=PIN + "\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = BoxProcess(["run", "--config", str(self.config), "--port", str(self.port)], self.home)
        self.out = self.process.out
        self.start()

    def start(self) -> None:
        self.process.start()

    def stop(self) -> int:
        """Stop the box by its PID (SIGTERM); its exit code."""
        return self.process.stop()

    def state(self) -> dict[str, Any]:
        req = urllib.request.Request(self.url + "/api/state", headers={"Authorization": f"Bearer {self.admin}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def room(self) -> dict[str, Any]:
        room: dict[str, Any] = self.state()["room"]
        return room


@pytest.fixture(scope="module")
def box(chromium: Any) -> Iterator[Box]:
    with tempfile.TemporaryDirectory(prefix="roombox-kiosk-") as folder:
        b = Box(Path(folder))
        try:
            yield b
        finally:
            code = b.stop()
        assert code == 0, "roombox run did not stop cleanly:\n" + "".join(b.out[-40:])


def _panel(chromium: Any, box: Box, width: int = 1280, height: int = 800, token: str | None = None) -> Any:
    page = chromium.new_page(viewport={"width": width, "height": height})
    page.add_init_script(RECORD_COMMANDS)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(box.url + "/#token=" + (token or box.token))
    page.wait_for_function(LIVE, timeout=90_000)
    return page


def _send(page: Any, cmd: dict[str, Any]) -> Any:
    """A command straight on the page's socket, as another panel would send it (the panel's own state untouched)."""
    return page.evaluate("(cmd) => window.roombox.send(cmd)", cmd)


def _last_sent(page: Any, cmd: str) -> dict[str, Any]:
    sent: dict[str, Any] = page.evaluate("(c) => window.__sent.filter((m) => m.cmd === c).pop()", cmd)
    return sent


def _ptz_of(crop: list[int], width: int, height: int) -> tuple[float, float]:
    """(pan, zoom) of a crop of a 16:9 picture (the stream's aspect)."""
    x, _, w, _ = crop
    return (2 * x / (width - w) - 1 if width - w > 1 else 0.0), width / w


@pytest.mark.e2e
def test_taps_faster_than_the_box_count_from_what_was_sent(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)
    try:
        # five "−" taps in one tick from 100: five steps down (before: each from the confirmed 100, so 90)
        _send(page, {"cmd": "set_volume", "volume": 100})
        page.wait_for_function("window.roombox.room.volume === 100", timeout=30_000)
        page.evaluate("() => { const b = document.getElementById('vol-down'); for (let i = 0; i < 5; i++) b.click(); }")
        page.wait_for_function(ANSWERED, timeout=30_000)
        assert [m["volume"] for m in page.evaluate("window.__sent") if m["cmd"] == "set_volume"][-5:] == [
            90,
            80,
            70,
            60,
            50,
        ]
        assert box.room()["volume"] == 50
        page.wait_for_function("document.getElementById('volume-value').textContent === '50'", timeout=30_000)

        # two mute taps in one tick, muted: the room stays muted (before: both sent "unmute")
        _send(page, {"cmd": "set_mute", "muted": True})
        page.wait_for_selector("#muted-badge:not(.hidden)", timeout=30_000)
        page.evaluate("() => { const b = document.getElementById('mute'); b.click(); b.click(); }")
        page.wait_for_function(ANSWERED, timeout=30_000)
        assert box.room()["muted"] is True
        page.wait_for_selector("#muted-badge:not(.hidden)", timeout=30_000)
        _send(page, {"cmd": "set_mute", "muted": False})

        # manual framing starts from the box's shot, framed elsewhere (another panel, here straight on the socket):
        # zoomed in twice, to the right; one tap right goes on from there (before: from this panel's own memory)
        camera = box.state()["camera"]
        width, height = camera["width"], camera["height"]
        _send(page, {"cmd": "ptz", "pan": 0.5, "tilt": 0.0, "zoom": 2.0})
        page.wait_for_function(
            f"(() => {{ const s = window.roombox.lastShot; return s && s.policy === 'manual'"
            f" && Math.abs(s.crop[2] - {width / 2}) < 4; }})()",
            timeout=30_000,
        )
        page.click("#ptz [data-ptz=right]")
        page.wait_for_function(ANSWERED, timeout=30_000)
        sent = _last_sent(page, "ptz")
        assert abs(sent["pan"] - 0.75) < 0.03 and abs(sent["zoom"] - 2.0) < 0.05 and abs(sent["tilt"]) < 0.03, sent

        def shown() -> bool:
            pan, zoom = _ptz_of(box.state()["shot"]["crop"], width, height)
            return abs(pan - 0.75) < 0.03 and abs(zoom - 2.0) < 0.05

        until(shown, "the box's shot a step right of the one framed elsewhere, as zoomed in", bound_s=30)

        # PTZ taps in one tick: each from the last sent (home, then in twice and right three times)
        page.evaluate(
            """() => { const t = (k) => document.querySelector(`#ptz [data-ptz=${k}]`).click();
              t('home'); t('in'); t('in'); t('right'); t('right'); t('right'); }"""
        )
        page.wait_for_function(ANSWERED, timeout=30_000)
        sent = _last_sent(page, "ptz")
        assert abs(sent["zoom"] - 1.5625) < 1e-6 and sent["pan"] == 0.75 and sent["tilt"] == 0, sent
        until(
            lambda: abs(_ptz_of(box.state()["shot"]["crop"], width, height)[1] - 1.5625) < 0.03,
            "the box's shot at the zoom sent",
            bound_s=30,
        )
        # the whole view cannot pan: taps left there build up nothing that a later zoom would jump to
        page.click("#ptz [data-ptz=home]")
        page.wait_for_function(ANSWERED, timeout=30_000)
        page.evaluate("() => { for (let i = 0; i < 4; i++) document.querySelector('#ptz [data-ptz=left]').click(); }")
        page.wait_for_function(ANSWERED, timeout=30_000)
        assert _last_sent(page, "ptz")["pan"] == 0
        assert not page.errors, page.errors
    finally:
        page.close()


@pytest.mark.e2e
def test_why_this_shot_is_filled_on_connect(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)
    try:
        # manual framing: the box's latest cut, and no other for manual_resume_s (30 s)
        _send(page, {"cmd": "ptz", "pan": 0.0, "tilt": 0.0, "zoom": 1.5})
        until(
            lambda: "manual framing" in box.state()["decisions"]["cuts"][0]["reason"],
            "the manual cut in the box's decisions",
        )
        page.reload()  # a panel opened now: before, "no cut yet" until the next cut
        page.wait_for_function(LIVE, timeout=90_000)
        page.wait_for_function(
            "document.querySelector('#why li').textContent.includes('manual framing from the panel')",
            timeout=15_000,
        )
        assert not page.errors, page.errors
    finally:
        page.close()


@pytest.mark.e2e
def test_a_refused_camera_is_said_beside_the_choice(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)
    try:
        page.click("#cameras [data-name=broken]")
        page.wait_for_function("document.getElementById('sources-note').textContent.includes('broken')", timeout=60_000)
        note = page.inner_text("#sources-note")
        assert "no-such-video.mp4" in note and "bad" in page.get_attribute("#sources-note", "class"), note
        assert box.room()["camera"] == "main"
        # a later good choice (the one in use) clears it
        page.click("#cameras [data-name=main]")
        page.wait_for_function("document.getElementById('sources-note').textContent === ''", timeout=30_000)
        # a device that is down says why in words on the card (before: only in a hover tooltip, which a touch
        # panel cannot show)
        why = page.evaluate(
            """() => { const r = window.roombox;
            r.devices = {...r.devices, speaker: {state: "retrying", detail: "after 4.0 s; it was lost: gone"}};
            drawDevices(); return document.getElementById('devices-why').textContent; }"""
        )
        assert why == "speaker: after 4.0 s; it was lost: gone", why
        assert not page.errors, page.errors
    finally:
        page.close()


MODE_BUTTONS = """() => [...document.querySelectorAll('#modes [data-mode]')].map((b) => {
  const r = b.getBoundingClientRect();
  return {mode: b.dataset.mode, box: [r.left, r.top, r.right, r.bottom], fits: b.scrollWidth <= b.clientWidth}; })"""


@pytest.mark.e2e
def test_portrait_480x800_fits_without_sideways_scroll(box: Box, chromium: Any, artifacts_dir: Path) -> None:
    page = _panel(chromium, box, 480, 800)
    try:
        page.wait_for_timeout(300)  # a layout pass after the room's state came
        side = page.evaluate(
            "(() => { const s = document.querySelector('.side');"
            " return {scroll: s.scrollWidth, client: s.clientWidth}; })()"
        )
        assert side["scroll"] <= side["client"], side
        buttons = page.evaluate(MODE_BUTTONS)
        assert all(b["fits"] for b in buttons), buttons
        for i, a in enumerate(buttons):
            for b in buttons[i + 1 :]:
                ax0, ay0, ax1, ay1 = a["box"]
                bx0, by0, bx1, by1 = b["box"]
                overlap = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
                assert overlap == 0, (a, b)
        (artifacts_dir / "panel-480x800.png").write_bytes(page.screenshot(full_page=True))
    finally:
        page.close()


@pytest.mark.e2e
def test_pin_from_a_keyboard_with_a_countdown_through_the_back_off(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)
    tries: list[str] = []
    page.on("request", lambda r: tries.append(r.url) if r.method == "POST" and "/api/session" in r.url else None)
    too_soon: list[int] = []  # a try the box refused for coming inside its back-off (429)
    page.on("response", lambda r: too_soon.append(r.status) if "/api/session" in r.url and r.status == 429 else None)
    try:
        page.click("#settings-open")
        page.wait_for_selector("#pin-pad:not(.hidden)", timeout=30_000)
        page.keyboard.type("13579")
        page.keyboard.press("Backspace")
        page.wait_for_function("document.getElementById('pin-dots').textContent === '••••'")
        page.keyboard.press("Enter")
        # one free try ([access] pin_free_tries = 1): the first wrong PIN starts the back-off, and says so
        page.wait_for_function("window.roombox.settings && window.roombox.settings.text.startsWith('wrong PIN')")
        page.wait_for_function("window.roombox.settings.text === 'you may try the PIN again'", timeout=30_000)
        # wrong again until the box makes the next try wait 3 s or more (the waits double: 1, 2, 4 s): a countdown,
        # and nothing sent until it ends
        for _ in range(8):
            page.evaluate("window.roombox.settings = null")
            page.keyboard.type("1111")
            page.keyboard.press("Enter")
            page.wait_for_function("window.roombox.settings !== null", timeout=30_000)
            text = page.evaluate("window.roombox.settings.text")
            if text.startswith("wrong PIN: try again in") and int(text.split()[-2]) >= 3:
                break
            if "try again in" in text:
                page.wait_for_function("!window.roombox.settings.text.includes('try again in')", timeout=30_000)
        else:
            raise AssertionError("the box never made the PIN wait")
        sent = len(tries)
        first = int(text.split()[-2])
        page.keyboard.type("1111")
        page.keyboard.press("Enter")
        page.click("#keys [data-key=enter]", force=True)
        assert page.is_disabled("#keys [data-key=enter]")
        page.wait_for_function(  # it counts down
            "(first) => { const m = /in (\\d+) s$/.exec(window.roombox.settings.text); return m && +m[1] < first; }",
            arg=first,
            timeout=30_000,
        )
        assert len(tries) == sent, "a PIN was sent during the back-off"
        # the wrong PIN's own answer says the wait it starts: no try is sent only to learn it (before: one each)
        assert not too_soon, too_soon
        page.wait_for_function("window.roombox.settings.text === 'you may try the PIN again'", timeout=30_000)
        assert not page.is_disabled("#keys [data-key=enter]")
        page.keyboard.press("Backspace")  # what was typed during the wait, if anything
        for _ in range(12):
            page.keyboard.press("Backspace")
        page.keyboard.type(PIN)
        page.keyboard.press("Enter")
        page.wait_for_selector("#settings:not(.hidden)", timeout=30_000)
        assert not page.errors, page.errors
    finally:
        page.close()


@pytest.mark.e2e
def test_settings_read_numbers_as_typed_and_say_what_is_wrong(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)

    def director() -> dict[str, Any]:
        d: dict[str, Any] = tomllib.loads(box.config.read_text()).get("director", {})
        return d

    def save(resume: str, exclude: str) -> dict[str, Any]:
        page.fill("#set-resume", resume)
        page.fill("#set-exclude", exclude)
        page.evaluate("window.roombox.settings = null")
        page.click("#settings-save")
        page.wait_for_function("window.roombox.settings !== null && window.roombox.settings.text !== ''")
        result: dict[str, Any] = page.evaluate("window.roombox.settings")
        return result

    try:
        page.click("#settings-open")
        for key in PIN:
            page.click(f"#keys [data-key='{key}']")
        page.click("#keys [data-key=enter]")
        page.wait_for_selector("#settings:not(.hidden)", timeout=30_000)
        # a decimal comma: 1.5 s (before: saved as 15)
        outcome = save("1,5", "")
        assert outcome["ok"] and outcome["text"].startswith("saved as revision"), outcome
        assert director()["manual_resume_s"] == 1.5
        # not a number: said in plain words, naming the field; the green "saved" does not stay
        for bad in ("abc", "", "1e309", "--5"):
            outcome = save(bad, "")
            assert not outcome["ok"], (bad, outcome)
            assert "Automatic framing resumes after manual: give a number of seconds" in outcome["text"], outcome
            assert "good" not in (page.get_attribute("#settings-msg", "class") or "")
        assert director()["manual_resume_s"] == 1.5
        # exclusion ranges: one number is not a range (before: "[director.exclude_deg.0.1] Field required"); a
        # range given twice is refused
        outcome = save("2", "5")
        assert not outcome["ok"] and "give ranges as from,to" in outcome["text"], outcome
        assert "Field required" not in outcome["text"]
        outcome = save("2", "40,55;40,55")
        assert not outcome["ok"] and "given twice" in outcome["text"], outcome
        assert director()["manual_resume_s"] == 1.5 and director().get("exclude_deg", []) == []
        outcome = save("2.5", "40,55")
        assert outcome["ok"], outcome
        assert (director()["manual_resume_s"], director()["exclude_deg"]) == (2.5, [[40.0, 55.0]])
        # a field edited after a save: the green "saved" goes (it does not describe the form any more)
        page.fill("#set-resume", "7")
        page.wait_for_function("document.getElementById('settings-msg').textContent === ''")
        assert not page.errors, page.errors
    finally:
        page.close()


@pytest.mark.e2e
def test_a_new_kiosk_link_signs_in_without_a_reload(box: Box, chromium: Any) -> None:
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(box.url + "/")  # no token: sign-in needed
        page.wait_for_function(
            "document.getElementById('conn-text').textContent.includes('sign-in needed')", timeout=60_000
        )
        page.evaluate("window.__notReloaded = true")
        page.evaluate("(t) => { location.hash = '#token=' + t; }", box.token)
        page.wait_for_function(LIVE, timeout=60_000)
        assert page.evaluate("window.__notReloaded") is True
        assert page.evaluate("window.roombox.signedIn") is True and "#token" not in page.url
        page.wait_for_function("!window.roombox.roomStale", timeout=30_000)
    finally:
        page.close()


STALE = """() => window.roombox.roomStale && document.body.classList.contains('stale')
  && document.getElementById('muted-badge').classList.contains('hidden')
  && document.getElementById('muted-banner').classList.contains('hidden')
  && document.getElementById('mute').dataset.state === 'unknown'
  && document.getElementById('volume-value').textContent === '–'"""

FRESH = """(frames) => { const r = window.roombox; return r.wsConnected && !r.roomStale && r.connected
  && r.framesDecoded > frames + 5 && r.room.muted === true && r.room.volume === 90
  && !document.getElementById('muted-badge').classList.contains('hidden')
  && document.getElementById('mute').dataset.state === 'muted'
  && document.getElementById('volume-value').textContent === '90'; }"""


@pytest.mark.e2e
def test_kiosk_signs_in_again_after_a_box_restart(box: Box, chromium: Any, artifacts_dir: Path) -> None:
    page = _panel(chromium, box)
    # the room display (the TV) on a token of its own: it too signs in again after the restart
    tv_token = roombox(box.home, "token", "create", "--scope", "read", "--name", "tv").strip().split()[-1]
    tv = chromium.new_page()
    tv.goto(box.url + "/display#token=" + tv_token)
    tv.wait_for_function("window.roomboxDisplay.state === 'connected'", timeout=60_000)
    try:
        assert page.evaluate("sessionStorage.getItem('roombox.token')") == box.token
        assert "#token" not in page.url
        _send(page, {"cmd": "set_volume", "volume": 100})
        page.click("#mute")
        page.wait_for_selector("#muted-badge:not(.hidden)", timeout=30_000)
        page.click("#vol-down")
        page.wait_for_function("document.getElementById('volume-value').textContent === '90'", timeout=30_000)

        # the box goes: what the panel shows of the room is not claimed true any more (before: "muted", 90)
        assert box.stop() == 0, "".join(box.out[-40:])
        page.wait_for_function(STALE, timeout=30_000)
        (artifacts_dir / "panel-box-down.png").write_bytes(page.screenshot())
        page.click("#mute")  # said under Sound, where it was tapped (before: under Framing)
        assert page.inner_text("#sound-error") == "not connected to the box"
        assert page.inner_text("#panel-error") == ""

        # ... and comes back (still muted at 90, kept over the restart in room.json; the sessions it had
        # forgotten): the panel signs in again with the token it was opened with, and shows the box's fresh
        # state (before: "sign-in needed" for good)
        frames = page.evaluate("window.roombox.framesDecoded")
        box.start()
        page.wait_for_function(FRESH, arg=frames, timeout=90_000)
        assert page.evaluate("window.roombox.signedIn") is True
        assert box.state()["stream"]["viewers"] >= 1
        tv.wait_for_function(
            "window.roomboxDisplay.reconnects > 0 && window.roomboxDisplay.state === 'connected'", timeout=120_000
        )
        assert tv.evaluate("window.roomboxDisplay.signedIn") is True and "#token" not in tv.url

        # the token revoked: the box ends the session, the panel cannot sign in again, forgets it and says so
        roombox(box.home, "token", "revoke", "kiosk")
        page.wait_for_function(
            "window.roombox.signedIn === false"
            " && document.getElementById('conn-text').textContent.includes('sign-in needed')",
            timeout=60_000,
        )
        assert page.evaluate("sessionStorage.getItem('roombox.token')") is None
        page.wait_for_function(STALE, timeout=30_000)
        # and it stays so: the video tries again, and nothing signs the panel in
        tried = page.evaluate("window.roombox.reconnects")
        page.wait_for_function("(n) => window.roombox.reconnects > n", arg=tried, timeout=60_000)
        assert page.evaluate("window.roombox.signedIn") is False and not page.evaluate("window.roombox.wsConnected")
        assert not page.errors, page.errors
    finally:
        tv.close()
        page.close()
