"""A small client of Janus's HTTP API (https://janus.conf.meetecho.com/docs/rest): sessions, plugin
handles, requests and their asynchronous events by long poll.

``JanusSession`` is used by :class:`JanusPublisher` (publishing the room into a VideoRoom) and by the
tests' WHIP front. One long-poll task per session both keeps it alive and delivers the events; when
Janus goes away that task fails and :meth:`JanusSession.wait_lost` returns the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from appliance.config import JanusConfig
from appliance.streaming.connector import ConnectError, Connector, StateCallback, ice_servers
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import AudioHub, LatestFrame
from common.errors import RoomboxError

log = logging.getLogger(__name__)


class JanusError(RoomboxError):
    """Janus refused a request or could not be reached; the message says which and why."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class JanusSession:
    """One Janus session over HTTP: ``await JanusSession.create(http, url)``; ``await s.destroy()``."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, session_id: int, timeout_s: float) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.id = session_id
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # events no request waits for
        self._lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._poller = asyncio.create_task(self._poll(), name=f"janus-poll-{session_id}")

    @classmethod
    async def create(cls, http: aiohttp.ClientSession, base_url: str, timeout_s: float = 10.0) -> JanusSession:
        reply = await _post(http, base_url.rstrip("/"), {"janus": "create"}, timeout_s)
        return cls(http, base_url, int(reply["data"]["id"]), timeout_s)

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.id}"

    async def attach(self, plugin: str) -> int:
        """A handle on ``plugin`` (e.g. ``janus.plugin.videoroom``)."""
        reply = await _post(self.http, self.url, {"janus": "attach", "plugin": plugin}, self.timeout_s)
        return int(reply["data"]["id"])

    async def message(
        self,
        handle: int,
        body: dict[str, Any],
        jsep: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A plugin request: returns (plugin data, jsep or None), waiting for the asynchronous event if Janus
        acks first. A plugin error (``error_code``) raises :class:`JanusError` with the plugin's reason."""
        transaction = secrets.token_hex(8)
        msg: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            msg["jsep"] = jsep
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = waiter
        try:
            reply = await _post(self.http, f"{self.url}/{handle}", msg, self.timeout_s)
            if reply.get("janus") == "ack":
                reply = await asyncio.wait_for(asyncio.shield(waiter), self.timeout_s)
        except TimeoutError:
            raise JanusError(
                f"Janus {self.base_url}: no answer to {body.get('request')!r} within {self.timeout_s:.0f} s"
            ) from None
        finally:
            self._pending.pop(transaction, None)
        data = reply.get("plugindata", {}).get("data", {})
        if "error_code" in data or "error" in data:
            raise JanusError(
                f"Janus {body.get('request')!r}: {data.get('error', 'error')} (code {data.get('error_code')})",
                data.get("error_code"),
            )
        return data, reply.get("jsep")

    async def detach(self, handle: int) -> None:
        await _post(self.http, f"{self.url}/{handle}", {"janus": "detach"}, self.timeout_s)

    async def wait_lost(self) -> str:
        """Returns (the reason) when the session is gone: Janus unreachable, or the session timed out."""
        return await asyncio.shield(self._lost)

    @property
    def lost(self) -> bool:
        return self._lost.done()

    async def destroy(self) -> None:
        """Destroy the session on Janus (best effort) and stop polling."""
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        if not self._lost.done():
            with contextlib.suppress(JanusError):
                await _post(self.http, self.url, {"janus": "destroy"}, self.timeout_s)
            self._lost.set_result("destroyed")

    async def _poll(self) -> None:
        try:
            while True:
                try:
                    async with self.http.get(
                        self.url, params={"maxev": "10"}, timeout=aiohttp.ClientTimeout(total=45)
                    ) as r:
                        if r.status != 200:
                            raise JanusError(f"Janus {self.base_url}: long poll answered {r.status}")
                        events = await r.json(content_type=None)
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    raise JanusError(f"Janus {self.base_url} unreachable: {e or type(e).__name__}") from None
                except ValueError:
                    raise JanusError(f"Janus {self.base_url}: the long poll's answer is not JSON") from None
                for ev in events if isinstance(events, list) else [events]:
                    if ev.get("janus") == "error" and ev.get("error", {}).get("code") == 458:
                        raise JanusError(f"Janus {self.base_url}: session {self.id} no longer exists")
                    if ev.get("janus") == "keepalive":
                        continue
                    waiter = self._pending.get(str(ev.get("transaction")))
                    if waiter is not None and not waiter.done() and ev.get("janus") == "event":
                        waiter.set_result(ev)
                    else:
                        self.events.put_nowait(ev)
        except JanusError as e:
            if not self._lost.done():
                self._lost.set_result(str(e))
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(JanusError(str(e)))


async def _post(http: aiohttp.ClientSession, url: str, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    msg = {"transaction": secrets.token_hex(8), **msg}
    try:
        async with http.post(url, json=msg, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if r.status != 200:
                raise JanusError(f"Janus {url}: HTTP {r.status} {r.reason}")
            reply: dict[str, Any] = await r.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise JanusError(f"Janus {url} unreachable: {e or type(e).__name__}") from None
    except ValueError:
        raise JanusError(f"Janus {url}: the answer is not JSON") from None
    if reply.get("janus") == "error":
        err = reply.get("error", {})
        raise JanusError(
            f"Janus {msg['janus']!r}: {err.get('reason', 'error')} (code {err.get('code')})", err.get("code")
        )
    return reply


# ---------- publishing into a VideoRoom ----------

# Janus errors retrying cannot fix: unauthorized (core 403), no such room (426), wrong pin (433)
_FATAL_CODES = {403, 426, 433}


class FarEnd:
    """Another participant of the room, subscribed to: its pictures (RGB uint8, as decoded) in ``frames``
    and its sound (mono float, at its rate) in ``audio``, for a room display and the room's speaker."""

    def __init__(self, feed: int, display: str) -> None:
        self.feed = feed
        self.display = display
        self.frames = LatestFrame()
        self.audio = AudioHub(max_seconds=1.0)
        self.codecs: dict[str, str] = {}
        self.pc: RTCPeerConnection | None = None
        self.handle: int | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                t = float(frame.time) if frame.time is not None else 0.0
                if track.kind == "video":
                    self.frames.put(frame.to_ndarray(format="rgb24"), t)
                else:
                    pcm = frame.to_ndarray()
                    x = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)
                    channels = len(frame.layout.channels)
                    x = x.reshape(-1, channels).mean(axis=1) if x.shape[0] == 1 else x.mean(axis=0)
                    self.audio.put(x, frame.sample_rate, t)
        except MediaStreamError:
            pass

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()


class JanusPublisher(Connector):
    """Publishes the shared encoder's video (and the room's sound) into a Janus VideoRoom over Janus's HTTP
    API: a session, a VideoRoom handle, ``join`` as a publisher, ``publish`` with the offer. The session's
    long poll keeps it alive and tells at once when Janus goes away. Leaving destroys the session (Janus
    then removes the publisher from the room). ``others`` lists the room's other publishers, as Janus
    reports them (``{"id", "display", "streams"}``), for a subscriber to use."""

    kind = "janus"

    def __init__(
        self,
        url: str,
        room: int,
        video: EncodedVideo,
        audio: AudioHub | None,
        display: str = "Roombox",
        pin: str = "",
        subscribe: bool = True,
        **kwargs: Any,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Janus API {url!r}: expected an http:// or https:// URL (such as http://host:8088/janus)")
        super().__init__(video, audio, **kwargs)
        self.url = url.rstrip("/")
        self.room = int(room)
        self.display = display
        self.pin = pin
        self.session: JanusSession | None = None
        self.publisher_id: int | None = None
        self.handle: int | None = None  # the publisher's VideoRoom handle
        self.others: dict[int, dict[str, Any]] = {}
        self.subscribe = subscribe
        self.far_ends: dict[int, FarEnd] = {}

    @classmethod
    def from_config(
        cls, cfg: JanusConfig, video: EncodedVideo, audio: AudioHub | None, on_state: StateCallback | None = None
    ) -> JanusPublisher:
        if not cfg.url:
            raise ValueError("[janus.url] is empty: give Janus's HTTP API URL (such as http://host:8088/janus)")
        return cls(
            cfg.url,
            cfg.room,
            video,
            audio,
            display=cfg.display,
            pin=cfg.pin,
            subscribe=cfg.subscribe,
            ice=cfg.ice_servers,
            connect_timeout_s=cfg.connect_timeout_s,
            media_timeout_s=cfg.media_timeout_s,
            retry_min_s=cfg.retry_min_s,
            retry_max_s=cfg.retry_max_s,
            on_state=on_state,
        )

    def _error(self, e: JanusError) -> ConnectError:
        return ConnectError(f"Janus {self.url} room {self.room}: {e}", retry=e.code not in _FATAL_CODES)

    async def _negotiate(self, pc: RTCPeerConnection) -> None:
        assert self.http is not None
        try:
            self.session = await JanusSession.create(self.http, self.url, timeout_s=self.connect_timeout_s)
            handle = self.handle = await self.session.attach("janus.plugin.videoroom")
            join: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": self.room, "display": self.display}
            if self.pin:
                join["pin"] = self.pin
            joined, _ = await self.session.message(handle, join)
            self.publisher_id = joined.get("id")
            self._note_publishers(joined)
            await pc.setLocalDescription(await pc.createOffer())
            _, jsep = await self.session.message(
                handle,
                {"request": "publish", "display": self.display},
                {"type": "offer", "sdp": pc.localDescription.sdp},
            )
        except JanusError as e:
            raise self._error(e) from None
        if not jsep or jsep.get("type") != "answer":
            raise ConnectError(f"Janus {self.url} room {self.room}: no SDP answer to the publish request", retry=False)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        except Exception as e:
            raise ConnectError(
                f"Janus {self.url} room {self.room}: cannot use the SDP answer: {e}", retry=False
            ) from None

    def _note_publishers(self, data: dict[str, Any]) -> None:
        for p in data.get("publishers", []) or []:
            if isinstance(p, dict) and "id" in p:
                self.others[int(p["id"])] = {
                    "id": p["id"],
                    "display": p.get("display", ""),
                    "streams": p.get("streams", []),
                }
        for key in ("leaving", "unpublished"):
            gone = data.get(key)
            if isinstance(gone, int):
                self.others.pop(gone, None)

    async def _watch(self) -> None:
        if self.session is None:
            return
        while not self.session.events.empty():
            ev = self.session.events.get_nowait()
            if ev.get("janus") in ("hangup", "detached") and ev.get("sender") == self.handle:
                raise ConnectError(f"Janus {self.url} room {self.room}: {ev.get('janus')} ({ev.get('reason', '')})")
            self._note_publishers(ev.get("plugindata", {}).get("data", {}))
        if self.session.lost:
            raise ConnectError(f"Janus {self.url} room {self.room}: {await self.session.wait_lost()}")
        if self.subscribe:
            for feed in [f for f in self.far_ends if f not in self.others]:
                await self._close(self.far_ends.pop(feed).close())
            for feed, other in list(self.others.items()):
                if feed not in self.far_ends and other.get("streams"):
                    try:
                        self.far_ends[feed] = await self._subscribe(feed, str(other.get("display", "")))
                    except (JanusError, ValueError) as e:  # one participant we cannot take: say so, stay
                        log.warning("Janus room %d: cannot subscribe to %s: %s", self.room, other.get("display"), e)
                        self.others[feed]["streams"] = []

    async def _subscribe(self, feed: int, display: str) -> FarEnd:
        """Subscribe to participant ``feed``: its media decoded into a :class:`FarEnd`'s hubs."""
        far = FarEnd(feed, display)
        try:
            await self._take(far)
        except BaseException:  # refused, Janus gone, or stop(): its connection must not stay open
            await self._close(far.close())
            raise
        log.info("Janus room %d: subscribed to %s (%s)", self.room, display or feed, far.codecs)
        return far

    async def _take(self, far: FarEnd) -> None:
        assert self.session is not None
        feed, display = far.feed, far.display
        far.handle = await self.session.attach("janus.plugin.videoroom")
        _, jsep = await self.session.message(
            far.handle, {"request": "join", "ptype": "subscriber", "room": self.room, "streams": [{"feed": feed}]}
        )
        if not jsep or jsep.get("type") != "offer":
            raise JanusError(f"Janus sent no offer for participant {feed}")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(self.ice)))
        far.pc = pc

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            far._readers.append(asyncio.create_task(far._read(track), name=f"far-end-{feed}-{track.kind}"))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # an unsupported codec, say: reported, not fatal for the meeting
            raise ValueError(f"cannot take {display or feed}'s media: {e}") from None
        for t in pc.getTransceivers():
            codecs = [c.mimeType for c in t._codecs if not c.mimeType.endswith("/rtx")]
            if codecs:
                far.codecs[t.kind] = codecs[0]
        await self.session.message(far.handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})

    async def _leave(self) -> None:
        session, self.session = self.session, None
        self.publisher_id = None
        self.others.clear()
        fars, self.far_ends = list(self.far_ends.values()), {}
        await self._close(*(far.close() for far in fars))
        if session is not None:
            await session.destroy()
