"""A small client of Janus's HTTP API (https://janus.conf.meetecho.com/docs/rest): sessions, plugin
handles, requests and their asynchronous events by long poll.

``JanusSession`` is used by :class:`appliance.streaming.connector.JanusPublisher` (the VideoRoom) and by
the tests' WHIP front. One long-poll task per session both keeps it alive and delivers the events; when
Janus goes away that task fails and :meth:`JanusSession.wait_lost` returns the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import aiohttp

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
