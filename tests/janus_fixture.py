"""A real Janus (Debian's ``janus``: HTTP API, admin API, WebSocket API, VideoRoom) started on 127.0.0.1,
Debian's ``simple-whip-server`` in front of it, and a WHIP front of our own for the bad-input cases.

``simple-whip-server`` cannot be installed by apt beside NodeSource's ``nodejs``: ``scripts/setup`` unpacks its
Debian packages under ``/opt/roombox/simple-whip-server`` (``scripts/unpack-simple-whip-server``);
:class:`SimpleWhipServer` runs it from there (or from ``/usr/share`` where apt installed it) with Node.js.
:class:`WhipFront` does what it does (a WHIP endpoint per VideoRoom, the offer published as a VideoRoom
participant, DELETE hangs up) and can also answer errors and garbage on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance.streaming.janus import JanusError, JanusSession

JANUS = "/usr/bin/janus"
LIBDIR = Path("/usr/lib/x86_64-linux-gnu/janus")
ADMIN_SECRET = "roombox-test-admin"
ROOM = 1234
SHIM_SOURCE = Path(__file__).with_name("janus_loopback.c")  # Janus skips loopback interfaces: see there
PLUGINS = [
    "audiobridge",
    "duktape",
    "echotest",
    "lua",
    "nosip",
    "recordplay",
    "sip",
    "streaming",
    "textroom",
    "videocall",
    "voicemail",
]
TRANSPORTS = ["mqtt", "nanomsg", "pfunix", "rabbitmq"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if ``proc`` is still there after ``timeout`` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_serving(proc: subprocess.Popen[Any], url: str, timeout: float, answer: bytes) -> bool:
    """Whether ``url`` answers 200 with ``answer`` in its body within ``timeout`` s, ``proc`` still running."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and answer in r.read():
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


class Janus:
    """``janus`` in a temporary config folder, HTTP API and admin API on free ports of 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.admin_port = free_port()
        self.ws_port = free_port()
        self.ws_url = f"ws://127.0.0.1:{self.ws_port}"
        self.url = f"http://127.0.0.1:{self.port}/janus"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}/admin"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        f = self.folder
        f.mkdir(parents=True, exist_ok=True)
        disable = ",".join(f"libjanus_{p}.so" for p in PLUGINS)
        tdisable = ",".join(f"libjanus_{t}.so" for t in TRANSPORTS)
        (f / "janus.jcfg").write_text(f"""
general: {{
  configs_folder = "{f}"
  plugins_folder = "{LIBDIR}/plugins"
  transports_folder = "{LIBDIR}/transports"
  events_folder = "{LIBDIR}/events"
  loggers_folder = "{LIBDIR}/loggers"
  debug_level = 4
  admin_secret = "{ADMIN_SECRET}"
  session_timeout = 20
}}
plugins: {{ disable = "{disable}" }}
transports: {{ disable = "{tdisable}" }}
events: {{ broadcast = false }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
media: {{ rtp_port_range = "{20000 + (os.getpid() % 400) * 100}-{20099 + (os.getpid() % 400) * 100}" }}
nat: {{ ice_enforce_list = "127.0.0.1" }}
""")
        (f / "janus.transport.http.jcfg").write_text(f"""
general: {{ json = "compact"  base_path = "/janus"  http = true  port = {self.port}  ip = "127.0.0.1"
            https = false }}
admin: {{ admin_base_path = "/admin"  admin_http = true  admin_port = {self.admin_port}  admin_ip = "127.0.0.1"
          admin_https = false }}
""")
        (f / "janus.transport.websockets.jcfg").write_text(f"""
general: {{ json = "compact"  ws = true  ws_port = {self.ws_port}  ws_ip = "127.0.0.1"  wss = false }}
admin: {{ admin_ws = false  admin_wss = false }}
""")
        (f / "janus.plugin.videoroom.jcfg").write_text(f"""
general: {{ }}
room-{ROOM}: {{
  description = "Roombox test room"
  publishers = 6
  bitrate = 4000000
  fir_freq = 2
  videocodec = "vp8,h264"
  audiocodec = "opus"
}}
""")

    def start(self, timeout: float = 20.0) -> None:
        if shutil.which(JANUS) is None:
            raise RuntimeError(f"{JANUS} is not installed: run scripts/setup")
        shim = self.folder / "janus_loopback.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(shim), str(SHIM_SOURCE), "-ldl"], check=True)
        log = open(self.folder / "janus.log", "ab")
        self.proc = subprocess.Popen(
            [JANUS, "-C", str(self.folder / "janus.jcfg"), "-F", str(self.folder), "-o", "-i", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LD_PRELOAD": str(shim)},
        )
        log.close()
        serving = wait_serving(self.proc, f"http://127.0.0.1:{self.port}/janus/info", timeout, b"server_info")
        if not serving:
            self.stop()
            raise RuntimeError(f"janus did not start: see {self.folder / 'janus.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Janus]:
        """A started Janus in a temporary folder, stopped on the way out."""
        with tempfile.TemporaryDirectory(prefix="roombox-janus-") as folder:
            j = cls(Path(folder))
            j.start()
            try:
                yield j
            finally:
                j.stop()

    def admin(self, request: str, **extra: Any) -> dict[str, Any]:
        """An admin API request (``list_sessions``, ``list_handles`` with session_id, ...)."""
        path = self.admin_url
        if "session_id" in extra:
            path += f"/{extra.pop('session_id')}"
            if "handle_id" in extra:
                path += f"/{extra.pop('handle_id')}"
        body = json.dumps(
            {"janus": request, "transaction": secrets.token_hex(6), "admin_secret": ADMIN_SECRET, **extra}
        ).encode()
        req = urllib.request.Request(path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def sessions(self) -> list[int]:
        return [int(s) for s in self.admin("list_sessions").get("sessions", [])]

    def published(self, kind: str = "video") -> list[dict[str, Any]]:
        """What Janus receives: one ``{"codec", "packets", "bytes"}`` per incoming ``kind`` ("video", "audio")
        stream, all sessions."""
        out = []
        for sid in self.sessions():
            for hid in self.admin("list_handles", session_id=sid).get("handles", []):
                info = self.admin("handle_info", session_id=sid, handle_id=hid).get("info", {})
                for m in (info.get("webrtc", {}).get("media") or {}).values():
                    if m.get("type") == kind and m.get("direction", {}).get("recv"):
                        stats = m.get("stats", {}).get("in", {})
                        out.append(
                            {
                                "codec": m.get("codecs", {}).get("codec"),
                                "packets": stats.get("packets", 0),
                                "bytes": stats.get("bytes", 0),
                            }
                        )
        return out


SIMPLE_WHIP_SERVER_ROOTS = (Path("/"), Path("/opt/roombox/simple-whip-server"))
# simple-whip-server listens on every interface; the tests' servers listen on 127.0.0.1 only
NODE_LOOPBACK = """
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  return listen.apply(this, args);
};
"""


class SimpleWhipServer:
    """Debian's ``simple-whip-server`` on 127.0.0.1, talking to ``janus`` over its WebSocket API.

    ``url = sws.endpoint(id, room, token)`` creates a WHIP endpoint publishing into a VideoRoom (its
    non-standard ``/whip/create``). Started with :meth:`running`; the server's log is ``folder/sws.log``."""

    def __init__(self, janus: Janus, folder: Path) -> None:
        root = next((r for r in SIMPLE_WHIP_SERVER_ROOTS if (r / "usr/share/simple-whip-server/src").is_dir()), None)
        if root is None:
            raise RuntimeError("simple-whip-server is not there: run scripts/setup (scripts/unpack-simple-whip-server)")
        self.root = root
        self.folder = folder
        self.janus = janus
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/whip"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        src = self.folder / "src"
        src.mkdir(parents=True, exist_ok=True)
        for name in ("server.js", "whip-janus.js"):  # copied: its config.js is read from beside server.js
            shutil.copyfile(self.root / "usr/share/simple-whip-server/src" / name, src / name)
        (src / "config.js").write_text(
            f"module.exports = {{janus: {{address: {json.dumps(self.janus.ws_url)}}}, port: {self.port},"
            " rest: '/whip', allowTrickle: true, strictETags: false, iceServers: []};\n"
        )
        (self.folder / "loopback.js").write_text(NODE_LOOPBACK)
        node_path = [self.root / "usr/share/nodejs", self.root / "usr/lib/x86_64-linux-gnu/nodejs"]
        log = open(self.folder / "sws.log", "ab")
        self.proc = subprocess.Popen(
            ["node", "--require", str(self.folder / "loopback.js"), "src/server.js"],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NODE_PATH": ":".join(map(str, node_path)), "DEBUG": "whip:*,-whip:debug"},
        )
        log.close()
        if not wait_serving(self.proc, f"{self.url}/healthcheck", timeout, b"OK"):
            self.stop()
            raise RuntimeError(f"simple-whip-server did not start: see {self.folder / 'sws.log'}")

    def endpoint(self, endpoint_id: str, room: int, token: str) -> str:
        """Create a WHIP endpoint into VideoRoom ``room`` that wants ``token``; returns its URL."""
        body = json.dumps({"id": endpoint_id, "room": room, "token": token, "label": endpoint_id}).encode()
        req = urllib.request.Request(f"{self.url}/create", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status != 200:
                raise RuntimeError(f"simple-whip-server /create answered {r.status}")
        return f"{self.url}/endpoint/{endpoint_id}"

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, janus: Janus) -> Iterator[SimpleWhipServer]:
        with tempfile.TemporaryDirectory(prefix="roombox-sws-") as folder:
            sws = cls(janus, Path(folder))
            sws.start()
            try:
                yield sws
            finally:
                sws.stop()


class WhipFront:
    """A WHIP endpoint per Janus VideoRoom: ``POST /whip/endpoint/<room>`` (bearer token), ``DELETE
    /whip/resource/<id>``; ``/whip/status/<code>`` always answers that code, ``/whip/garbage`` answers 201
    with a body that is not SDP (for the bad-input tests). Runs on the caller's loop."""

    def __init__(self, janus_url: str, token: str) -> None:
        self.janus_url = janus_url
        self.token = token
        self.resources: dict[str, tuple[JanusSession, int]] = {}
        self.posts = 0
        self.deletes = 0
        self.http: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self.http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/whip/endpoint/{room}", self._publish)
        app.router.add_delete("/whip/resource/{id}", self._hangup)
        app.router.add_post("/whip/status/{code}", self._status)
        app.router.add_post("/whip/garbage", self._garbage)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/whip"
        return self.url

    async def stop(self) -> None:
        for sess, _ in list(self.resources.values()):
            await sess.destroy()
        self.resources.clear()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.http is not None:
            await self.http.close()

    async def _publish(self, request: web.Request) -> web.Response:
        self.posts += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="Unauthorized")
        if request.content_type != "application/sdp":
            return web.Response(status=415, text="expected application/sdp")
        offer = await request.text()
        assert self.http is not None
        try:
            sess = await JanusSession.create(self.http, self.janus_url)
        except JanusError as e:
            return web.Response(status=503, text=str(e))
        try:
            handle = await sess.attach("janus.plugin.videoroom")
            room = int(request.match_info["room"])
            await sess.message(handle, {"request": "join", "ptype": "publisher", "room": room, "display": "whip"})
            _, jsep = await sess.message(handle, {"request": "publish"}, {"type": "offer", "sdp": offer})
        except (JanusError, ValueError) as e:
            await sess.destroy()
            return web.Response(status=404 if "No such room" in str(e) else 500, text=str(e))
        if not jsep:
            await sess.destroy()
            return web.Response(status=500, text="Janus gave no answer")
        rid = secrets.token_hex(8)
        self.resources[rid] = (sess, handle)
        return web.Response(
            status=201, text=jsep["sdp"], content_type="application/sdp", headers={"Location": f"/whip/resource/{rid}"}
        )

    async def _hangup(self, request: web.Request) -> web.Response:
        self.deletes += 1
        found = self.resources.pop(request.match_info["id"], None)
        if found is None:
            return web.Response(status=404)
        await found[0].destroy()
        return web.Response(status=200)

    async def _status(self, request: web.Request) -> web.Response:
        self.posts += 1
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"test says {code}", headers={"Retry-After": "1"})

    async def _garbage(self, request: web.Request) -> web.Response:
        self.posts += 1
        return web.Response(
            status=201,
            text="<html>hello</html>",
            content_type="application/sdp",
            headers={"Location": "/whip/resource/garbage"},
        )


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
