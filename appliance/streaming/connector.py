"""Joining meetings: a connector publishes the room (the shared encoder's video, the room's sound) to a
far end and stays there: it reports its state, reconnects with back-off when the far end goes away, and
leaves cleanly.

:class:`Connector` is the one interface (``await start()``, ``await stop()``, ``state``, ``detail``, an
``on_state(state, detail)`` callback); :class:`~appliance.streaming.whip.WhipPublisher` and
:class:`~appliance.streaming.janus.JanusPublisher` are the two kinds. States:

- ``connecting``: negotiating, then waiting for ICE/DTLS;
- ``connected``: media flows; the far end's RTCP is watched: none for ``media_timeout_s`` after the first
  picture was sent counts as lost, and so does no picture sent within ``FIRST_PICTURE_S``;
- ``retrying``: the last attempt failed or the connection was lost (the detail says why and when the
  next attempt is); attempts back off from ``retry_min_s`` doubling to ``retry_max_s``;
- ``failed``: the far end refused in a way retrying cannot fix (a refused token, a bad URL, an answer
  that cannot be used); no more attempts until ``start()`` again;
- ``stopped``: after ``stop()``, which leaves the far end (no orphaned session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from appliance.config import IceServerConfig
from appliance.streaming.encoder import EncodedVideo, EncodedVideoTrack
from appliance.streaming.hub import AudioHub
from appliance.streaming.tracks import RoomAudioTrack
from common.errors import RoomboxError

log = logging.getLogger(__name__)

StateCallback = Callable[[str, str], None]
STABLE_S = 10.0  # connected this long: the next loss starts the back-off from retry_min_s again
MAX_RETRY_AFTER_S = 300.0  # a far end's Retry-After is honoured up to this (999999 s would be 11 days)
# connected this long without a picture sent: the encoder is stuck (its first keyframe takes seconds at most)
FIRST_PICTURE_S = 10.0


def describe_error(e: BaseException) -> str:
    """An exception in words: its message, or what it is when it has none (a timeout says nothing)."""
    if isinstance(e, TimeoutError) and not str(e):
        return "no answer in time"
    if isinstance(e, aiohttp.ClientConnectorError) and not isinstance(e, aiohttp.ClientSSLError):
        # aiohttp's own text: "Cannot connect to host H:P ssl:default [Connect call failed (...)]"
        errno = getattr(e.os_error, "errno", None)  # a name lookup's (socket.gaierror) is negative: its own words
        strerror = getattr(e.os_error, "strerror", None)
        why = os.strerror(errno) if isinstance(errno, int) and errno > 0 else strerror or describe_error(e.os_error)
        return f"cannot connect to {e.host}:{e.port}: {why}"
    return str(e) or type(e).__name__


class ConnectError(RoomboxError):
    """An attempt failed. ``retry`` False: retrying cannot help (the detail says what to fix)."""

    def __init__(self, message: str, retry: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after_s = retry_after_s


def ice_servers(config: tuple[IceServerConfig, ...]) -> list[RTCIceServer]:
    return [
        RTCIceServer(urls=list(s.urls), username=s.username or None, credential=s.credential or None) for s in config
    ]


class Connector(ABC):
    """Publish the room to one far end and stay there. Subclasses negotiate (:meth:`_negotiate`), may watch
    the far end (:meth:`_watch`) and leave (:meth:`_leave`)."""

    kind = "connector"

    def __init__(
        self,
        video: EncodedVideo,
        audio: AudioHub | None,
        *,
        ice: tuple[IceServerConfig, ...] = (),
        connect_timeout_s: float = 15.0,
        media_timeout_s: float = 4.0,
        retry_min_s: float = 1.0,
        retry_max_s: float = 8.0,
        on_state: StateCallback | None = None,
    ) -> None:
        self.video = video
        self.audio = audio
        self.ice = ice
        self.connect_timeout_s = connect_timeout_s
        self.media_timeout_s = media_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = max(retry_min_s, retry_max_s)
        self.on_state = on_state
        self.state = "stopped"
        self.detail = ""
        self.attempts = 0
        self.connections = 0
        self.last_error = ""  # why the last attempt failed, while the next one connects
        self.pc: RTCPeerConnection | None = None
        self.video_track: EncodedVideoTrack | None = None
        self.http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # closes that a cancelled caller left running
        self._retry_now = asyncio.Event()  # ends the wait before the next attempt (a join from the panel)

    def _set(self, state: str, detail: str = "") -> None:
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        (log.warning if state in ("retrying", "failed") else log.info)("%s: %s %s", self.kind, state, detail)
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:
                log.exception("%s: the state callback failed", self.kind)

    async def start(self) -> None:
        """Start joining (returns at once; follow ``state`` or the callback). Idempotent, but a join while
        the connector waits to retry (a far end's Retry-After may say minutes) tries again now."""
        if self._task is not None and not self._task.done():
            if self.state == "retrying":
                log.info("%s: asked to join while waiting to retry: trying now", self.kind)
                self._retry_now.set()
            return
        if self.http is None:
            self.http = aiohttp.ClientSession()
        self.attempts, self.last_error = 0, ""  # a join afresh counts its attempts afresh
        self._set("connecting", "attempt 1")  # at once: the panel's reply to "join" says so, not "stopped"
        self._task = asyncio.create_task(self._run(), name=f"{self.kind}-connector")

    async def stop(self) -> None:
        """Leave the far end and stop. Safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._teardown()
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
            self.http = None
        self._set("stopped")

    async def _run(self) -> None:
        delay = self.retry_min_s
        while True:
            self.attempts += 1
            self._set("connecting", f"attempt {self.attempts}")
            began: float | None = None
            try:
                began = await self._session()
                error = ConnectError("the connection ended")
            except ConnectError as e:
                error = e
            except (aiohttp.ClientError, OSError) as e:
                error = ConnectError(f"{self.kind}: {type(e).__name__}: {e}")
            except Exception as e:  # a far end can send anything; report it, do not die
                log.exception("%s: unexpected error", self.kind)
                error = ConnectError(f"{self.kind}: {type(e).__name__}: {e}")
            if isinstance(error, ConnectError) and not error.retry:
                await self._teardown()
                self._set("failed", str(error))
                return
            await self._teardown()
            if began is not None and time.monotonic() - began >= STABLE_S:
                delay = self.retry_min_s
            wait = max(delay, min(error.retry_after_s or 0.0, MAX_RETRY_AFTER_S))
            self.last_error = str(error)
            self._set("retrying", f"{error}; next attempt in {wait:.1f} s")
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._retry_now.wait()
            delay = self.retry_min_s if self._retry_now.is_set() else min(delay * 2, self.retry_max_s)

    async def _session(self) -> float:
        """One connection: negotiate, wait for it, watch it; raises ConnectError when it fails or ends.
        Returns never normally; the float is for subclasses that end a session on purpose."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(self.ice)))
        self.pc = pc
        self.video_track = self.video.add_to(pc, direction="sendonly")
        if self.audio is not None:
            pc.addTransceiver(RoomAudioTrack(self.audio), direction="sendonly")
        await self._negotiate(pc)
        deadline = time.monotonic() + self.connect_timeout_s
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise ConnectError(f"{self.kind}: ICE/DTLS {pc.connectionState}")
            if time.monotonic() > deadline:
                raise ConnectError(
                    f"{self.kind}: not connected within {self.connect_timeout_s:.0f} s (ICE {pc.iceConnectionState})"
                )
            await asyncio.sleep(0.1)
        began = time.monotonic()
        self.connections += 1
        self.last_error = ""
        self._set("connected", self._describe())
        track = self.video_track
        while True:
            if pc.connectionState in ("failed", "closed"):
                raise ConnectError(f"{self.kind}: connection {pc.connectionState}")
            if track.readyState != "live":  # the shared encoder failed: a new session gets a new one
                raise ConnectError(f"{self.kind}: the video stopped (the encoder failed)")
            # the far end reports once media reaches it, so its silence counts from the first picture sent, not
            # from connecting: the codec's encoder starts with the first connection that pulls, and on a loaded
            # box its first keyframe can take longer than media_timeout_s
            now = time.monotonic()
            if track.first_sent is None:
                if now - began > FIRST_PICTURE_S:
                    raise ConnectError(f"{self.kind}: no picture was sent within {FIRST_PICTURE_S:.0f} s")
            else:
                silent = now - max(track.last_rtcp, track.first_sent)
                if silent > self.media_timeout_s:
                    raise ConnectError(f"{self.kind}: the far end went silent (no RTCP for {silent:.1f} s)")
            await self._watch()
            await asyncio.sleep(0.25)

    def _describe(self) -> str:
        codec = self.video_track.codec if self.video_track is not None else None
        return f"video {codec}" if codec else ""

    async def _teardown(self) -> None:
        try:
            await asyncio.wait_for(self._leave(), 5.0)
        except Exception as e:  # the far end may be gone already: leaving is best effort
            log.warning("%s: leaving failed: %s", self.kind, describe_error(e))
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await self._close(pc.close())
        self.video_track = None

    def _closing_task(self, closing: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(closing)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def _close(self, *closing: Coroutine[Any, Any, None]) -> None:
        """Run these closes (of peer connections) to their end even when the caller is cancelled: a
        connection closed halfway keeps its ICE sockets open for good. ``stop()`` waits for them."""
        await asyncio.shield(asyncio.gather(*(self._closing_task(c) for c in closing)))

    @abstractmethod
    async def _negotiate(self, pc: RTCPeerConnection) -> None:
        """Offer (pc has its send-only tracks), get the answer, ``setRemoteDescription``; ConnectError on refusal."""

    async def _watch(self) -> None:  # noqa: B027 - optional hook
        """Called while connected; raise ConnectError when the far end is gone."""

    @abstractmethod
    async def _leave(self) -> None:
        """Leave the far end (best effort); called after every session and on stop."""

    def stats(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "attempts": self.attempts, "connections": self.connections}


def connectors_from_config(
    cfg: Any, video: EncodedVideo, audio: AudioHub | None, on_state: Callable[[str, str, str], None] | None = None
) -> list[Connector]:
    """The connectors ``cfg`` (the whole :class:`appliance.config.Config`) asks for: WHIP when ``[whip] url``
    is set, the Janus VideoRoom when ``[janus] url`` is set. ``on_state(kind, state, detail)``; nothing is
    started: ``await c.start()`` each, and ``await c.stop()`` on the way out."""
    from appliance.streaming.janus import JanusPublisher
    from appliance.streaming.whip import WhipPublisher

    def callback(kind: str) -> StateCallback | None:
        return None if on_state is None else (lambda state, detail: on_state(kind, state, detail))

    out: list[Connector] = []
    if cfg.whip.url:
        out.append(WhipPublisher.from_config(cfg.whip, video, audio, on_state=callback("whip")))
    if cfg.janus.url:
        out.append(JanusPublisher.from_config(cfg.janus, video, audio, on_state=callback("janus")))
    return out
