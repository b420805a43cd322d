"""A small client of Janus's HTTP API (https://janus.conf.meetecho.com/docs/rest): sessions, plugin
handles, requests and their asynchronous events by long poll.

``JanusSession`` is used by :class:`JanusPublisher` (publishing the room into a VideoRoom) and by the
tests' WHIP front. One long-poll task per session both keeps it alive and delivers the events; when
Janus goes away that task fails and :meth:`JanusSession.wait_lost` returns the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from appliance.streaming.connector import ConnectError, Connector
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import AudioHub
from common.errors import RoomboxError


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

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None,
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
            raise JanusError(f"Janus {self.base_url}: no answer to {body.get('request')!r} "
                             f"within {self.timeout_s:.0f} s") from None
        finally:
            self._pending.pop(transaction, None)
        data = reply.get("plugindata", {}).get("data", {})
        if "error_code" in data or "error" in data:
            raise JanusError(f"Janus {body.get('request')!r}: {data.get('error', 'error')} "
                             f"(code {data.get('error_code')})", data.get("error_code"))
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
                    async with self.http.get(self.url, params={"maxev": "10"},
                                             timeout=aiohttp.ClientTimeout(total=45)) as r:
                        if r.status != 200:
                            raise JanusError(f"Janus {self.base_url}: long poll answered {r.status}")
                        events = await r.json(content_type=None)
                except (aiohttp.ClientError, OSError) as e:
                    raise JanusError(f"Janus {self.base_url} unreachable: {e or type(e).__name__}") from None
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
        raise JanusError(f"Janus {msg['janus']!r}: {err.get('reason', 'error')} (code {err.get('code')})",
                         err.get("code"))
    return reply


# ---------- publishing into a VideoRoom ----------

# Janus errors retrying cannot fix: unauthorized (core 403), no such room (426), wrong pin (433)
_FATAL_CODES = {403, 426, 433}


class JanusPublisher(Connector):
    """Publishes the shared encoder's video (and the room's sound) into a Janus VideoRoom over Janus's HTTP
    API: a session, a VideoRoom handle, ``join`` as a publisher, ``publish`` with the offer. The session's
    long poll keeps it alive and tells at once when Janus goes away. Leaving destroys the session (Janus
    then removes the publisher from the room). ``others`` lists the room's other publishers, as Janus
    reports them (``{"id", "display", "streams"}``), for a subscriber to use."""

    kind = "janus"

    def __init__(self, url: str, room: int, video: EncodedVideo, audio: AudioHub | None, display: str = "Roombox",
                 pin: str = "", **kwargs: Any) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Janus API {url!r}: expected an http:// or https:// URL (such as http://host:8088/janus)")
        super().__init__(video, audio, **kwargs)
        self.url = url.rstrip("/")
        self.room = int(room)
        self.display = display
        self.pin = pin
        self.session: JanusSession | None = None
        self.publisher_id: int | None = None
        self.others: dict[int, dict[str, Any]] = {}

    def _error(self, e: JanusError) -> ConnectError:
        return ConnectError(f"Janus {self.url} room {self.room}: {e}", retry=e.code not in _FATAL_CODES)

    async def _negotiate(self, pc: RTCPeerConnection) -> None:
        assert self.http is not None
        try:
            self.session = await JanusSession.create(self.http, self.url, timeout_s=self.connect_timeout_s)
            handle = await self.session.attach("janus.plugin.videoroom")
            join: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": self.room,
                                    "display": self.display}
            if self.pin:
                join["pin"] = self.pin
            joined, _ = await self.session.message(handle, join)
            self.publisher_id = joined.get("id")
            self._note_publishers(joined)
            await pc.setLocalDescription(await pc.createOffer())
            _, jsep = await self.session.message(handle, {"request": "publish", "display": self.display},
                                                 {"type": "offer", "sdp": pc.localDescription.sdp})
        except JanusError as e:
            raise self._error(e) from None
        if not jsep or jsep.get("type") != "answer":
            raise ConnectError(f"Janus {self.url} room {self.room}: no SDP answer to the publish request",
                               retry=False)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        except Exception as e:
            raise ConnectError(f"Janus {self.url} room {self.room}: cannot use the SDP answer: {e}",
                               retry=False) from None

    def _note_publishers(self, data: dict[str, Any]) -> None:
        for p in data.get("publishers", []) or []:
            if isinstance(p, dict) and "id" in p:
                self.others[int(p["id"])] = {"id": p["id"], "display": p.get("display", ""),
                                             "streams": p.get("streams", [])}
        for key in ("leaving", "unpublished"):
            gone = data.get(key)
            if isinstance(gone, int):
                self.others.pop(gone, None)

    async def _watch(self) -> None:
        if self.session is None:
            return
        while not self.session.events.empty():
            ev = self.session.events.get_nowait()
            if ev.get("janus") in ("hangup", "detached"):
                raise ConnectError(f"Janus {self.url} room {self.room}: {ev.get('janus')} ({ev.get('reason', '')})")
            self._note_publishers(ev.get("plugindata", {}).get("data", {}))
        if self.session.lost:
            raise ConnectError(f"Janus {self.url} room {self.room}: {await self.session.wait_lost()}")

    async def _leave(self) -> None:
        session, self.session = self.session, None
        self.publisher_id = None
        self.others.clear()
        if session is not None:
            await session.destroy()
