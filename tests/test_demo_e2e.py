"""End to end: ``roombox demo`` on the simulated room, watched in a real headless Chromium over WebRTC."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers.boxproc import BoxProcess

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "drivers" / "simroom" / "scenarios" / "short.toml"

GRAB = """() => {
  const v = document.querySelector('video');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext('2d').drawImage(v, 0, 0);
  return c.toDataURL('image/png');
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def demo(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    port = free_port()
    box = BoxProcess(["demo", "--port", str(port), "--scenario", str(SHORT)], tmp_path)
    box.start()
    try:
        assert box.kiosk and box.kiosk[0].startswith(f"http://127.0.0.1:{port}/#token=rbx_"), box.tail()
        yield box.kiosk[0], box.out
    finally:
        code = box.stop()
    assert code == 0, "roombox demo did not stop cleanly on SIGTERM:\n" + box.tail()


def state(link: str) -> dict:
    """/api/state, with the kiosk link's token (the demo's only credential)."""
    url, token = link.split("/#token=")
    req = urllib.request.Request(url + "/api/state", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_for_shot(url: str, ok: Callable[[dict], bool], bound_s: float = 60.0) -> dict:
    deadline = time.monotonic() + bound_s  # a bound for a box that never gets there, not a figure
    while not ok(shot := state(url)["shot"]):
        assert time.monotonic() < deadline, f"the box never reached the shot wanted; last: {shot}"
        time.sleep(0.3)
    return shot


@pytest.mark.e2e
def test_demo_plays_the_framed_room_in_chromium(demo, chromium, artifacts_dir: Path) -> None:
    from appliance.config import DetectorConfig
    from appliance.perception.faces import FaceDetector

    url, out = demo
    detector = FaceDetector(cfg=DetectorConfig())
    page = chromium.new_page()
    try:
        page.goto(url)
        page.wait_for_function("window.roombox && window.roombox.framesDecoded > 30", timeout=60_000)
        size = page.evaluate(
            "() => [document.querySelector('video').videoWidth, document.querySelector('video').videoHeight]"
        )
        assert size == [1280, 720]
        deadline = time.monotonic() + 120  # a bound for a box that never frames anyone, not a figure
        while state(url)["shot"]["mode"] != "speaker":
            assert time.monotonic() < deadline, "the director never framed a talker"
            time.sleep(0.5)
        # the cut reaches the browser: a person framed, a face large in the decoded picture, not a speck in the
        # whole room (polled: on a busy machine the cut and the glide take a while to be decoded)
        deadline = time.monotonic() + 60  # a bound for a picture that never shows anyone framed, not a figure
        while True:
            png = base64.b64decode(page.evaluate(GRAB).split(",", 1)[1])
            decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert decoded is not None, "the grabbed frame is not a PNG"
            faces = detector.detect(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), 0.0).faces
            if faces and max(f.box[2] for f in faces) >= 80:
                break
            assert time.monotonic() < deadline, f"no face framed in the decoded picture: {[f.box for f in faces]}"
            time.sleep(0.5)
        (artifacts_dir / "demo-framed.png").write_bytes(png)
        (artifacts_dir / "demo-panel.png").write_bytes(page.screenshot())

        # the panel runs the framing: its buttons change the box's mode, and it shows which mode is live
        page.click("#modes [data-mode=gallery]")
        wait_for_shot(url, lambda s: s["policy"] == "gallery" and s["mode"] == "gallery" and len(s["tiles"]) >= 2)
        page.wait_for_function(
            "document.querySelector('#modes [data-mode=gallery]').getAttribute('aria-pressed') === 'true'",
            timeout=30_000,
        )
        (artifacts_dir / "demo-gallery.png").write_bytes(page.screenshot())
        page.click("#ptz [data-ptz=in]")
        page.click("#ptz [data-ptz=right]")
        manual = wait_for_shot(url, lambda s: s["mode"] == "manual" and s["crop"][2] < 1920)
        assert manual["crop"][0] > 0 and "manual" in page.inner_text("#why")
        page.click("#modes [data-mode=speaker]")
        wait_for_shot(url, lambda s: s["policy"] == "speaker")
    finally:
        page.close()
        detector.close()
    assert not any("Traceback" in line for line in out), "".join(out)
