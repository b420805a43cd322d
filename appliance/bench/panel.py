"""``roombox bench panel``: how fast a state change reaches every panel connected to a running box.

A ``roombox demo`` (the simulated room, the whole box) runs on 127.0.0.1; panels are WebSocket clients
signed in with the demo's kiosk token, as the panel page is. One more socket, the controller, issues
``set_mode`` (alternating framing modes); each panel's time until it sees the change is measured from just
before the command is sent: the room's state (``room`` event, published when the command is applied) and
the first framed shot in the new mode (``shot``, per camera frame). 50 panels at once (the target: all
within 200 ms) against the peer measured in the same run: one panel alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import numpy as np

Row = tuple[str, float, str]
MODES = ("group", "speaker", "gallery", "off")
TARGET_MS = 200.0


@contextmanager
def demo_box(start_timeout_s: float = 180.0) -> Iterator[tuple[str, str]]:
    """``roombox demo`` on a free port of 127.0.0.1 (state in a temporary ``$ROOMBOX_HOME``): yields the
    panel's URL and the kiosk token; stopped afterwards."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="roombox-bench-panel-") as home:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "demo", "--host", "127.0.0.1", "--port", str(port)],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "ROOMBOX_HOME": home},
        )
        out: list[str] = []
        token: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.append(line)
                if "kiosk link" in line:
                    token.append(line.split("#token=")[-1].strip())
                if "panel at" in line:
                    ready.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            if not ready.wait(start_timeout_s) or not token:
                raise RuntimeError("roombox demo did not start:\n" + "".join(out[-30:]))
            yield f"http://127.0.0.1:{port}", token[0]
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(5)
            if proc.stdout is not None:
                proc.stdout.close()


class _Panel:
    """One panel's socket: when it saw the awaited mode, in the room's state and in a shot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.want: str | None = None
        self.room_at: float | None = None
        self.shot_at: float | None = None
        self.task = asyncio.create_task(self._read())

    def expect(self, mode: str) -> None:
        self.want, self.room_at, self.shot_at = mode, None, None

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT or self.want is None:
                continue
            text: str = msg.data
            now = time.perf_counter()
            # only the two kinds waited for are parsed: 50 panels' worth of events is a lot of JSON
            if self.room_at is None and text.startswith('{"kind": "room"'):
                if json.loads(text)["data"].get("policy") == self.want:
                    self.room_at = now
            elif self.shot_at is None and text.startswith('{"kind": "shot"'):
                if json.loads(text)["data"].get("policy") == self.want:
                    self.shot_at = now

    def done(self) -> bool:
        return self.room_at is not None and self.shot_at is not None


async def _measure(url: str, token: str, panels: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Delays (ms) to the room's state and to the first shot, over all panels and rounds; and the
    controller's command round trips."""
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    room_ms: list[float] = []
    shot_ms: list[float] = []
    reply_ms: list[float] = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sockets = await asyncio.gather(*(session.ws_connect(url + "/ws", headers=headers) for _ in range(panels)))
        watchers = [_Panel(ws) for ws in sockets]
        controller = await session.ws_connect(url + "/ws", headers=headers)
        try:
            await asyncio.sleep(1.5)  # the snapshots every new socket gets first
            for r in range(rounds + 1):  # round 0 warms up
                mode = MODES[r % len(MODES)]
                for w in watchers:
                    w.expect(mode)
                began = time.perf_counter()
                await controller.send_json({"cmd": "set_mode", "mode": mode, "id": r})
                while True:
                    reply = await controller.receive(timeout=30)
                    if reply.type == aiohttp.WSMsgType.TEXT and reply.data.startswith('{"kind": "reply"'):
                        break
                    if reply.type == aiohttp.WSMsgType.TEXT and reply.data.startswith('{"kind": "error"'):
                        raise RuntimeError(f"the box refused set_mode: {reply.data}")
                replied = time.perf_counter()
                deadline = began + 10.0
                while not all(w.done() for w in watchers) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.01)
                if r == 0:
                    continue
                reply_ms.append(1000 * (replied - began))
                # a panel that never saw it counts as the whole wait: the figure shows it, not hides it
                room_ms += [1000 * ((w.room_at if w.room_at is not None else deadline) - began) for w in watchers]
                shot_ms += [1000 * ((w.shot_at if w.shot_at is not None else deadline) - began) for w in watchers]
                await asyncio.sleep(0.3)
        finally:
            for w in watchers:
                w.want = None
            await controller.close()
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            await asyncio.gather(*(w.task for w in watchers), return_exceptions=True)
    return room_ms, shot_ms, reply_ms


def _figures(label: str, delays: list[float]) -> list[Row]:
    d = np.asarray(delays)
    return [
        (f"{label}: median", float(np.median(d)), "ms"),
        (f"{label}: p95", float(np.percentile(d, 95)), "ms"),
        (f"{label}: max", float(d.max()), "ms"),
    ]


def bench_panel(quick: bool = False) -> list[Row]:
    """50 panels (and 1, the peer) connected to a running demo box: time until each sees a state change."""
    rounds = 4 if quick else 12
    many = 50
    with demo_box() as (url, token):
        time.sleep(2.0)  # the box's first seconds (models loading, the first detections)
        one_room, one_shot, _ = asyncio.run(_measure(url, token, 1, rounds))
        room, shot, reply = asyncio.run(_measure(url, token, many, rounds))
    within = 100.0 * float(np.mean(np.asarray(room) <= TARGET_MS))
    ratio = float(np.median(room) / max(1e-3, float(np.median(one_room))))
    return [
        *_figures(f"{many} panels, the change in the room's state", room),
        (f"{many} panels: changes seen within {TARGET_MS:.0f} ms", within, "%"),
        *_figures(f"{many} panels, the first framed shot in the new mode", shot),
        (f"{many} panels: the controller's command round trip, median", float(np.median(reply)), "ms"),
        *_figures("1 panel (peer), the change in the room's state", one_room),
        *_figures("1 panel (peer), the first framed shot in the new mode", one_shot),
        (f"{many} panels / 1 panel, the room's state: ratio of medians", ratio, "x"),
        ("rounds (state changes) measured", float(rounds), "count"),
        ("load average (1 min) at the end: this machine is shared", os.getloadavg()[0], "processes"),
    ]
