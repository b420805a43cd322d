"""The Janus connector against a Janus that answers badly: an aiohttp server of the test's own on 127.0.0.1
speaks Janus's HTTP API (create, attach, message, long poll) and answers what a broken proxy or a misbehaving
Janus would: long polls answered at once with nothing, events that are not JSON objects, participants
with ids that are not numbers, replies without the fields that matter. For the cases that need a live
meeting it answers ``publish`` with a real (aiortc) SDP answer, so the box gets ``connected`` over loopback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from appliance.config import JanusConfig
from appliance.streaming.janus import JanusError, JanusPublisher, JanusSession
from appliance.streaming.server import PanelServer, run_server
from tests.janus_fixture import wait_for
from tests.test_streaming import run_async
from tests.test_whip import Room

SESSION = 777


class OddJanus:
    """A Janus-JSON server that misbehaves as told. ``polls``: what each long poll answers, in turn (a list
    of events, or anything else as the raw JSON body); an empty queue holds the poll up to 20 s and answers a
    keepalive. ``requests``: ``(method, what)`` seen."""

    def __init__(
        self,
        poll: str = "hold",
        create: Any = None,
        attach: Any = None,
        subscriber_jsep: Any = None,
    ) -> None:
        self.poll = poll  # "hold", "empty" ([] at once), "keepalive" (a keepalive at once)
        self.create = create
        self.attach = attach
        self.subscriber_jsep = subscriber_jsep
        self.polls: asyncio.Queue[Any] = asyncio.Queue()
        self.requests: list[tuple[str, str]] = []
        self.pcs: list[RTCPeerConnection] = []
        self.handles = 1000
        self.server: PanelServer | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/janus{tail:.*}", self._handle)
        self.server = await run_server(app, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.port}/janus"

    async def stop(self) -> None:
        for _ in range(10):  # the long polls still held (of sessions gone) end now, not after 20 s
            self.polls.put_nowait({"janus": "keepalive"})
        for pc in self.pcs:
            await pc.close()
        if self.server is not None:
            await self.server.stop()

    def count(self, method: str, what: str = "") -> int:
        return sum(1 for m, w in self.requests if m == method and w.startswith(what))

    async def _answer(self, offer: str) -> str:
        pc = RTCPeerConnection()
        self.pcs.append(pc)

        @pc.on("track")
        def _on_track(track: Any) -> None:
            async def drain() -> None:
                try:
                    while True:
                        await track.recv()
                except MediaStreamError:
                    pass

            asyncio.ensure_future(drain())

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            self.requests.append(("GET", "poll"))
            if self.poll == "empty":
                return web.json_response([])
            if self.poll == "keepalive":
                return web.json_response({"janus": "keepalive"})
            try:
                answer = await asyncio.wait_for(self.polls.get(), 20)
            except TimeoutError:
                return web.json_response({"janus": "keepalive"})
            if isinstance(answer, str):
                return web.Response(text=answer, content_type="application/json")
            return web.json_response(answer)
        body = await request.json()
        kind, tr = body.get("janus"), body.get("transaction")
        req = (body.get("body") or {}).get("request", "")
        self.requests.append(("POST", f"{kind}:{req}" if req else kind))
        if kind == "create":
            return web.json_response(self.create or {"janus": "success", "transaction": tr, "data": {"id": SESSION}})
        if kind == "attach":
            if self.attach is not None:
                return web.json_response(self.attach)
            self.handles += 1
            return web.json_response({"janus": "success", "transaction": tr, "data": {"id": self.handles}})
        if kind != "message":
            return web.json_response({"janus": "success", "transaction": tr})
        handle = int(request.path.rstrip("/").split("/")[-1])

        def event(data: Any, jsep: Any = None) -> dict[str, Any]:
            ev = {"janus": "event", "session_id": SESSION, "sender": handle, "transaction": tr}
            ev["plugindata"] = {"plugin": "janus.plugin.videoroom", "data": data}
            if jsep is not None:
                ev["jsep"] = jsep
            return ev

        ptype = (body.get("body") or {}).get("ptype")
        if req == "join" and ptype == "publisher":  # ack now, the answer by the long poll (as Janus does)
            self.polls.put_nowait([event({"videoroom": "joined", "room": 1234, "id": 555, "publishers": []})])
            return web.json_response({"janus": "ack", "transaction": tr})
        if req == "publish":
            sdp = await self._answer(body["jsep"]["sdp"])
            return web.json_response(event({"videoroom": "event", "configured": "ok"}, {"type": "answer", "sdp": sdp}))
        if req == "configure":  # acked, and never answered
            return web.json_response({"janus": "ack", "transaction": tr})
        if req == "join" and ptype == "subscriber":
            jsep = self.subscriber_jsep
            if jsep == "offer":  # a real offer, whose answer is never applied: its media never connects
                pc = RTCPeerConnection()
                self.pcs.append(pc)
                pc.addTransceiver("video", direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                jsep = {"type": "offer", "sdp": pc.localDescription.sdp}
            return web.json_response(event({"videoroom": "attached"}, jsep))
        return web.json_response(event({"videoroom": "event"}))


def _publisher(room: Room, url: str, **kw: Any) -> JanusPublisher:
    # media_timeout_s generous: this is about Janus's answers, not about RTCP on a loaded machine
    cfg = JanusConfig(
        url=url, room=1234, display="roombox", retry_min_s=0.5, retry_max_s=2.0, media_timeout_s=30.0, **kw
    )
    return JanusPublisher.from_config(cfg, room.video, room.audio, on_state=room.on_state)


@pytest.mark.parametrize("answer", ["empty", "keepalive"])
def test_a_long_poll_answered_at_once_is_paced_not_a_tight_loop(answer: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server = OddJanus(poll=answer)
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                session = await JanusSession.create(http, url)
                await asyncio.sleep(5.0)
                polls = server.count("GET")
                print(f"\n{polls} polls in 5 s against a Janus answering {answer} at once")
                assert 1 <= polls < 30  # before: thousands
                assert not session.lost
                await session.destroy()
                assert server.count("POST", "destroy") == 1
                again = await JanusSession.create(http, url)  # a reconnect: the same server, not said again
                await asyncio.sleep(1.5)
                await again.destroy()
        finally:
            await server.stop()

    with caplog.at_level(logging.WARNING, logger="appliance.streaming.janus"):
        run_async(main())
    said = [r.getMessage() for r in caplog.records if "does not hold the long poll" in r.getMessage()]
    assert len(said) == 1, said


def test_malformed_events_and_participants_do_not_drop_a_live_meeting(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server = OddJanus(subscriber_jsep="oops")
        url = await server.start()
        room = Room(codecs=("VP8",))
        pub = _publisher(room, url)

        def ev(plugindata: Any) -> dict[str, Any]:
            return {"janus": "event", "session_id": SESSION, "sender": 1001, "plugindata": plugindata}

        def pubs(publishers: Any) -> dict[str, Any]:
            return ev({"plugin": "janus.plugin.videoroom", "data": {"videoroom": "event", "publishers": publishers}})

        try:
            await pub.start()
            await wait_for(lambda: pub.state == "connected", 30, "connected")
            for answer in (
                [ev("str")],
                [ev({"plugin": "janus.plugin.videoroom", "data": [1, 2]})],
                [1, "x", None],
                [pubs([{"id": "x1", "display": 5}])],
                [pubs("everyone")],
                [pubs([{"id": 4343, "display": 5, "streams": "video"}])],
                # a participant to subscribe to, whose subscription Janus answers with a jsep that is not an object
                [pubs([{"id": 4444, "display": "Bob", "streams": [{"type": "video", "mid": "0"}]}])],
                [pubs([{"id": 4242, "display": "Alice", "streams": []}])],  # the good one, after the bad ones
            ):
                server.polls.put_nowait(answer)
            await wait_for(lambda: 4242 in pub.others, 20, "the good event after the bad ones taken")
            await wait_for(lambda: server.count("POST", "message:join") >= 2, 20, "the subscription to Bob tried")
            await wait_for(lambda: pub.others.get(4444, {}).get("streams") == [], 20, "Bob given up")
            await wait_for(lambda: server.count("POST", "detach") == 1, 20, "Bob's handle detached")
            await asyncio.sleep(1.0)
            assert pub.others[4242]["display"] == "Alice"
            assert pub.others[4343]["display"] == "" and 4444 not in pub.far_ends
            assert pub.state == "connected", (pub.state, pub.detail)
            assert not [s for s in room.states if s[1] != "connected" and s[2] != "attempt 1"], room.states
            assert pub.attempts == 1 and pub.connections == 1
        finally:
            await pub.stop()
            await room.close()
            await server.stop()

    with caplog.at_level(logging.WARNING, logger="appliance.streaming.janus"):
        run_async(main())
    said = "\n".join(r.getMessage() for r in caplog.records)
    print(f"\n{said}")
    assert "plugin data is not a JSON object" in said
    # three in one poll: said once, with the count (said again at the 10th, the 100th...)
    assert "not a JSON object (1 so far): 1" in said and "(2 so far)" not in said and "(3 so far)" not in said
    assert "skipped a participant without a numeric id" in said and "'x1'" in said
    assert "skipped a list of participants that is not a list: 'everyone'" in said
    assert "participant 4343's name is not text" in said
    assert "cannot subscribe to Bob" in said


def test_far_ends_are_capped_and_one_whose_media_never_connects_is_detached_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sweep's room of 50-200 participants: the box subscribed to every one at once (402 requests, 85 in a
    second; a picture decoded each), never noticed the ones whose media never connected, and never detached a
    subscription (the handles piled up at Janus until the session ended)."""

    async def main() -> None:
        server = OddJanus(subscriber_jsep="offer")
        url = await server.start()
        room = Room(codecs=("VP8",))
        pub = _publisher(room, url, max_far_ends=2, connect_timeout_s=2.0)
        five = [{"id": 5000 + i, "display": f"P{i}", "streams": [{"type": "video", "mid": "0"}]} for i in range(5)]
        try:
            await pub.start()
            await wait_for(lambda: pub.state == "connected", 30, "connected")
            data = {"videoroom": "event", "publishers": five}
            ev = {"janus": "event", "session_id": SESSION, "sender": 1001, "plugindata": {"data": data}}
            server.polls.put_nowait([ev])
            await wait_for(lambda: len(pub.far_ends) == 2, 20, "two far ends")
            assert server.count("POST", "message:join") == 1 + 2  # the box's own join, and two subscriptions
            # their media never connects: dropped after the connect timeout, detached, and tried again later
            await wait_for(lambda: server.count("POST", "detach") >= 2, 30, "the dead ones detached")
            await wait_for(lambda: server.count("POST", "message:join") >= 1 + 4, 30, "tried again")
            assert len(pub.far_ends) <= 2 and pub.state == "connected", (pub.far_ends, pub.state)
            # a participant that leaves: its subscription goes, detached
            for feed in list(pub.far_ends):
                gone = {"janus": "event", "sender": 1001, "plugindata": {"data": {"leaving": feed}}}
                server.polls.put_nowait([gone])
            detached = server.count("POST", "detach")
            await wait_for(lambda: server.count("POST", "detach") > detached, 20, "the one that left detached")
        finally:
            await pub.stop()
            await room.close()
            await server.stop()
        attached = server.count("POST", "attach") - 1  # the box's own handle
        print(f"\n{attached} subscriptions, {server.count('POST', 'detach')} detached")

    with caplog.at_level(logging.WARNING, logger="appliance.streaming.janus"):
        run_async(main())
    said = "\n".join(r.getMessage() for r in caplog.records)
    print(said)
    assert said.count("5 participants send media; the box receives 2 of them") == 1, said
    assert "P0's media did not connect" in said and "tried again in" in said


def test_a_poll_of_garbage_fails_the_waiting_join_at_once_and_destroy_still_goes_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        server, other = OddJanus(), OddJanus()
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                # non-objects in a poll are skipped; the join's answer after them still arrives
                session = await JanusSession.create(http, url, timeout_s=10)
                handle = await session.attach("janus.plugin.videoroom")
                server.polls.put_nowait([1, "x", None])
                data, _ = await session.message(handle, {"request": "join", "ptype": "publisher", "room": 1234})
                assert data["videoroom"] == "joined" and not session.lost
                await session.destroy()

                # an answer the poller cannot read at all (JSON nested too deep to parse): the session is lost
                # at once, the waiting join fails with the reason, and destroy is still sent
                session = await JanusSession.create(http, await other.start(), timeout_s=10)
                handle = await session.attach("janus.plugin.videoroom")
                waiting = asyncio.create_task(
                    session.message(handle, {"request": "configure"})
                )  # acked, never answered
                await wait_for(lambda: other.count("POST", "message:configure") == 1, 10, "the request sent")
                await asyncio.sleep(0.2)
                assert not waiting.done()
                other.polls.put_nowait("[" * 100_000 + "]" * 100_000)
                t0 = time.monotonic()
                with pytest.raises(JanusError, match="long poll stopped") as e:
                    await waiting
                took = time.monotonic() - t0
                print(f"\nthe request failed after {took:.1f} s: {e.value}")
                assert session.lost and took < 8.0
                await session.destroy()
                assert other.count("POST", "destroy") == 1
        finally:
            await server.stop()
            await other.stop()

    with caplog.at_level(logging.WARNING, logger="appliance.streaming.janus"):
        run_async(main())
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipped an event that is not a JSON object (1 so far): 1" in said


def test_a_request_on_a_lost_session_fails_at_once() -> None:
    async def main() -> None:
        server = OddJanus()
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                session = await JanusSession.create(http, url, timeout_s=10)
                handle = await session.attach("janus.plugin.videoroom")
                error = {"janus": "error", "session_id": SESSION, "error": {"code": 458, "reason": "No such session"}}
                server.polls.put_nowait(error)
                await wait_for(lambda: session.lost, 10, "the session lost")
                t0 = time.monotonic()
                with pytest.raises(JanusError, match="no longer exists"):
                    await session.message(handle, {"request": "join", "ptype": "publisher", "room": 1234})
                assert time.monotonic() - t0 < 2.0  # before: the whole 10 s
                await session.destroy()
                assert server.count("POST", "destroy") == 0  # Janus said it is gone
        finally:
            await server.stop()

    run_async(main())


def test_a_session_janus_says_timed_out_is_lost_at_once() -> None:
    """Janus tells a session it expires with a ``timeout`` event; the box noticed only at the next request or
    poll answered 458 (ignoring the event meanwhile)."""

    async def main() -> None:
        server = OddJanus()
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                session = await JanusSession.create(http, url, timeout_s=10)
                server.polls.put_nowait({"janus": "timeout", "session_id": SESSION})
                await wait_for(lambda: session.lost, 10, "the session lost")
                assert "timed out at Janus" in await session.wait_lost()
                await session.destroy()
                assert server.count("POST", "destroy") == 0  # Janus dropped it already
        finally:
            await server.stop()

    run_async(main())


@pytest.mark.parametrize(
    ("create", "attach", "state", "detail"),
    [
        ({"janus": "success"}, None, "retrying", "Janus 'create' answered without data.id"),
        ({"janus": "success", "data": {"id": "not-a-number"}}, None, "retrying", "not a number: 'not-a-number'"),
        ([1, 2, 3], None, "retrying", "Janus 'create': the answer is not a JSON object"),
        (None, {"janus": "success", "data": None}, "retrying", "Janus 'attach' answered without data.id"),
        (None, {"janus": "error", "error": {"code": 460, "reason": "No such plugin"}}, "failed", "VideoRoom plugin"),
    ],
)
def test_replies_without_the_fields_that_matter_say_so(create: Any, attach: Any, state: str, detail: str) -> None:
    async def main() -> None:
        server = OddJanus(create=create, attach=attach)
        url = await server.start()
        room = Room(codecs=("VP8",))
        pub = _publisher(room, url)
        try:
            await pub.start()
            await wait_for(lambda: pub.state in ("retrying", "failed"), 20, "the attempt's end")
            print(f"\n{pub.state}: {pub.detail}")
            assert pub.state == state and detail in pub.detail
            assert "KeyError" not in pub.detail and "TypeError" not in pub.detail
            if state == "failed":
                assert "No such plugin (code 460)" in pub.detail
                await asyncio.sleep(1.5)  # retry_min_s is 0.5 s: a retry would have come by now
                assert pub.attempts == 1 and pub.state == "failed"
        finally:
            await pub.stop()
            await room.close()
            await server.stop()

    run_async(main())
