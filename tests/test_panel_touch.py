"""The panel under people's fingers, in real headless Chromium against ``roombox run`` on the simulated room: a
tap means what the button showed when the person decided (two panels muting at once leave the room muted), the
volume slider is not pulled from under a dragging finger by the box's events, settings typed when admin rights
ran out survive the PIN, a box that goes down is said at once and in words, a retrying meeting reads "retrying"
("Stop trying"), a Join on a failed meeting says it is trying again, and the small things (the Sound button
names its action, the shot's reason ends in an ellipsis, no monotonic clock in the Box stats, a closed settings
form leaves no message behind, no "−0.0°", a paragraph of error clamped to three lines)."""

from __future__ import annotations

import http.server
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_panel_controls import PIN, until
from tests.test_panel_kiosk import ANSWERED, LIVE, _panel, _send
from tests.test_panel_kiosk import Box as KioskBox

CONFIG = """
[cameras.main]
type = "simroom"
scenario = "short"

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
pin_minutes = {pin_minutes}

[whip]
url = "{whip}"
retry_min_s = 0.5
retry_max_s = 1.0
connect_timeout_s = 3.0
"""

PIN_MINUTES = 0.25  # 15 s of admin rights after the PIN: long enough to save, short enough to wait out

WHIP_ROW = "#meetings li[data-meeting=whip]"
# the number beside the volume slider as it is seen: its text and the unit the style sheet puts after it
SHOWN_VOLUME = """() => { const e = document.getElementById('volume-value');
  const after = getComputedStyle(e, '::after').content;
  const unit = after && after !== 'none' ? JSON.parse(after) : '';
  return (e.textContent + unit).replace(/\\u00a0/g, ' '); }"""


class Whip(http.server.ThreadingHTTPServer):
    """A WHIP endpoint that answers every offer with ``status`` (503: the publisher retries; 403: it fails)."""

    status = 503


class WhipHandler(http.server.BaseHTTPRequestHandler):
    server: Whip

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"not now" if self.server.status >= 500 else b"this endpoint takes no publisher"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Box(KioskBox):
    """``roombox run`` (a kiosk token, an admin token, the PIN) on this file's config, with a WHIP endpoint."""

    def meeting(self, name: str) -> dict[str, Any]:
        return next(m for m in self.room()["meetings"] if m["name"] == name)


@pytest.fixture(scope="module")
def whip() -> Iterator[Whip]:
    server = Whip(("127.0.0.1", 0), WhipHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def box(chromium: Any, whip: Whip) -> Iterator[Box]:
    with tempfile.TemporaryDirectory(prefix="roombox-touch-") as folder:
        b = Box(
            Path(folder), CONFIG.format(pin_minutes=PIN_MINUTES, whip=f"http://127.0.0.1:{whip.server_address[1]}/whip")
        )
        try:
            yield b
        finally:
            code = b.process.stop()
        assert code == 0, "roombox run did not stop cleanly:\n" + b.process.tail()


def _sign_in_with_pin(page: Any) -> None:
    for d in PIN:
        page.click(f"#keys [data-key='{d}']")
    page.click("#keys [data-key=enter]")


@pytest.mark.e2e
def test_a_mute_tap_landing_just_after_another_panels_mute_keeps_the_room_muted(box: Box, chromium: Any) -> None:
    a, b = _panel(chromium, box), _panel(chromium, box, 800, 1280)
    try:
        _send(a, {"cmd": "set_mute", "muted": False})
        until(lambda: box.room()["muted"] is False, "the room unmuted")
        for p in (a, b):
            p.wait_for_function("document.getElementById('mute').dataset.state === 'on'", timeout=30_000)
        a.wait_for_timeout(800)  # A's own tap comes well after its label last changed: it means "Mute"
        # B's finger lands the moment A's mute relabels B's button (it was on its way to "Mute microphones")
        b.evaluate(
            """() => { const m = document.getElementById('mute');
              const seen = new MutationObserver(() => {
                if (m.dataset.state !== 'muted') return;
                seen.disconnect(); window.__tappedOn = m.textContent; m.click(); });
              seen.observe(m, {childList: true, characterData: true, subtree: true, attributes: true}); }"""
        )
        a.click("#mute")
        b.wait_for_function("window.__tappedOn !== undefined", timeout=30_000)
        assert "tap to unmute" in b.evaluate("window.__tappedOn")  # the relabel did come first
        for p in (a, b):
            p.wait_for_function(ANSWERED, timeout=30_000)
        # before: B's tap sent muted: false (the opposite of its new label) and the room was heard again
        assert [m["muted"] for m in b.evaluate("window.__sent") if m["cmd"] == "set_mute"] == [True]
        assert box.room()["muted"] is True
        for p in (a, b):
            p.wait_for_selector("#muted-badge:not(.hidden)", timeout=30_000)

        # a tap well after the label changed means the label: unmute
        b.wait_for_timeout(1000)
        b.click("#mute")
        b.wait_for_function(ANSWERED, timeout=30_000)
        until(lambda: box.room()["muted"] is False, "the room unmuted by a considered tap", bound_s=30)
        assert a.errors == [] and b.errors == []
    finally:
        a.close()
        b.close()


@pytest.mark.e2e
def test_a_volume_drag_is_not_pulled_back_by_the_boxs_events(box: Box, chromium: Any) -> None:
    page, other = _panel(chromium, box), _panel(chromium, box)
    try:
        _send(page, {"cmd": "set_volume", "volume": 100})
        page.wait_for_function("window.roombox.room.volume === 100", timeout=30_000)
        page.locator("#volume").scroll_into_view_if_needed()
        r = page.locator("#volume").bounding_box()
        y = r["y"] + r["height"] / 2
        page.mouse.move(r["x"] + r["width"] - 6, y)  # the thumb, at 100
        page.mouse.down()
        page.mouse.move(r["x"] + r["width"] * 0.3, y, steps=8)
        dragged = int(page.input_value("#volume"))
        assert dragged < 60, dragged
        number_while_dragging = page.evaluate(SHOWN_VOLUME)

        # the box sends a room event mid-drag (another panel sets the volume; a retrying meeting does the same)
        _send(other, {"cmd": "set_volume", "volume": 85})
        page.wait_for_function("window.roombox.room.volume === 85", timeout=30_000)
        held = int(page.input_value("#volume"))
        page.mouse.up()
        page.wait_for_function(ANSWERED, timeout=30_000)
        # before: the event moved the thumb to 85 under the finger, and the release sent 85
        assert box.room()["volume"] == dragged
        assert held == dragged
        # the number beside the slider followed the drag, with its unit on screen
        assert number_while_dragging == f"{dragged} %"
        page.wait_for_function(f"document.getElementById('volume').value === '{dragged}'", timeout=30_000)

        # the slider follows the box again once let go
        _send(other, {"cmd": "set_volume", "volume": 70})
        page.wait_for_function("document.getElementById('volume').value === '70'", timeout=30_000)
        assert page.evaluate(SHOWN_VOLUME) == "70 %"
        assert page.errors == []
    finally:
        _send(other, {"cmd": "set_volume", "volume": 100})
        page.close()
        other.close()


@pytest.mark.e2e
def test_settings_typed_when_admin_rights_ran_out_are_kept_across_the_pin(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)
    try:
        page.click("#settings-open")
        page.wait_for_selector("#pin-pad:not(.hidden)", timeout=30_000)
        _sign_in_with_pin(page)
        page.wait_for_selector("#settings:not(.hidden)", timeout=30_000)
        # wait out the admin rights ([access] pin_minutes), asking the box
        until(
            lambda: page.evaluate("fetch('/api/config').then((r) => r.status)") in (401, 403),
            "the PIN's admin rights run out",
            bound_s=PIN_MINUTES * 60 + 60,
        )
        page.select_option("#set-mode", "group")
        page.fill("#set-resume", "42")
        page.fill("#set-exclude", "10,20")
        page.click("#settings-save")
        page.wait_for_function(
            "document.getElementById('settings-msg').textContent.includes('admin rights ran out')", timeout=30_000
        )
        _sign_in_with_pin(page)
        page.wait_for_selector("#settings:not(.hidden)", timeout=30_000)
        # before: the form was filled again from the box, and what was typed was gone
        assert page.input_value("#set-resume") == "42"
        assert page.input_value("#set-exclude") == "10,20"
        assert page.input_value("#set-mode") == "group"
        assert "your changes are kept" in page.inner_text("#settings-msg")
        page.click("#settings-save")
        page.wait_for_function(
            "document.getElementById('settings-msg').textContent.startsWith('saved')", timeout=30_000
        )
        director = tomllib.loads(box.config.read_text())["director"]
        assert director["manual_resume_s"] == 42 and director["exclude_deg"] == [[10, 20]]
        assert director["mode"] == "group"

        # Close leaves no message under the Settings button
        page.click("#settings-close")
        assert page.inner_text("#settings-msg") == ""
        assert page.errors == []
    finally:
        page.close()


@pytest.mark.e2e
def test_a_retrying_meeting_reads_retrying_and_a_join_on_a_failed_one_says_it_tries(
    box: Box, chromium: Any, whip: Whip, artifacts_dir: Path
) -> None:
    page = _panel(chromium, box, 1024, 600)
    wrong: list[str] = []  # each finding checked on its own: all that is wrong is said at the end
    try:
        whip.status = 503
        if box.meeting("whip")["state"] in ("stopped", "failed"):
            _send(page, {"cmd": "join", "meeting": "whip"})
        until(lambda: box.meeting("whip")["state"] == "retrying", "the whip meeting retrying", bound_s=60)
        page.wait_for_selector(f"{WHIP_ROW}.wait .meeting-detail", timeout=60_000)
        label = page.inner_text(f"{WHIP_ROW} .meeting-state")
        if label != "retrying":
            wrong.append(f"a retrying meeting reads {label!r}")  # before: "connecting"
        buttons = page.eval_on_selector_all(f"{WHIP_ROW} button", "(bs) => bs.map((b) => b.textContent)")
        if buttons != ["Try now", "Stop trying"]:
            wrong.append(f"a retrying meeting's buttons read {buttons}")  # before: "Leave"
        # "Try now" on one line in its pill
        try_now = page.eval_on_selector(
            f"{WHIP_ROW} button[data-action=join]",
            "(b) => ({ws: getComputedStyle(b).whiteSpace, h: b.getBoundingClientRect().height})",
        )
        (artifacts_dir / "panel-meeting-retrying-1024x600.png").write_bytes(page.screenshot())
        if try_now["ws"] != "nowrap" or try_now["h"] >= 60:
            wrong.append(f"'Try now' may wrap: {try_now}")

        # "Stop trying" (or "Leave") leaves
        page.click(f"{WHIP_ROW} button[data-action=leave]")
        until(lambda: box.meeting("whip")["state"] == "stopped", "the whip meeting stopped", bound_s=30)

        # a meeting that failed: Join says "trying again…" until the next state arrives
        whip.status = 403
        _send(page, {"cmd": "join", "meeting": "whip"})
        until(lambda: box.meeting("whip")["state"] == "failed", "the whip meeting failed", bound_s=60)
        page.wait_for_function(
            f"document.querySelector('{WHIP_ROW} .meeting-state').textContent === 'failed'", timeout=30_000
        )
        label = page.evaluate(
            f"""() => {{ document.querySelector('{WHIP_ROW} button[data-action=join]').click();
              return document.querySelector('{WHIP_ROW} .meeting-state').textContent; }}"""
        )
        if label != "trying again…":
            wrong.append(f"Join on a failed meeting leaves it reading {label!r}")  # as if the tap did nothing
        page.wait_for_function(
            f"document.querySelector('{WHIP_ROW} .meeting-state').textContent !== 'trying again…'", timeout=60_000
        )
        # (the failed meeting is quiet now) a paragraph of error: three lines on the card, all of it in the title
        # and on a tap; Mute stays in view
        long = "The far end refused the call because " + "the conference bridge is being maintained, " * 30
        inject = """(long) => {
              const room = JSON.parse(JSON.stringify(window.roombox.room));
              room.t += 0.001;
              room.meetings = room.meetings.map((m) => m.name === 'whip' ? {...m, state: 'failed', detail: long} : m);
              handleEvent('room', room); }"""
        # measured in one go: a room event from the box would redraw the card in between
        clamp = page.evaluate(
            f"""(long) => {{
              ({inject})(long);
              const detail = () => document.querySelector('#meetings li[data-meeting=whip] .meeting-detail');
              const d = detail();
              const line = parseFloat(getComputedStyle(d).lineHeight);
              const shut = d.getBoundingClientRect().height;
              const mute = document.getElementById('mute').getBoundingClientRect().bottom;
              d.click();
              const open = detail().getBoundingClientRect().height;
              detail().click();
              return {{line, shut, title: d.title, mute, open, view: window.innerHeight}};
            }}""",
            long,
        )
        page.evaluate(inject, long)
        (artifacts_dir / "panel-meeting-long-error-1024x600.png").write_bytes(page.screenshot())
        if not clamp["shut"] <= 3 * clamp["line"] + 2 or clamp["mute"] > clamp["view"]:
            wrong.append(f"a long error is not clamped to three lines, or pushes Mute out of view: {clamp}")
        if clamp["title"] != long or not clamp["open"] > 3 * clamp["line"] + 2:
            wrong.append(f"a long error's whole text is not in its title and on a tap: {clamp}")
        assert not wrong, "\n".join(wrong)
        assert page.errors == []
    finally:
        _send(page, {"cmd": "leave", "meeting": "whip"})
        page.close()


@pytest.mark.e2e
def test_small_things_sound_label_reason_ellipsis_stats_and_degrees(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)
    wrong: list[str] = []
    try:
        # the Sound button names what a tap does (the README says "press Sound on")
        labels = [page.inner_text("#sound")]
        page.click("#sound")
        page.wait_for_function("!document.getElementById('video').muted", timeout=30_000)
        labels.append(page.inner_text("#sound"))
        page.click("#sound")
        labels.append(page.inner_text("#sound"))
        if labels != ["Sound on", "Sound off", "Sound on"]:
            wrong.append(f"the Sound button reads {labels} (muted, playing, muted)")

        # the shot's reason: cut with an ellipsis, the whole of it in the title
        page.wait_for_function("document.getElementById('shot-reason').textContent !== ''", timeout=60_000)
        reason = page.eval_on_selector(
            "#shot-reason",
            """(e) => { e.textContent = 'x '.repeat(400); const s = getComputedStyle(e);
              return {display: s.display, overflow: s.textOverflow, ws: s.whiteSpace,
                      cut: e.scrollWidth > e.clientWidth, h: e.getBoundingClientRect().height}; }""",
        )
        if reason != {**reason, "display": "block", "overflow": "ellipsis", "ws": "nowrap", "cut": True}:
            wrong.append(f"the shot's reason is cut without an ellipsis: {reason}")
        if reason["h"] >= 30:
            wrong.append(f"the shot's reason takes more than a line: {reason}")
        page.wait_for_function(
            """() => { const e = document.getElementById('shot-reason');
              return e.textContent !== '' && !e.textContent.startsWith('x x'); }""",
            timeout=60_000,
        )
        titled = page.eval_on_selector("#shot-reason", "(e) => [e.textContent, e.title]")
        if titled[0] != titled[1]:
            wrong.append(f"the shot's reason has not its whole text in the title: {titled}")

        # the Box stats: no monotonic clock "t 60384.43"
        page.wait_for_function("document.querySelectorAll('#stats dt').length > 0", timeout=60_000)
        if "t" in page.eval_on_selector_all("#stats dt", "(ds) => ds.map((d) => d.textContent)"):
            wrong.append("the Box stats show the box's monotonic clock as 't'")

        # Close leaves no settings message behind (the form's last outcome, here "nothing changed")
        left = page.evaluate(
            """() => { settingsMessage(true, 'nothing changed'); document.getElementById('settings-close').click();
              return document.getElementById('settings-msg').textContent; }"""
        )
        if left:
            wrong.append(f"after Close the settings message stays: {left!r}")

        # no "−0.0°" in calibration messages
        degrees = page.evaluate("[fmtDeg(-0.01), fmtDeg(0), fmtDeg(-3.26), fmtDeg(12)]")
        if degrees != ["0.0°", "0.0°", "−3.3°", "+12.0°"]:
            wrong.append(f"degrees printed as {degrees}")
        # (the box's own words about angles have no signed zero: tests/test_calibration.py)
        assert not wrong, "\n".join(wrong)
        assert page.errors == []
    finally:
        page.close()


@pytest.mark.e2e
def test_a_box_that_goes_down_is_said_at_once_and_in_words(box: Box, chromium: Any) -> None:
    page = _panel(chromium, box)
    wrong: list[str] = []
    try:
        page.wait_for_function("document.getElementById('conn-text').textContent === 'live'", timeout=60_000)
        # what the header says, and whether the panel's socket is up, every 50 ms and on every change
        page.evaluate(
            """() => { window.__conn = [];
              const look = () => window.__conn.push([document.getElementById('conn-text').textContent,
                                                     window.roombox.wsConnected]);
              setInterval(look, 50);
              new MutationObserver(look).observe(document.getElementById('conn'),
                {childList: true, characterData: true, subtree: true}); }"""
        )
        code = box.process.stop()
        assert code == 0, box.process.tail()
        page.wait_for_function("!window.roombox.wsConnected", timeout=60_000)
        # the video's retry has failed at least once by now (its fetch to the box refused)
        page.wait_for_function(
            "window.roombox.reconnects > 0 && !window.roombox.connected"
            " && document.getElementById('conn-text').textContent !== 'connecting…'",
            timeout=60_000,
        )
        # the Settings button and the PIN pad's OK while the box is down: words, not "TypeError: Failed to fetch"
        page.click("#settings-open")
        page.wait_for_function("document.getElementById('settings-msg').textContent !== ''", timeout=30_000)
        said = [page.inner_text("#settings-msg")]
        page.evaluate("settingsMessage(true, ''); pinKey('enter')")
        page.wait_for_function("document.getElementById('settings-msg').textContent !== ''", timeout=30_000)
        said.append(page.inner_text("#settings-msg"))
        if said != ["the box does not answer (restarting?)"] * 2:
            wrong.append(f"Settings and OK with the box down say {said}")
        greyed = page.evaluate(
            """() => ({res: getComputedStyle(document.getElementById('res-item') || document.getElementById('res'))
                         .opacity,
                       ptz: getComputedStyle(document.getElementById('ptz')).opacity,
                       text: document.getElementById('res').textContent})"""
        )
        seen = page.evaluate("window.__conn")
        # before: "live" (green) for 4 s after the socket closed, then the browser's "Failed to fetch"
        stale_live = [t for t, up in seen if not up and t == "live"]
        if stale_live:
            wrong.append(f"'live' said {len(stale_live)} times after the socket closed")
        texts = {t for t, _ in seen}
        if any("TypeError" in t or "Failed to fetch" in t for t in texts):
            wrong.append(f"raw errors in the header: {texts}")
        if not any("connection to the box lost" in t or "does not answer" in t for t in texts):
            wrong.append(f"the header never says the box is lost: {texts}")
        if float(greyed["res"]) >= 1 or float(greyed["ptz"]) >= 1 or greyed["text"] != "–":
            wrong.append(f"the video size and the PTZ buttons are shown as current: {greyed}")
        assert not wrong, "\n".join(wrong)
    finally:
        if box.process.proc is None:
            box.process.start()
    page.wait_for_function(LIVE, timeout=120_000)
    page.wait_for_function("document.getElementById('conn-text').textContent === 'live'", timeout=60_000)
    assert page.errors == []
    page.close()
