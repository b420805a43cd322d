"""The box's log: JSON lines, libraries' chatter kept out (MediaPipe's native logs included), asked-for
chatter let in. Each case runs in its own process: the set-up takes over file descriptor 2."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.logs import JsonFormatter, setup_logging

ROOT = Path(__file__).resolve().parent.parent


# In the child: wait (bounded) until the native-log thread has taken a marker line written to fd 2, so that
# every line written before it has been logged, however busy the machine (a fixed sleep can be outlasted).
DRAIN = """
import os as _os, time as _time
import appliance.logs as _logs

_seen = set()
_level_of = _logs._native_level

def _spy(line):  # the thread asks each line's level just before it logs it, in the order written
    _seen.add(line)
    return _level_of(line)

_logs._native_level = _spy

def drain(marker):
    _os.write(2, (marker + "\\n").encode())
    deadline = _time.monotonic() + 30.0
    while marker not in _seen:
        if _time.monotonic() > deadline:
            raise SystemExit("the native-log thread never took " + marker)
        _time.sleep(0.01)
"""


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DRAIN + textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_json_lines_without_mediapipe_or_aiortc_chatter() -> None:
    p = _run("""
        import logging
        import numpy as np
        from appliance.logs import setup_logging
        setup_logging("info", json=True)
        from appliance.perception.faces import FaceDetector
        with FaceDetector() as d:   # LiteRT and absl write INFO and W lines straight to fd 2
            d.detect(np.zeros((480, 640, 3), np.uint8), 0.0)
        logging.getLogger("aiortc.rtcpeerconnection").info("connection(0) ICE completed")
        logging.getLogger("appliance.box").info("panel on %s", "http://127.0.0.1:8080/", extra={"viewers": 2})
        logging.getLogger("aioice.ice").warning("a warning still shows")
        drain("drained-1")  # every native line before it has been logged (at DEBUG: not shown)
    """)
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stderr.splitlines()]  # every line is JSON
    msgs = [r["msg"] for r in records]
    assert "panel on http://127.0.0.1:8080/" in msgs
    mine = next(r for r in records if r["logger"] == "appliance.box")
    assert mine["level"] == "info" and mine["viewers"] == 2 and mine["ts"].endswith("Z")
    assert "a warning still shows" in msgs
    assert not any("ICE completed" in m for m in msgs)
    assert not any(r["logger"] == "native" for r in records), records


def test_chatter_when_asked_and_native_errors_always_and_tracebacks_still_shown() -> None:
    p = _run("""
        import logging, os, time
        from appliance.logs import setup_logging
        setup_logging("debug", json=True, chatter=True)
        os.write(2, b"INFO: [environment.cc:36] Creating LiteRT environment\\n")
        logging.getLogger("aiortc.rtcpeerconnection").info("connection(0) ICE completed")
        drain("INFO: drained-1")  # the LiteRT line is logged while chatter is on (shown, as this marker is)
        setup_logging("info", json=True, chatter=False)
        os.write(2, b"INFO: hidden now\\n")
        os.write(2, b"E0000 00:00:1.0 123 graph.cc:1] calculator failed\\n")
        drain("drained-2")
        raise SystemExit(str(1 / 0))
    """)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    records = [json.loads(x) for x in lines if x.startswith("{")]
    native = [(r["level"], r["msg"]) for r in records if r["logger"] == "native"]
    assert native == [
        ("info", "INFO: [environment.cc:36] Creating LiteRT environment"),
        ("info", "INFO: drained-1"),
        ("warning", "E0000 00:00:1.0 123 graph.cc:1] calculator failed"),
    ]
    assert any(r["msg"] == "connection(0) ICE completed" for r in records)
    assert "ZeroDivisionError: division by zero" in p.stderr  # Python's own stderr is not swallowed
    assert "Traceback" in p.stderr


def test_text_format_and_a_bad_level(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        import io

        out = io.StringIO()
        setup_logging("warning", native=False, stream=out)
        logging.getLogger("x").info("not shown")
        logging.getLogger("x").warning("shown %d", 1)
        assert out.getvalue().rstrip().endswith("WARNING x: shown 1")
        # a client's malformed request: one warning line, not an error with aiohttp's traceback
        from aiohttp.http_exceptions import BadHttpMessage

        try:
            raise BadHttpMessage("Missing 'Host' header in request.")
        except BadHttpMessage:
            logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
        last = out.getvalue().rstrip().splitlines()[-1]
        assert last.endswith(
            "WARNING aiohttp.server: Error handling request from 127.0.0.1: BadHttpMessage: Missing 'Host' header "
            "in request."
        ), out.getvalue()
        assert "Traceback" not in out.getvalue()
        with pytest.raises(ValueError, match=r"\[log.level\] unknown log level 'loud'"):
            setup_logging("loud", native=False, stream=out)
    finally:
        for h in list(root.handlers):
            if h.get_name() == "roombox":
                root.removeHandler(h)
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        for name in (
            "aiortc",
            "aioice",
            "aiohttp.access",
            "aiohttp.server",
            "aiohttp.web",
            "av",
            "PIL",
            "matplotlib",
            "asyncio",
            "aiomqtt",
            "urllib3",
        ):
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.captureWarnings(False)
    rec = logging.LogRecord("n", logging.ERROR, "f", 1, "boom %s", ("x",), None)
    assert json.loads(JsonFormatter().format(rec))["msg"] == "boom x"
