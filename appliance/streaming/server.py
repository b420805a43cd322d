"""The panel's web server: the page, WebRTC offers from viewers, the event WebSocket and a state API.

Runs on the box's own asyncio loop (:class:`PanelServer`). One aiortc ``RTCPeerConnection`` per
viewer, host candidates only (``iceServers=[]``): the panel is reached on the room's network.

Every request goes through :class:`appliance.control.Control`: the Host is one of the box's names, an
offer or a socket needs credentials (scope ``read``; panel commands need ``control``) and an allowed
Origin, viewers and sockets are bounded, and a viewer that has not connected in time is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from appliance.config import StreamConfig
from appliance.control.api import add_routes
from appliance.control.auth import Principal, allows
from appliance.control.calibration_api import add_calibration_routes
from appliance.control.guard import Control, default_control, fail, read_json
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import AudioHub, EventBus, LatestFrame
from appliance.streaming.ice import offer_loopback
from appliance.streaming.peers import Peers
from appliance.streaming.tracks import RoomAudioTrack
from common.strict_json import loads_strict

if TYPE_CHECKING:
    from appliance.calibrator import Calibrator
    from appliance.streaming.display import Display

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CREDENTIALS_RECHECK_S = 5.0
ECHO_CHARS = 80  # a panel's strings echoed in an error reply, at most (a 60 kB "cmd" is not sent back whole)

CommandHandler = Callable[[dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]


class WatchedPeers(Peers):
    """:class:`Peers` whose viewers must connect in time: an offer whose ICE never completes (no candidates,
    a peer gone) would otherwise hold its place under ``max_viewers`` until the box restarts. The panel's
    ``/offer`` and the display's ``/display/offer`` both watch their peers so."""

    what = "viewer"  # in the log line

    def __init__(self) -> None:
        super().__init__()
        self.dropped_unconnected = 0
        self.watchers: set[asyncio.Task[None]] = set()

    def drop_if_not_connected(self, pc: RTCPeerConnection, timeout_s: float) -> None:
        """Close ``pc`` unless it is connected within ``timeout_s`` (an offer whose ICE never completes)."""

        async def watch() -> None:
            await asyncio.sleep(timeout_s)
            if pc in self.peers and pc.connectionState != "connected":
                log.info("%s dropped: not connected after %.0f s (%s)", self.what, timeout_s, pc.connectionState)
                self.dropped_unconnected += 1
                await self.close_peer(pc)

        self._watch(watch())

    def drop_when_credentials_end(self, pc: RTCPeerConnection, still_valid: Callable[[], bool]) -> None:
        """Close ``pc`` once the credentials it was opened with are no longer valid (a revoked token, an ended
        PIN session), as the panel's socket is closed then: before, the picture went on to a revoked kiosk."""

        async def watch() -> None:
            while pc in self.peers:
                await asyncio.sleep(CREDENTIALS_RECHECK_S)
                if pc in self.peers and not still_valid():
                    log.info("%s closed: the credentials it was opened with are no longer valid", self.what)
                    await self.close_peer(pc)
                    return

        self._watch(watch())

    def _watch(self, watch: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(watch)
        self.watchers.add(task)
        task.add_done_callback(self.watchers.discard)

    def cancel_watchers(self) -> None:
        """At shutdown: the peers are closed by their endpoint, not left to their watchers."""
        for task in list(self.watchers):
            task.cancel()


class _Parts(WatchedPeers):
    """What the handlers share; one per application."""

    def __init__(
        self,
        frames: LatestFrame,
        audio: AudioHub | None,
        events: EventBus,
        stream: StreamConfig,
        on_command: CommandHandler | None,
        control: Control,
        video: EncodedVideo | None = None,
    ) -> None:
        super().__init__()
        self.frames = frames
        self.video = video if video is not None else EncodedVideo(frames, stream)
        self.audio = audio
        self.events = events
        self.stream = stream
        self.on_command = on_command
        self.owns_video = video is None
        self.negotiating: set[RTCPeerConnection] = set()  # their /offer handler closes them if it fails
        self.sockets: set[web.WebSocketResponse] = set()
        self.socket_owners: dict[web.WebSocketResponse, str] = {}  # the token or session holding each
        self.control = control
        self.sent: dict[int, tuple[dict[str, Any], str]] = {}  # events serialized once for all panels
        self.display: Display | None = None  # the room display's peers, when the app serves one

    def displays(self) -> int | None:
        """The room display's peer connections (None: this app serves no display)."""
        return len(self.display.peers) if self.display is not None else None

    def live_status(self) -> dict[str, Any]:
        devices = {
            k.split(":", 1)[1]: v.get("state")
            for k, v in self.events.snapshot().items()
            if k.startswith("device:") and isinstance(v, dict)
        }
        displays = self.displays()
        return {
            "viewers": len(self.peers),
            **({"displays": displays} if displays is not None else {}),
            "panels": len(self.sockets),
            "frames_published": self.frames.published,
            "frames_dropped": self.frames.dropped,
            "devices": devices,
        }


PARTS = web.AppKey("roombox_streaming", _Parts)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _state(request: web.Request) -> web.Response:
    p = request.app[PARTS]
    p.control.require(request, "read")
    stream: dict[str, Any] = {
        "viewers": len(p.peers),
        "panels": len(p.sockets),
        "frames_published": p.frames.published,
        "frames_dropped": p.frames.dropped,
        "width": p.stream.width,
        "height": p.stream.height,
        "fps": p.stream.fps,
        "encoders": p.video.stats(),
        "viewers_dropped_unconnected": p.dropped_unconnected,
    }
    if p.display is not None:
        stream["displays"] = len(p.display.peers)
        stream["displays_dropped_unconnected"] = p.display.dropped_unconnected
    if p.audio is not None:
        stream["audio_chunks_published"] = p.audio.published
        stream["audio_chunks_dropped"] = p.audio.dropped
    bus = {"published": p.events.published, "dropped": p.events.dropped, "subscribers": p.events.subscribers}
    return web.json_response({**p.events.snapshot(), "stream": stream, "bus": bus})


def check_offer_sdp(sdp: str, max_media_lines: int) -> str | None:
    """Why this SDP is not an offer the box answers (``None``: it may be). Checked before aiortc parses it:
    garbage, an empty offer, or hundreds of m-lines (each an encoder, and seconds of parsing)."""
    lines = sdp.splitlines()
    if not lines or lines[0].strip() != "v=0":
        return "not an SDP offer (it does not start with v=0)"
    media = [line.split()[0][2:] for line in lines if line.startswith("m=") and line.split()]
    if len(media) > max_media_lines:
        return f"{len(media)} m-lines: a viewer may ask for at most {max_media_lines}"
    if not any(m in ("video", "audio") for m in media):
        return "the offer asks for neither video nor audio"
    # the box only sends: media coming in would be decoded into queues nobody reads
    sections = sdp.split("\nm=")[1:]
    for section in sections:
        if section.startswith(("video", "audio")) and not any(
            line.strip() in ("a=recvonly", "a=inactive") for line in section.splitlines()
        ):
            return "each audio and video m-line must be recvonly: the box does not take media"
    return None


async def _offer(request: web.Request) -> web.Response:
    p = request.app[PARTS]
    access = p.control.access
    who = p.control.require(request, "read", changes_state=True)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or not isinstance(body.get("type"), str):
        return _error(400, 'expected JSON {"sdp": "...", "type": "offer"}')
    if body["type"] != "offer":  # checked first: aiortc raises on a type it does not know
        return _error(400, f'expected an offer, got "{body["type"]}"')
    offer = RTCSessionDescription(sdp=body["sdp"], type="offer")
    problem = check_offer_sdp(offer.sdp, access.max_media_lines)
    if problem is not None:
        return _error(400, problem)
    if len(p.peers) >= access.max_viewers:
        fail(429, f"this box already serves {len(p.peers)} viewers (access.max_viewers)", headers={"Retry-After": "5"})
    if (refusal := p.refuse_if_closed()) is not None:
        return refusal
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    p.peers.add(pc)
    p.negotiating.add(pc)
    p.drop_if_not_connected(pc, access.ice_timeout_s)
    remote = request.remote
    p.drop_when_credentials_end(pc, lambda: p.control.still_valid(who, remote) is not None)

    @pc.on("connectionstatechange")
    async def _on_state() -> None:
        log.info("viewer %s: %s", remote, pc.connectionState)
        if pc.connectionState in ("failed", "closed"):
            await p.close_peer(pc)

    try:
        await pc.setRemoteDescription(offer)
        kinds = {t.kind for t in pc.getTransceivers()}  # one track of each kind: the first m-line of it takes it
        if "video" in kinds:
            p.video.add_to(pc)  # the shared encoder of the codec this offer negotiates
        if "audio" in kinds and p.audio is not None:
            pc.addTrack(RoomAudioTrack(p.audio))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as e:  # a malformed SDP surfaces as any of several aiortc errors
        await p.close_peer(pc)
        return _error(400, f"cannot answer this offer: {e}")
    except BaseException:  # cancelled (the server going away): its ICE sockets must not stay open
        await p.close_peer(pc)
        raise
    finally:
        p.negotiating.discard(pc)
    if (refusal := await p.refuse_if_closed_meanwhile(pc)) is not None:
        return refusal
    answer = pc.localDescription
    return web.json_response({"sdp": answer.sdp, "type": answer.type})


def _reply(kind: str, data: dict[str, Any]) -> str:
    """A reply to a panel's command; ``ValueError`` rather than NaN or an infinity, which are not JSON (a
    browser's ``JSON.parse`` throws on them)."""
    return json.dumps({"kind": kind, "data": data}, allow_nan=False)


def _clip(text: str, limit: int = ECHO_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _refusal(echo: dict[str, Any], error: str) -> str:
    """An error reply to a command: the strings it echoes and the message clipped (they may repeat the input)."""
    clipped = {k: _clip(v) if isinstance(v, str) else v for k, v in echo.items()}
    return _reply("error", {**clipped, "error": _clip(error, 4 * ECHO_CHARS)})


def _event_text(sent: dict[int, tuple[dict[str, Any], str]], kind: str, data: dict[str, Any]) -> str:
    """An event's text, serialized once for all panels: the bus hands every subscriber the same payload.
    ``sent``: id(payload) -> (payload, text), the latest ones (kept alive, so an id is not reused)."""
    hit = sent.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    text = json.dumps({"kind": kind, "data": data})
    if len(sent) >= 256:
        sent.pop(next(iter(sent)))
    sent[id(data)] = (data, text)
    return text


async def _run_command(p: _Parts, text: str, who: Principal | None = None, remote: str | None = None) -> str:
    """One command from a panel: a JSON object with a string ``cmd`` (and an optional ``id``, echoed).
    ``who`` sent it: it needs the ``control`` scope, still valid now."""
    try:
        cmd = loads_strict(text)  # as the HTTP API reads: no NaN or infinities, which a reply would echo
    except RecursionError:
        return _refusal({}, "not JSON: nested too deeply")
    except ValueError as e:
        return _refusal({}, f"not JSON: {e}")
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        return _refusal({}, 'expected a JSON object with a string "cmd"')
    echo = {k: cmd[k] for k in ("cmd", "id") if k in cmd and isinstance(cmd[k], str | int | float | None)}
    if who is not None:
        now = p.control.still_valid(who, remote)
        if now is None:
            return _refusal(echo, "credentials no longer valid (revoked, expired or signed out)")
        if not allows(now.scope, "control"):
            return _refusal(echo, f"commands need the control scope; {now.who} has {now.scope}")
    if p.on_command is None:
        return _refusal(echo, "this box takes no commands")
    try:
        result = p.on_command(cmd)
        if inspect.isawaitable(result):
            result = await result
    except (ValueError, KeyError, TypeError) as e:
        return _refusal(echo, str(e) or type(e).__name__)
    except Exception as e:
        log.exception("command %s failed", _clip(repr(cmd)))
        return _refusal(echo, f"command failed: {type(e).__name__}: {e}")
    try:
        return _reply("reply", {**echo, "result": result})
    except (TypeError, ValueError):
        log.error("command %s gave a reply that is not JSON: %s", _clip(repr(cmd)), _clip(repr(result)))
        return _refusal(echo, "command failed: its result is not JSON")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    p = request.app[PARTS]
    who = p.control.require(request, "read", changes_state=True)
    access = p.control.access
    if len(p.sockets) >= access.max_sockets:
        fail(
            429,
            f"this box already has {len(p.sockets)} panel sockets (access.max_sockets)",
            headers={"Retry-After": "5"},
        )
    owner = who.token_id or who.session_id or who.who
    held = sum(1 for o in p.socket_owners.values() if o == owner)
    if held >= access.max_sockets_per_client:
        fail(
            429,
            f"{who.who} already holds {held} panel sockets (access.max_sockets_per_client)",
            headers={"Retry-After": "5"},
        )
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    p.sockets.add(ws)
    p.socket_owners[ws] = owner
    queue = p.events.subscribe()

    async def forward() -> None:
        for kind, payload in p.events.snapshot_messages():
            await ws.send_str(_event_text(p.sent, kind, payload))
        while True:
            kind, payload = await queue.get()
            await ws.send_str(_event_text(p.sent, kind, payload))

    async def recheck() -> None:  # a revoked token or an ended session loses its sockets too
        while True:
            await asyncio.sleep(CREDENTIALS_RECHECK_S)
            if p.control.still_valid(who, request.remote) is None:
                log.info("panel socket of %s closed: credentials no longer valid", who.who)
                await ws.close(code=4401, message=b"credentials no longer valid")
                return

    async def close_after_failed_send() -> None:
        with contextlib.suppress(Exception):  # the transport may be gone already
            await ws.close(code=1011, message=b"events could not be sent")

    closing: set[asyncio.Future[None]] = set()  # held: the loop keeps only a weak reference to a task

    def ended(task: asyncio.Task[None]) -> None:  # a send that failed: the socket goes, the panel reconnects
        if not task.cancelled() and task.exception() is not None and not ws.closed:
            closer = asyncio.ensure_future(close_after_failed_send())
            closing.add(closer)
            closer.add_done_callback(closing.discard)

    # two tasks, each cancelled at the end: a gather that ended with one's error did not cancel the other, and
    # the credentials' recheck of a socket dropped mid-send ran (every 5 s) until its token ended
    senders = [asyncio.ensure_future(forward()), asyncio.ensure_future(recheck())]
    senders[0].add_done_callback(ended)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(await _run_command(p, msg.data, who, request.remote))
            elif msg.type == WSMsgType.BINARY:
                await ws.send_str(_reply("error", {"error": "binary messages are not understood"}))
    except ConnectionError:
        pass
    finally:
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        p.events.unsubscribe(queue)
        p.sockets.discard(ws)
        p.socket_owners.pop(ws, None)
    return ws


async def _on_shutdown(app: web.Application) -> None:
    p = app[PARTS]
    p.closed = True
    p.cancel_watchers()
    for ws in list(p.sockets):
        await ws.close(code=1001, message=b"server shutdown")
    await asyncio.gather(*(p.close_peer(pc) for pc in list(p.peers - p.negotiating)))
    if p.owns_video:
        await p.video.close()


def create_app(
    frames: LatestFrame,
    audio: AudioHub | None,
    events: EventBus,
    stream: StreamConfig,
    on_command: CommandHandler | None = None,
    *,
    control: Control | None = None,
    video: EncodedVideo | None = None,
    display: LatestFrame | None = None,
    calibration: Calibrator | None = None,
) -> web.Application:
    """The panel application.

    ``control`` holds the credentials, the access limits and (optionally) the config store behind
    ``/api/config`` (:class:`appliance.control.Control`); without one, tokens and the PIN under
    ``$ROOMBOX_HOME`` and the default limits (:func:`appliance.control.default_control`).

    ``on_command(cmd)`` gets each command a panel sends (a dict with a string ``"cmd"``) and returns a
    JSON-able dict (or an awaitable of one), sent back as ``{"kind": "reply", "data": {"cmd", "id",
    "result"}}``. It raises ``ValueError`` (or ``KeyError``/``TypeError``) for an unknown or invalid
    command; the panel then gets ``{"kind": "error", "data": {"cmd", "id", "error": str(e)}}``.

    ``video``: the shared encoders (:class:`EncodedVideo`) that viewers' connections take their packets
    from; give the box's own when WHIP or Janus share them (the caller then closes it), else the app makes
    one and closes it on shutdown. ``display``: the far end's pictures, served to the room display at
    ``/display`` (:mod:`appliance.streaming.display`). ``calibration``: the live box's guided mic-array
    calibration, served under ``/api/calibration`` (:mod:`appliance.control.calibration_api`; 404 without).
    """
    if stream.ice_loopback:
        offer_loopback()
    control = control if control is not None else default_control()
    app = web.Application(client_max_size=control.access.max_body_kb * 1024, middlewares=control.middlewares())
    parts = _Parts(frames, audio, events, stream, on_command, control, video)
    app[PARTS] = parts
    add_routes(app, control, parts.live_status)
    add_calibration_routes(app, calibration)
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/state", _state)
    app.router.add_post("/offer", _offer)
    app.router.add_get("/ws", _ws)
    app.router.add_static("/static/", STATIC_DIR)
    if display is not None:
        from appliance.streaming.display import add_display  # it imports this module's WatchedPeers

        parts.display = add_display(app, display, stream, control)
    app.on_shutdown.append(_on_shutdown)
    return app


class PanelServer:
    """Serves an application on the running loop.

    Either ``port = await server.start()`` ... ``await server.stop()``, or
    ``async with PanelServer(app, host, port) as server: ...``.
    """

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Bind and serve; returns the port (useful with ``port=0``)."""
        # an idle keep-alive connection is closed after 75 s (aiohttp's default holds it, and a timer, an hour)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=75.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("panel on http://%s:%d/", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Close viewers and panels, stop listening. Safe to call twice."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _started(self) -> PanelServer:
        await self.start()
        return self

    def __await__(self) -> Generator[Any, None, PanelServer]:
        return self._started().__await__()

    async def __aenter__(self) -> PanelServer:
        return await self._started()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def run_server(app: web.Application, host: str, port: int) -> PanelServer:
    """Serve ``app`` on the running loop: ``async with run_server(app, host, port): ...``, or
    ``server = await run_server(app, host, port)`` and later ``await server.stop()``."""
    return PanelServer(app, host, port)
