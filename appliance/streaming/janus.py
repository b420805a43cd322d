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
import time
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from appliance.config import JanusConfig
from appliance.streaming.connector import ConnectError, Connector, StateCallback, describe_error, ice_servers
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import AudioHub, LatestFrame
from common.errors import RoomboxError
from common.text import excerpt

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 45.0  # Janus holds a long poll up to 30 s, then answers a keepalive
POLL_QUICK_S = 1.0  # a poll answered sooner than this with no events was not held
POLL_PAUSE_MIN_S, POLL_PAUSE_MAX_S = 0.5, 5.0  # the pause after such a poll, doubling


class JanusError(RoomboxError):
    """Janus refused a request or could not be reached; the message says which and why."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


_SAID_NOT_HOLDING: set[str] = set()  # the Janus URLs already said not to hold the long poll


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
        self._skipped = 0  # events that were not JSON objects
        self._gone = False  # Janus said the session no longer exists, or did not answer: no point in destroying it
        self._poller = asyncio.create_task(self._poll(), name=f"janus-poll-{session_id}")

    @classmethod
    async def create(cls, http: aiohttp.ClientSession, base_url: str, timeout_s: float = 10.0) -> JanusSession:
        reply = await _post(http, base_url.rstrip("/"), {"janus": "create"}, timeout_s)
        return cls(http, base_url, _reply_id(reply, "create"), timeout_s)

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.id}"

    async def attach(self, plugin: str) -> int:
        """A handle on ``plugin`` (e.g. ``janus.plugin.videoroom``)."""
        reply = await _post(self.http, self.url, {"janus": "attach", "plugin": plugin}, self.timeout_s)
        return _reply_id(reply, "attach")

    async def message(
        self,
        handle: int,
        body: dict[str, Any],
        jsep: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A plugin request: returns (plugin data, jsep or None), waiting for the asynchronous event if Janus
        acks first. A plugin error (``error_code``) raises :class:`JanusError` with the plugin's reason; so
        does a session already lost. Plugin data or a jsep that is not a JSON object is logged and ignored."""
        request = body.get("request")
        if self._lost.done():
            raise JanusError(self._lost.result())
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
            raise JanusError(f"Janus {self.base_url}: no answer to {request!r} within {self.timeout_s:.0f} s") from None
        finally:
            self._pending.pop(transaction, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # a loss that came with a direct answer: seen, not "never retrieved"
        plugindata = reply.get("plugindata", {})
        data = plugindata.get("data", {}) if isinstance(plugindata, dict) else plugindata
        if not isinstance(data, dict):
            log.warning(
                "Janus %s: the answer to %r has plugin data that is not a JSON object, ignored: %.80r",
                self.base_url,
                request,
                data,
            )
            data = {}
        if "error_code" in data or "error" in data:
            code = _as_int(data.get("error_code"))
            raise JanusError(f"Janus {request!r}: {excerpt(str(data.get('error', 'error')))} (code {code})", code)
        jsep = reply.get("jsep")
        if jsep is not None and not isinstance(jsep, dict):
            log.warning(
                "Janus %s: the answer to %r has an SDP (jsep) that is not a JSON object, ignored: %.80r",
                self.base_url,
                request,
                jsep,
            )
            jsep = None
        return data, jsep

    async def detach(self, handle: int) -> None:
        await _post(self.http, f"{self.url}/{handle}", {"janus": "detach"}, self.timeout_s)

    async def wait_lost(self) -> str:
        """Returns (the reason) when the session is gone: Janus unreachable, or the session timed out."""
        return await asyncio.shield(self._lost)

    @property
    def lost(self) -> bool:
        return self._lost.done()

    async def destroy(self) -> None:
        """Destroy the session on Janus (best effort) and stop polling. The ``destroy`` request goes out even
        when the poller stopped on an answer it could not read; not when Janus said the session is gone."""
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._poller
        if not self._gone:
            self._gone = True
            with contextlib.suppress(JanusError):
                await _post(self.http, self.url, {"janus": "destroy"}, self.timeout_s)
        self._fail("destroyed")

    def _fail(self, reason: str) -> None:
        """The session is lost: ``wait_lost`` returns ``reason``, and every request waiting fails with it."""
        if not self._lost.done():
            self._lost.set_result(reason)
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(JanusError(self._lost.result()))

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        pause = 0.0  # the wait before the next poll, when Janus answers polls at once with nothing
        try:
            while True:
                began = loop.time()
                try:
                    async with self.http.get(
                        self.url, params={"maxev": "10"}, timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT_S)
                    ) as r:
                        if r.status != 200:
                            raise JanusError(f"Janus {self.base_url}: the long poll answered HTTP {r.status}")
                        events = await r.json(content_type=None)
                except TimeoutError:
                    self._gone = True
                    raise JanusError(
                        f"Janus {self.base_url} did not answer the long poll within {POLL_TIMEOUT_S:.0f} s"
                    ) from None
                except (aiohttp.ClientError, OSError) as e:
                    self._gone = True
                    raise JanusError(f"Janus {self.base_url} unreachable: {describe_error(e)}") from None
                except ValueError:
                    raise JanusError(f"Janus {self.base_url}: the long poll's answer is not JSON") from None
                taken = 0
                for ev in events if isinstance(events, list) else [events]:
                    if not isinstance(ev, dict):
                        self._skipped += 1
                        if str(self._skipped).rstrip("0") == "1":  # the 1st, 10th, 100th...: not a flood
                            log.warning(
                                "Janus %s: skipped an event that is not a JSON object (%d so far): %.80r",
                                self.base_url,
                                self._skipped,
                                ev,
                            )
                        continue
                    error = ev.get("error")
                    if ev.get("janus") == "error" and isinstance(error, dict) and error.get("code") == 458:
                        self._gone = True
                        raise JanusError(f"Janus {self.base_url}: session {self.id} no longer exists")
                    if ev.get("janus") == "keepalive":
                        continue
                    if ev.get("janus") == "timeout":  # Janus expired the session (it missed its keepalives)
                        self._gone = True
                        raise JanusError(f"Janus {self.base_url}: session {self.id} timed out at Janus")
                    taken += 1
                    waiter = self._pending.get(str(ev.get("transaction")))
                    if waiter is not None and not waiter.done() and ev.get("janus") == "event":
                        waiter.set_result(ev)
                    else:
                        self.events.put_nowait(ev)
                if taken or loop.time() - began >= POLL_QUICK_S:
                    pause = 0.0
                    continue
                # answered at once with nothing (a proxy in front of Janus that does not hold the long poll,
                # say): without a pause this is a tight loop of requests
                if self.base_url not in _SAID_NOT_HOLDING:  # once per run: not again at each reconnect
                    _SAID_NOT_HOLDING.add(self.base_url)
                    log.warning(
                        "Janus %s does not hold the long poll (it answers at once with no events): "
                        "the box now waits up to %.0f s between polls, so events may arrive late",
                        self.base_url,
                        POLL_PAUSE_MAX_S,
                    )
                pause = min(max(2 * pause, POLL_PAUSE_MIN_S), POLL_PAUSE_MAX_S)
                await asyncio.sleep(pause)
        except JanusError as e:
            self._fail(str(e))
        except Exception as e:  # a Janus (or a proxy) can answer anything: the session is lost, not the box
            log.exception("Janus %s: the long poll stopped", self.base_url)
            self._fail(
                f"Janus {self.base_url}: the long poll stopped on an answer the box cannot read "
                f"({type(e).__name__}: {e})"
            )


async def _post(http: aiohttp.ClientSession, url: str, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    msg = {"transaction": secrets.token_hex(8), **msg}
    try:
        async with http.post(url, json=msg, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if r.status != 200:
                raise JanusError(f"Janus {url}: HTTP {r.status} {excerpt(r.reason or '', 80)}")
            reply: Any = await r.json(content_type=None)
    except TimeoutError:
        raise JanusError(f"Janus {url} did not answer {msg['janus']!r} within {timeout_s:.0f} s") from None
    except (aiohttp.ClientError, OSError) as e:
        raise JanusError(f"Janus {url} unreachable: {describe_error(e)}") from None
    except ValueError:
        raise JanusError(f"Janus {url}: the answer is not JSON") from None
    if not isinstance(reply, dict):
        raise JanusError(f"Janus {msg['janus']!r}: the answer is not a JSON object: {excerpt(str(reply), 80)}")
    if reply.get("janus") == "error":
        err = reply.get("error")
        err = err if isinstance(err, dict) else {}
        code = _as_int(err.get("code"))
        raise JanusError(f"Janus {msg['janus']!r}: {excerpt(str(err.get('reason', 'error')))} (code {code})", code)
    return reply


def _as_int(value: Any) -> int | None:
    """An id or code as Janus sends it (a number, or digits in a string), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _reply_id(reply: dict[str, Any], what: str) -> int:
    """``data.id`` of Janus's answer to ``create`` or ``attach``."""
    data = reply.get("data")
    if not isinstance(data, dict) or "id" not in data:
        raise JanusError(f"Janus {what!r} answered without data.id")
    ident = _as_int(data["id"])
    if ident is None:
        raise JanusError(f"Janus {what!r} answered with a data.id that is not a number: {str(data['id'])[:40]!r}")
    return ident


# ---------- publishing into a VideoRoom ----------

# Janus errors retrying cannot fix: unauthorized (core 403), no such plugin (core 460: Janus runs without the
# VideoRoom plugin), no such room (426), wrong pin (433)
_FATAL_CODES = {403, 460, 426, 433}


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
        self.since = time.monotonic()  # subscribed at: its media should connect within the connect timeout
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
        max_far_ends: int = 8,
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
        self.max_far_ends = max_far_ends
        self.far_ends: dict[int, FarEnd] = {}
        self._far_retry: dict[int, tuple[float, float]] = {}  # feed -> (not before, the next wait): one that failed
        self._far_capped = 0  # the participants with media last said to be beyond max_far_ends

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
            max_far_ends=cfg.max_far_ends,
            ice=cfg.ice_servers,
            connect_timeout_s=cfg.connect_timeout_s,
            media_timeout_s=cfg.media_timeout_s,
            retry_min_s=cfg.retry_min_s,
            retry_max_s=cfg.retry_max_s,
            on_state=on_state,
        )

    def _error(self, e: JanusError) -> ConnectError:
        hint = (
            " (Janus runs without its VideoRoom plugin: enable janus.plugin.videoroom there)" if e.code == 460 else ""
        )
        return ConnectError(f"Janus {self.url} room {self.room}: {e}{hint}", retry=e.code not in _FATAL_CODES)

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
        if not jsep or jsep.get("type") != "answer" or not isinstance(jsep.get("sdp"), str):
            raise ConnectError(f"Janus {self.url} room {self.room}: no SDP answer to the publish request", retry=False)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        except Exception as e:
            raise ConnectError(
                f"Janus {self.url} room {self.room}: cannot use the SDP answer: {e}", retry=False
            ) from None

    def _note_publishers(self, data: dict[str, Any]) -> None:
        """Note the room's publishers from a VideoRoom event; a participant that cannot be read is logged and
        skipped (one bad entry must not drop the meeting)."""
        publishers = data.get("publishers") or []
        if not isinstance(publishers, list):
            log.warning(
                "Janus room %d: skipped a list of participants that is not a list: %.80r", self.room, publishers
            )
            publishers = []
        for p in publishers:
            feed = _as_int(p.get("id")) if isinstance(p, dict) else None
            if not isinstance(p, dict) or feed is None:
                log.warning("Janus room %d: skipped a participant without a numeric id: %.80r", self.room, p)
                continue
            display = p.get("display", "")
            if not isinstance(display, str):
                log.warning(
                    "Janus room %d: participant %d's name is not text (%.40r): shown by number",
                    self.room,
                    feed,
                    display,
                )
                display = ""
            streams = p.get("streams", [])
            if not isinstance(streams, list):
                log.warning(
                    "Janus room %d: participant %d's streams are not a list, ignored: %.80r", self.room, feed, streams
                )
                streams = []
            self.others[feed] = {"id": feed, "display": display, "streams": streams}
        for key in ("leaving", "unpublished"):
            gone = _as_int(data.get(key))
            if gone is not None:
                self.others.pop(gone, None)

    async def _watch(self) -> None:
        if self.session is None:
            return
        while not self.session.events.empty():
            ev = self.session.events.get_nowait()
            if ev.get("janus") in ("hangup", "detached") and ev.get("sender") == self.handle:
                raise ConnectError(
                    f"Janus {self.url} room {self.room}: {ev.get('janus')} ({excerpt(str(ev.get('reason', '')))})"
                )
            plugindata = ev.get("plugindata")
            if plugindata is None:  # webrtcup, media, slowlink...: nothing about the room's participants
                continue
            data = plugindata.get("data") if isinstance(plugindata, dict) else plugindata
            if not isinstance(data, dict):
                log.warning(
                    "Janus room %d: skipped an event whose plugin data is not a JSON object: %.80r", self.room, data
                )
                continue
            self._note_publishers(data)
        if self.session.lost:
            raise ConnectError(f"Janus {self.url} room {self.room}: {await self.session.wait_lost()}")
        if self.subscribe:
            await self._follow_far_ends()

    async def _follow_far_ends(self) -> None:
        """Receive the room's other participants: a subscription per participant with media, up to
        ``max_far_ends`` (each one decodes a picture); one that left is dropped, one whose media never
        connects (within ``connect_timeout_s``) or fails is dropped and tried again later, with back-off.
        Each subscription dropped is detached at Janus (its handle would stay there until the session ends)."""
        now = time.monotonic()
        for feed, far in list(self.far_ends.items()):
            state = far.pc.connectionState if far.pc is not None else "new"
            dead = state in ("failed", "closed") or (state != "connected" and now - far.since > self.connect_timeout_s)
            if feed in self.others and not dead:
                continue
            del self.far_ends[feed]
            if dead and feed in self.others:
                wait = self._far_retry.get(feed, (0.0, self.retry_min_s))[1]
                self._far_retry[feed] = (now + wait, min(2 * wait, self.retry_max_s))
                log.warning(
                    "Janus room %d: %s's media did not connect (%s after %.0f s); tried again in %.1f s",
                    self.room,
                    far.display or feed,
                    state,
                    now - far.since,
                    wait,
                )
            await self._drop(far)
        for feed in [f for f in self._far_retry if f not in self.others]:
            del self._far_retry[feed]
        wanted = [feed for feed, other in self.others.items() if other.get("streams")]
        if len(wanted) > self.max_far_ends and len(wanted) != self._far_capped:
            log.warning(
                "Janus room %d: %d participants send media; the box receives %d of them ([janus] max_far_ends)",
                self.room,
                len(wanted),
                self.max_far_ends,
            )
        self._far_capped = len(wanted) if len(wanted) > self.max_far_ends else 0
        for feed in wanted:
            if len(self.far_ends) >= self.max_far_ends:
                break
            if feed in self.far_ends or self._far_retry.get(feed, (0.0, 0.0))[0] > now:
                continue
            other = self.others[feed]
            try:
                self.far_ends[feed] = await self._subscribe(feed, str(other.get("display", "")))
            except Exception as e:  # one participant we cannot take: say so, stay
                log.warning(
                    "Janus room %d: cannot subscribe to %s: %s",
                    self.room,
                    other.get("display") or feed,
                    describe_error(e),
                )
                other["streams"] = []  # not again, until it publishes anew

    async def _drop(self, far: FarEnd) -> None:
        """Stop receiving ``far``: its connection closed, its handle detached at Janus (best effort)."""
        await self._close(far.close())
        if far.handle is not None and self.session is not None and not self.session.lost:
            try:
                await self.session.detach(far.handle)
            except Exception as e:  # Janus will drop it with the session at the latest
                log.warning(
                    "Janus room %d: detaching %s failed: %s", self.room, far.display or far.feed, describe_error(e)
                )

    async def _subscribe(self, feed: int, display: str) -> FarEnd:
        """Subscribe to participant ``feed``: its media decoded into a :class:`FarEnd`'s hubs."""
        far = FarEnd(feed, display)
        try:
            await self._take(far)
        except asyncio.CancelledError:  # stop(): its connection must not stay open (the session goes too)
            await self._close(far.close())
            raise
        except Exception:  # refused, or Janus gone: nothing of it may stay open, here or at Janus
            await self._drop(far)
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
        if not isinstance(jsep, dict) or jsep.get("type") != "offer" or not isinstance(jsep.get("sdp"), str):
            raise JanusError(f"Janus sent no offer for participant {display or feed}")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(self.ice)))
        far.pc = pc

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            far._readers.append(asyncio.create_task(far._read(track), name=f"far-end-{feed}-{track.kind}"))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # an unsupported codec, say: reported, not fatal for the meeting
            raise ValueError(f"cannot take {display or feed}'s media: {describe_error(e)}") from None
        for t in pc.getTransceivers():
            codecs = [c.mimeType for c in t._codecs if not c.mimeType.endswith("/rtx")]
            if codecs:
                far.codecs[t.kind] = codecs[0]
        await self.session.message(far.handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})

    async def _leave(self) -> None:
        session, self.session = self.session, None
        self.publisher_id = None
        self.others.clear()
        self._far_retry.clear()
        self._far_capped = 0
        fars, self.far_ends = list(self.far_ends.values()), {}
        await self._close(*(far.close() for far in fars))
        if session is not None:
            await session.destroy()
