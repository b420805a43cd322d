"""WHIP (RFC 9725) against a real Janus on 127.0.0.1.

The WHIP endpoint here is ``tests/janus_fixture.WhipFront``, which does what Debian's ``simple-whip-server``
does (each offer becomes a publisher in a real Janus VideoRoom through Janus's API; DELETE hangs it up) and can
also answer errors and garbage on purpose; the media goes to the real Janus, checked through Janus's admin API
(codec, packets received, sessions left). The real ``simple-whip-server`` (unpacked by ``scripts/setup``, see
``tests/janus_fixture.py``) carries the room's picture and sound to Chromium in ``tests/test_janus.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from appliance.app import meeting_check
from appliance.config import StreamConfig, WhipConfig
from appliance.streaming.encoder import EncodedVideo, PyAvVideoEncoder
from appliance.streaming.hub import AudioHub, LatestFrame
from appliance.streaming.ice import offer_loopback
from appliance.streaming.server import run_server
from appliance.streaming.whip import WhipPublisher
from tests.janus_fixture import ROOM, Janus, WhipFront, free_port, wait_for
from tests.test_streaming import run_async

TOKEN = "s3cret-token"
W, H, FPS = 320, 180, 30.0


@pytest.fixture(scope="module")
def janus() -> Iterator[Janus]:
    with Janus.running() as j:
        yield j


class Room:
    """A 30 frames/s picture and sound feed and the shared encoders, on the running loop."""

    def __init__(self, codecs: tuple[str, ...] = ("VP8", "H264"), tone_hz: float = 0.0) -> None:
        offer_loopback()
        self.tone_hz = tone_hz  # the room's sound: silence, or a tone at 0.3 of full scale
        self.frames, self.audio = LatestFrame(), AudioHub()
        self.video = EncodedVideo(self.frames, StreamConfig(width=W, height=H, fps=FPS, codecs=codecs))
        self.states: list[tuple[float, str, str]] = []
        self._task = asyncio.create_task(self._feed())

    def on_state(self, state: str, detail: str) -> None:
        self.states.append((time.monotonic(), state, detail))

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        t0, i = loop.time(), 0
        while True:
            img = np.full((H, W, 3), 70, np.uint8)
            img[:, (i * 4) % (W - 20) : (i * 4) % (W - 20) + 20] = 255
            self.frames.put(img, t0 + i / FPS)
            n = int(16000 / FPS)
            tone = 0.3 * np.sin(2 * np.pi * self.tone_hz * (np.arange(n) + i * n) / 16000)
            self.audio.put(tone.astype(np.float32), 16000, t0 + i / FPS)
            i += 1
            await asyncio.sleep(max(0.0, t0 + i / FPS - loop.time()))

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.video.close()


def _publisher(room: Room, url: str, token: str = TOKEN, **kw: Any) -> WhipPublisher:
    cfg = WhipConfig(url=url, token=token, retry_min_s=0.5, retry_max_s=2.0, **kw)
    return WhipPublisher.from_config(cfg, room.video, room.audio, on_state=room.on_state)


@pytest.mark.parametrize("codec", ["VP8"])  # H.264 over WHIP: tests/test_janus.py, decoded by Chromium
def test_whip_publishes_the_room_into_janus_and_leaves_no_session(janus: Janus, codec: str) -> None:
    async def main() -> None:
        room = Room(codecs=(codec,))
        front = WhipFront(janus.url, TOKEN)
        url = await front.start()
        pub = _publisher(room, f"{url}/endpoint/{ROOM}")
        try:
            await pub.start()
            await wait_for(lambda: pub.state == "connected", 20, "connected")
            assert pub.resource is not None and pub.resource.startswith(url + "/resource/")
            await asyncio.sleep(2.0)
            first = await asyncio.to_thread(janus.published)
            await asyncio.sleep(1.0)
            later = await asyncio.to_thread(janus.published)
            print(f"\nJanus receives: {later}; encoders: {room.video.stats()}")
            assert [p["codec"] for p in later] == [codec.lower()]
            assert later[0]["packets"] > first[0]["packets"] + 10  # media keeps flowing into the VideoRoom
            assert room.video.stats()[codec]["keyframes"] >= 1
        finally:
            await pub.stop()
            await front.stop()
            await room.close()
        assert pub.state == "stopped" and front.deletes == 1
        assert await asyncio.to_thread(janus.sessions) == []  # left cleanly: no orphaned session
        assert [s for _, s, _ in room.states] == ["connecting", "connected", "stopped"]

    run_async(main())


def test_whip_endpoints_that_refuse_or_answer_garbage_give_one_clear_error(janus: Janus) -> None:
    async def main() -> None:
        room = Room()
        front = WhipFront(janus.url, TOKEN)
        url = await front.start()
        cases = [
            (f"{url}/endpoint/{ROOM}", "wrong-token", "the token was refused (401 Unauthorized)"),
            (f"{url}/status/404", TOKEN, "refused the offer (404 Not Found): test says 404"),
            (f"{url}/garbage", TOKEN, "the answer is not an SDP session description: hello"),
            (f"{url}/endpoint/999", TOKEN, "refused the offer (404 Not Found)"),  # no such room in Janus
        ]
        try:
            for endpoint, token, message in cases:
                posts, deletes = front.posts, front.deletes
                pub = _publisher(room, endpoint, token=token)
                await pub.start()
                await wait_for(lambda pub=pub: pub.state == "failed", 15, f"failed for {endpoint}")
                await asyncio.sleep(0.7)  # past the first back-off (0.5 s): a retry would show
                print(f"\n{endpoint}: {pub.detail}")
                assert message in pub.detail and endpoint in pub.detail
                assert front.posts == posts + 1, "retried an error that retrying cannot fix"
                await pub.stop()
                if "garbage" in endpoint:
                    assert front.deletes == deletes + 1  # its Location was still deleted
        finally:
            await front.stop()
            await room.close()
        assert await asyncio.to_thread(janus.sessions) == []

    run_async(main())


def test_whip_server_errors_and_an_unreachable_endpoint_are_retried_with_back_off(janus: Janus) -> None:
    async def main() -> None:
        room = Room()
        front = WhipFront(janus.url, TOKEN)
        url = await front.start()
        try:
            pub = _publisher(room, f"{url}/status/503")
            await pub.start()
            await asyncio.sleep(3.0)
            await pub.stop()
            # back-off 0.5, then Retry-After 1 s (the server's) on each: at most 4 attempts in 3 s
            assert 2 <= front.posts <= 4, front.posts
            assert any(
                s == "retrying" and "503 Service Unavailable: test says 503" in d and "next attempt in" in d
                for _, s, d in room.states
            )

            closed = f"http://127.0.0.1:{free_port()}/whip/endpoint/{ROOM}"
            pub = _publisher(room, closed)
            await pub.start()
            await wait_for(lambda: pub.state == "retrying", 10, "retrying")
            print(f"\nunreachable: {pub.detail}")
            assert f"WHIP {closed} unreachable: " in pub.detail and "next attempt in" in pub.detail
            port = closed.split(":")[2].split("/")[0]  # said in words, not as aiohttp's "ssl:default [...]"
            assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in pub.detail, pub.detail
            # /api/health says so (before, "ok" while the meeting was out of reach)
            health = meeting_check(pub)()
            assert (
                health is not None and health[0] == "degraded" and f"retrying: WHIP {closed} unreachable" in health[1]
            )
            await pub.stop()
            assert meeting_check(pub)() is None  # left on purpose: nothing to say
            # joined again: connecting at once, its attempts counted afresh (before: "stopped" in the panel's
            # reply to "join", then "attempt 5")
            await pub.start()
            assert (pub.state, pub.detail, pub.attempts) == ("connecting", "attempt 1", 0)
            await wait_for(lambda: pub.state == "retrying", 10, "retrying")
            assert pub.attempts == 1
            await pub.stop()
        finally:
            await front.stop()
            await room.close()

    run_async(main())


def test_whip_reports_a_killed_janus_and_is_back_after_it_returns(janus: Janus) -> None:
    async def main() -> None:
        room = Room(codecs=("VP8",))
        front = WhipFront(janus.url, TOKEN)
        url = await front.start()
        pub = _publisher(room, f"{url}/endpoint/{ROOM}")
        try:
            await pub.start()
            await wait_for(lambda: pub.state == "connected", 20, "connected")
            await asyncio.sleep(1.0)
            killed = time.monotonic()
            await asyncio.to_thread(janus.kill)
            await wait_for(lambda: pub.state != "connected", 10, "the loss reported")
            reported = time.monotonic() - killed
            await asyncio.to_thread(janus.start)
            returned = time.monotonic()
            await wait_for(lambda: pub.state == "connected", 20, "connected again")
            back = time.monotonic() - returned
            print(
                f"\nkilled Janus reported after {reported:.1f} s ({pub.connections} connections); "
                f"back {back:.1f} s after Janus returned; states: {[s for _, s, _ in room.states]}"
            )
            assert reported <= 5.0 + 1.0  # media_timeout_s 4 s + polling; the figure is 5 s
            assert back <= 10.0
            await asyncio.sleep(1.5)
            assert [p["codec"] for p in await asyncio.to_thread(janus.published)] == ["vp8"]
        finally:
            await _leave(pub, front, room)
        assert await asyncio.to_thread(janus.sessions) == []

    run_async(main())


async def _leave(pub: WhipPublisher, front: WhipFront, room: Room) -> None:
    await pub.stop()
    await front.stop()
    await room.close()


class _FailsOnce(PyAvVideoEncoder):
    """libvpx, whose 15th picture (of all instances) raises, as a broken encoder would."""

    calls = 0

    def encode(self, image: np.ndarray, pts: int, keyframe: bool = False) -> list[Any]:
        _FailsOnce.calls += 1
        if _FailsOnce.calls == 15:
            raise ValueError("the encoder broke")
        return super().encode(image, pts, keyframe)


def test_whip_reconnects_with_a_new_encoder_when_the_shared_one_fails(janus: Janus) -> None:
    _FailsOnce.calls = 0  # (a rerun in the same process fails again on its 15th frame)

    async def main() -> None:
        room = Room(codecs=("VP8",))
        room.video.make_encoder = _FailsOnce
        front = WhipFront(janus.url, TOKEN)
        url = await front.start()
        pub = _publisher(room, f"{url}/endpoint/{ROOM}")
        try:
            await pub.start()
            await wait_for(lambda: pub.connections >= 2 and pub.state == "connected", 30, "connected again")
            await asyncio.sleep(1.0)
            first = await asyncio.to_thread(janus.published)
            await asyncio.sleep(1.0)
            later = await asyncio.to_thread(janus.published)
            print(f"\nstates: {[(s, d) for _, s, d in room.states]}; encoders: {room.video.stats()}")
            assert ("retrying", "whip: the video stopped (the encoder failed); next attempt in 0.5 s") in [
                (s, d) for _, s, d in room.states
            ]
            assert room.video.stats()["VP8"]["failures"] == 1
            assert later[0]["packets"] > first[0]["packets"] + 10  # the new session's video flows
        finally:
            await _leave(pub, front, room)
        assert await asyncio.to_thread(janus.sessions) == []

    run_async(main())


def test_whip_config_is_checked() -> None:
    with pytest.raises(ValueError, match="url"):
        WhipConfig(url="ftp://example")
    with pytest.raises(ValueError, match="urls"):
        WhipConfig(url="http://x/whip", ice_servers=({"urls": ["http://not-stun"]},))
    ok = WhipConfig(url="https://x/whip", ice_servers=({"urls": ["stun:127.0.0.1:3478"]},))
    assert ok.ice_servers[0].urls == ("stun:127.0.0.1:3478",)
    with pytest.raises(ValueError, match="empty"):
        WhipPublisher.from_config(WhipConfig(), EncodedVideo(LatestFrame(), StreamConfig()), None)


def test_whip_endpoints_that_answer_oddly_are_named_and_bounded() -> None:
    """A sweep's WHIP servers that answer, but badly: an unreadable Retry-After crashed the attempt (and a
    refused token was then retried for ever); a Location that is no URL crashed it too, and every retry left a
    session at the far end; 10 MB of SDP stalled the box while it was parsed; Retry-After: 999999 was waited
    out (11 days); a server that never answers read "unreachable: " with no reason, and health said "ok"
    while each attempt hung."""
    from aiohttp import web

    hits: dict[str, int] = {}

    async def answer(request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        hits[case] = hits.get(case, 0) + 1
        if case == "ra-garbage":
            return web.Response(status=401, text="no", headers={"Retry-After": "soon-ish"})
        if case == "loc-garbage":
            sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
            return web.Response(
                status=201, text=sdp, content_type="application/sdp", headers={"Location": "http://[::zz/%%%bad"}
            )
        if case == "huge":
            body = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + "a=x-pad:" + "x" * (2 * 1024 * 1024)
            return web.Response(status=201, text=body, content_type="application/sdp", headers={"Location": "/r/1"})
        if case == "ctl":  # a terminal's escape sequence in the error page: shown escaped, never raw
            return web.Response(status=403, text="bad\x1b[2Jtoken\x07 <b>no</b>")
        if case == "ra-huge":
            return web.Response(status=429, text="busy", headers={"Retry-After": "999999"})
        if case == "html":  # a web server's own error page (a sweep: its markup filled the panel's meeting card)
            page = (
                '<!DOCTYPE HTML>\n<html lang="en">\n<head><meta charset="utf-8"><title>Error response</title>'
                "<style>p { color: red }</style></head>\n<body><h1>Error response</h1><p>Error code: 404</p>"
                "<p>Message: File &amp; path not found.</p></body></html>"
            )
            return web.Response(status=404, text=page, content_type="text/html")
        await asyncio.sleep(5)  # "slow": never answers in time (1 s)
        return web.Response(status=503)

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{case}", answer)
        server = await run_server(app, "127.0.0.1", 0)
        port = server.port
        room = Room()
        try:
            for case, state, message in (
                ("ra-garbage", "failed", "the token was refused (401 Unauthorized): no"),
                ("loc-garbage", "failed", "the answer's Location is not a URL: 'http://[::zz/%%%bad'"),
                ("huge", "failed", "the answer is larger than 256 kB: not an SDP answer"),
                ("ra-huge", "retrying", "429 Too Many Requests: busy; next attempt in 300.0 s"),
                ("ctl", "failed", "the token was refused (403 Forbidden): bad\\x1b[2Jtoken\\x07 <b>no</b>"),
                ("html", "failed", "(404 Not Found): Error response Error code: 404 Message: File & path not found."),
            ):
                pub = _publisher(room, f"http://127.0.0.1:{port}/{case}")
                await pub.start()
                await wait_for(lambda pub=pub, state=state: pub.state == state, 30, f"{case}: {state}")
                await asyncio.sleep(0.7)  # past the first back-off (0.5 s): a retry would show
                print(f"\n{case}: {pub.detail}")
                assert message in pub.detail and hits[case] == 1, (case, pub.detail, hits)
                await pub.stop()
            # the panel's Join while the box waits out a Retry-After of minutes: it tries now (before, it could
            # only Leave and Join again)
            pub = _publisher(room, f"http://127.0.0.1:{port}/ra-huge")
            await pub.start()
            await wait_for(lambda: pub.state == "retrying", 30, "ra-huge: retrying")
            tried = hits["ra-huge"]
            await pub.start()
            await wait_for(lambda: hits["ra-huge"] == tried + 1, 10, "ra-huge: tried again at once")
            await pub.stop()
            pub = _publisher(room, f"http://127.0.0.1:{port}/slow", connect_timeout_s=1.0)
            await pub.start()
            await wait_for(lambda: pub.state == "retrying", 30, "slow: retrying")
            assert f"WHIP http://127.0.0.1:{port}/slow did not answer within 1 s" in pub.detail, pub.detail
            await wait_for(lambda: pub.state == "connecting", 30, "slow: the next attempt")
            health = meeting_check(pub)()  # the next attempt hangs too: not "ok"
            assert health is not None and health[0] == "degraded" and "did not answer within 1 s" in health[1], health
            await pub.stop()
        finally:
            await room.close()
            await server.stop()

    run_async(main())


def test_the_token_never_travels_in_clear_to_a_session_location_on_plain_http() -> None:
    """An https endpoint may put its session anywhere (RFC 9725 allows another host), but a Location on
    plain http:// would carry the bearer token in clear on the DELETE: it is left out there (and said);
    a session Location that keeps TLS, or an endpoint that is plain http already, gets it."""
    from aiohttp import ClientSession, web

    seen: list[str | None] = []

    async def delete(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=200)

    async def main() -> None:
        app = web.Application()
        app.router.add_delete("/r/{n}", delete)
        server = await run_server(app, "127.0.0.1", 0)
        port = server.port
        room = Room()
        try:
            for endpoint in ("https://whip.invalid/whip", f"http://127.0.0.1:{port}/whip"):
                pub = _publisher(room, endpoint)
                pub.http = ClientSession()
                pub.resource = f"http://127.0.0.1:{port}/r/1"  # what the endpoint's answer would have said
                try:
                    await pub._leave()
                finally:
                    await pub.http.close()
            assert seen == [None, f"Bearer {TOKEN}"], seen
            https = _publisher(room, "https://whip.invalid/whip")
            assert https._headers(url="https://other.invalid/r/1")["Authorization"] == f"Bearer {TOKEN}"
        finally:
            await room.close()
            await server.stop()

    run_async(main())


def test_a_name_that_does_not_resolve_and_a_page_that_never_closes_are_said_quickly() -> None:
    """A review: a failed name lookup read "Unknown error -2" (os.strerror of getaddrinfo's negative code), and
    an HTML page of 20 000 unclosed ``<style`` tags took 14 s to read for its words, the box's loop stalled."""
    import socket
    import time

    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    from appliance.streaming.connector import describe_error
    from common.text import page_excerpt

    key = ConnectionKey("nonexistent.invalid", 80, False, True, None, None, None, None)
    e = aiohttp.ClientConnectorError(key, socket.gaierror(-2, "Name or service not known"))
    assert describe_error(e) == "cannot connect to nonexistent.invalid:80: Name or service not known"
    began = time.monotonic()
    said = page_excerpt("<html><p>busy</p>" + "<style" * 40_000, "text/html")
    assert said == "busy" and time.monotonic() - began < 5.0  # (a hang guard: it takes milliseconds)
    page = "<html><head><title>x</title></head><body><script>var a = '<b>';</script><p>Error &amp; 404</p></body>"
    assert page_excerpt(page, "text/html") == "Error & 404"
