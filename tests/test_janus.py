"""The room into a real Janus VideoRoom (over Janus's HTTP API, and over WHIP), and headless Chromium
subscribing to it through Janus and decoding it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from appliance.config import Config, JanusConfig
from appliance.control import Auth, Control
from appliance.streaming.connector import Connector, connectors_from_config
from appliance.streaming.display import show_far_end
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import EventBus, LatestFrame
from appliance.streaming.janus import JanusPublisher
from appliance.streaming.server import PanelServer, create_app, run_server
from appliance.streaming.whip import WhipPublisher
from tests.janus_fixture import ROOM, Janus, SimpleWhipServer, WhipFront, wait_for
from tests.test_streaming import LoopThread, run_async
from tests.test_whip import TOKEN, Room

W, H = 320, 180


@pytest.fixture(scope="module")
def janus(chromium: Any) -> Iterator[Janus]:
    """Janus, started after Chromium so that it is stopped before the Chromium fixture looks for leftovers."""
    with Janus.running() as j:
        yield j


def _videoroom(room: Room, janus: Janus, room_id: int = ROOM) -> JanusPublisher:
    cfg = JanusConfig(url=janus.url, room=room_id, display="roombox", retry_min_s=0.5, retry_max_s=2.0)
    return JanusPublisher.from_config(cfg, room.video, room.audio, on_state=room.on_state)


def test_connectors_come_from_the_config() -> None:
    cfg = Config.model_validate(
        {
            "whip": {"url": "http://127.0.0.1:9/whip/endpoint/1", "token": "t"},
            "janus": {"url": "http://127.0.0.1:9/janus", "room": 7},
        }
    )
    seen: list[tuple[str, str, str]] = []
    found = connectors_from_config(
        cfg, EncodedVideo(LatestFrame(), cfg.stream), None, on_state=lambda *a: seen.append(a)
    )
    assert [type(c) for c in found] == [WhipPublisher, JanusPublisher]
    whip, jan = found
    assert isinstance(whip, WhipPublisher) and whip.token == "t" and isinstance(jan, JanusPublisher) and jan.room == 7
    jan._set("retrying", "x")
    assert seen == [("janus", "retrying", "x")]
    assert connectors_from_config(Config(), EncodedVideo(LatestFrame(), cfg.stream), None) == []
    with pytest.raises(ValueError, match="url"):
        Config.model_validate({"janus": {"url": "janus.example:8088"}})


def test_videoroom_unknown_room_fails_once_with_a_clear_message(janus: Janus) -> None:
    async def main() -> None:
        room = Room()
        pub = _videoroom(room, janus, room_id=4321)
        try:
            await pub.start()
            await wait_for(lambda: pub.state == "failed", 15, "failed")
            await asyncio.sleep(1.2)
            print(f"\n{pub.detail}")
            assert pub.detail == f"Janus {janus.url} room 4321: Janus 'join': No such room (4321) (code 426)"
            assert pub.attempts == 1
        finally:
            await pub.stop()
            await room.close()
        assert await asyncio.to_thread(janus.sessions) == []

    run_async(main())


def test_videoroom_publisher_reports_a_killed_janus_at_once_and_returns(janus: Janus) -> None:
    async def main() -> None:
        room = Room(codecs=("H264",))
        pub = _videoroom(room, janus)
        try:
            await pub.start()
            await wait_for(lambda: pub.state == "connected", 20, "connected")
            killed = time.monotonic()
            await asyncio.to_thread(janus.kill)
            await wait_for(lambda: pub.state != "connected", 10, "the loss reported")
            reported = time.monotonic() - killed
            await asyncio.to_thread(janus.start)
            returned = time.monotonic()
            await wait_for(lambda: pub.state == "connected", 20, "connected again")
            back = time.monotonic() - returned
            print(f"\nkilled Janus reported after {reported:.1f} s, back {back:.1f} s after it returned")
            assert reported <= 5.0 and back <= 10.0
            await asyncio.sleep(1.0)
            assert [p["codec"] for p in await asyncio.to_thread(janus.published)] == ["h264"]
        finally:
            await pub.stop()
            await room.close()
        assert await asyncio.to_thread(janus.sessions) == []

    run_async(main())


# ---------- Chromium subscribes through Janus ----------

SUBSCRIBE_JS = """
async ([room, seconds]) => {
  const base = location.origin + "/janus";
  const tx = () => Math.random().toString(36).slice(2);
  const post = async (url, body) =>
    (await fetch(url, {method: "POST", body: JSON.stringify({...body, transaction: tx()})})).json();
  const s = (await post(base, {janus: "create"})).data.id;
  const h = (await post(`${base}/${s}`, {janus: "attach", plugin: "janus.plugin.videoroom"})).data.id;
  const list = await post(`${base}/${s}/${h}`, {janus: "message", body: {request: "listparticipants", room}});
  const pubs = list.plugindata.data.participants.filter(p => p.publisher);
  if (!pubs.length) return {error: "no publisher in the room"};
  await post(`${base}/${s}/${h}`, {janus: "message",
                                   body: {request: "join", ptype: "subscriber", room, streams: [{feed: pubs[0].id}]}});
  let offer = null, polling = true;
  const until = Date.now() + 15000;
  while (!offer && Date.now() < until) {
    const evs = await (await fetch(`${base}/${s}?maxev=5`)).json();
    for (const ev of (Array.isArray(evs) ? evs : [evs])) if (ev.jsep && ev.jsep.type === "offer") offer = ev.jsep;
  }
  if (!offer) return {error: "Janus sent no offer"};
  const keepalive = (async () => { while (polling) await fetch(`${base}/${s}?maxev=5`).catch(() => null); })();
  const pc = new RTCPeerConnection({iceServers: []});
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  const audio = new Audio();  // played, so that Chromium decodes the sound and measures its energy
  pc.ontrack = (e) => {
    if (e.track.kind === "video") video.srcObject = new MediaStream([e.track]);
    else { audio.srcObject = new MediaStream([e.track]); audio.play().catch(() => null); }
  };
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise(r => { if (pc.iceGatheringState === "complete") r();
                           else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  await post(`${base}/${s}/${h}`, {janus: "message", body: {request: "start"},
                                   jsep: {type: "answer", sdp: pc.localDescription.sdp}});
  await post(`${base}/${s}/${h}`, {janus: "trickle", candidate: {completed: true}});
  const summary = async () => {
    const stats = await pc.getStats();
    const out = {framesDecoded: 0};
    for (const r of stats.values()) {
      const codec = r.codecId && stats.get(r.codecId) ? stats.get(r.codecId).mimeType : null;
      if (r.type === "inbound-rtp" && r.kind === "video")
        Object.assign(out, {codec, framesDecoded: r.framesDecoded || 0, frameWidth: r.frameWidth,
                            frameHeight: r.frameHeight});
      if (r.type === "inbound-rtp" && r.kind === "audio")
        Object.assign(out, {audioCodec: codec, audioPackets: r.packetsReceived || 0,
                            audioEnergy: r.totalAudioEnergy || 0, audioLevel: r.audioLevel || 0});
    }
    return out;
  };
  const waitUntil = Date.now() + 20000;
  while ((await summary()).framesDecoded < 5 && Date.now() < waitUntil) await new Promise(r => setTimeout(r, 100));
  const before = await summary(), t0 = performance.now();
  await new Promise(r => setTimeout(r, seconds * 1000));
  const after = await summary();
  const fps = (after.framesDecoded - before.framesDecoded) / ((performance.now() - t0) / 1000);
  pc.close();
  polling = false;
  await post(`${base}/${s}`, {janus: "destroy"});
  await keepalive;
  return {...after, fps, audioPacketsBefore: before.audioPackets || 0, audioEnergyBefore: before.audioEnergy || 0};
}
"""


class _Publishing:
    """The box's side on a loop thread: a 30 frames/s room and one connector into Janus."""

    def __init__(self, janus: Janus, how: str, codec: str, display: bool = False) -> None:
        self.lt = LoopThread()
        self.janus = janus
        self.lt.run(self._start(how, codec, display))

    async def _start(self, how: str, codec: str, display: bool) -> None:
        self.room = Room(codecs=(codec,))
        self.server: PanelServer | None = None
        self.shower: asyncio.Task[None] | None = None
        if display:  # the panel server with the room display, fed the first far end's pictures
            self.display = LatestFrame()
            control = Control(Auth.in_memory())
            self.read_token = control.auth.tokens.create("read", "the room display", allowed_from=["127.0.0.1"])[1]
            app = create_app(
                self.room.frames,
                self.room.audio,
                EventBus(),
                self.room.video.stream,
                video=self.room.video,
                display=self.display,
                control=control,
            )
            self.server = await run_server(app, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{self.server.port}"
        self.front: WhipFront | None = None
        self.pub: Connector
        if how == "whip":
            self.front = WhipFront(self.janus.url, TOKEN)
            url = await self.front.start()
            self.pub = WhipPublisher(
                f"{url}/endpoint/{ROOM}", self.room.video, self.room.audio, token=TOKEN, on_state=self.room.on_state
            )
        else:
            self.pub = _videoroom(self.room, self.janus)
        await self.pub.start()
        await wait_for(lambda: self.pub.state == "connected", 20, "connected")
        pub = self.pub
        if display and isinstance(pub, JanusPublisher):
            self.shower = asyncio.create_task(
                show_far_end(lambda: next((f.frames for f in pub.far_ends.values()), None), self.display)
            )

    async def _stop(self) -> None:
        if self.shower is not None:
            self.shower.cancel()
            await asyncio.gather(self.shower, return_exceptions=True)
        if self.server is not None:
            await self.server.stop()
        await self.pub.stop()
        if self.front is not None:
            await self.front.stop()
        await self.room.close()

    def close(self) -> None:
        self.lt.run(self._stop())
        self.lt.close()


@pytest.mark.e2e
@pytest.mark.parametrize(("how", "codec"), [("videoroom", "VP8"), ("whip", "H264")])
def test_chromium_subscribes_through_janus_and_decodes_the_room(
    janus: Janus, chromium: Any, how: str, codec: str
) -> None:
    box = _Publishing(janus, how, codec)
    page = chromium.new_page()
    try:
        page.goto(f"http://127.0.0.1:{janus.port}/janus/info")
        result = page.evaluate(SUBSCRIBE_JS, [ROOM, 3])
        print(f"\nChromium through Janus ({how}): {result}")
        assert "error" not in result, result
        assert result["codec"] == f"video/{codec}"
        assert (result["frameWidth"], result["frameHeight"]) == (W, H)
        assert result["framesDecoded"] > 20  # decoded through Janus (the rate is a bench figure)
    finally:
        page.close()
        box.close()
    deadline = time.monotonic() + 10
    while janus.sessions():
        assert time.monotonic() < deadline, f"sessions left in Janus: {janus.sessions()}"
        time.sleep(0.2)


PUBLISH_JS = """
async ([room]) => {
  const base = location.origin + "/janus";
  const tx = () => Math.random().toString(36).slice(2);
  const post = async (url, body) =>
    (await fetch(url, {method: "POST", body: JSON.stringify({...body, transaction: tx()})})).json();
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 360;
  const g = canvas.getContext("2d");
  let i = 0;
  const draw = () => { g.fillStyle = "rgb(200,30,30)"; g.fillRect(0, 0, 640, 360);
                       g.fillStyle = "white"; g.fillRect((i++ * 8) % 600, 100, 40, 160); };
  draw();
  const timer = setInterval(draw, 33);
  const ac = new AudioContext();
  const osc = ac.createOscillator(); osc.frequency.value = 440;
  const gain = ac.createGain(); gain.gain.value = 0.3;
  const dest = ac.createMediaStreamDestination();
  osc.connect(gain).connect(dest); osc.start();
  const stream = new MediaStream([...canvas.captureStream(30).getVideoTracks(), ...dest.stream.getAudioTracks()]);
  const s = (await post(base, {janus: "create"})).data.id;
  const h = (await post(`${base}/${s}`, {janus: "attach", plugin: "janus.plugin.videoroom"})).data.id;
  await post(`${base}/${s}/${h}`, {janus: "message", body: {request: "join", ptype: "publisher", room,
                                                            display: "far end"}});
  const pc = new RTCPeerConnection({iceServers: []});
  stream.getTracks().forEach(t => pc.addTrack(t, stream));
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === "complete") r();
                           else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  await post(`${base}/${s}/${h}`, {janus: "message", body: {request: "publish"},
                                   jsep: {type: "offer", sdp: pc.localDescription.sdp}});
  let answer = null;
  const until = Date.now() + 15000;
  while (!answer && Date.now() < until) {
    const evs = await (await fetch(`${base}/${s}?maxev=5`)).json();
    for (const ev of (Array.isArray(evs) ? evs : [evs])) if (ev.jsep && ev.jsep.type === "answer") answer = ev.jsep;
  }
  if (!answer) return {error: "no answer from Janus"};
  await pc.setRemoteDescription(answer);
  const state = {polling: true};
  const keepalive = (async () => { while (state.polling) await fetch(`${base}/${s}?maxev=5`).catch(() => null); })();
  window.farEnd = {close: async () => { clearInterval(timer); pc.close(); state.polling = false; await ac.close();
                                        await post(`${base}/${s}`, {janus: "destroy"}); await keepalive; }};
  return {ok: true};
}
"""


@pytest.mark.e2e
def test_videoroom_publisher_subscribes_to_a_chromium_participant(janus: Janus, chromium: Any) -> None:
    """Chromium publishes a camera-like picture and a tone into the room; the box subscribes, gets both, and
    shows the picture on its room display (``/display``), which a second Chromium page decodes."""
    box = _Publishing(janus, "videoroom", "VP8", display=True)
    page = chromium.new_page()
    tv = chromium.new_page()
    try:
        page.goto(f"http://127.0.0.1:{janus.port}/janus/info")
        assert page.evaluate(PUBLISH_JS, [ROOM]) == {"ok": True}
        pub = box.pub
        assert isinstance(pub, JanusPublisher)

        async def far_end() -> Any:
            await wait_for(
                lambda: any(f.frames.published > 15 and f.audio.published > 20 for f in pub.far_ends.values()),
                20,
                "the far end's picture and sound",
            )
            far = next(iter(pub.far_ends.values()))
            _, image, _ = far.frames.latest() or (0, None, 0.0)
            _, chunks = far.audio.read(0)
            level = float(np.sqrt(np.mean(np.concatenate([c.samples for c in chunks]).astype(np.float64) ** 2)))
            return far.display, far.codecs, image, level

        display, codecs, image, level = box.lt.run(far_end(), timeout=30)
        print(
            f"\nthe box gets the far end {display!r}: {codecs}, picture {image.shape}, "
            f"mean colour {image.reshape(-1, 3).mean(axis=0).round()}, sound rms {level:.0f}"
        )
        assert display == "far end" and codecs["video"] == "video/VP8" and codecs["audio"] == "audio/opus"
        assert image.shape == (360, 640, 3)
        r, g, b = image[20:90, 20:600].reshape(-1, 3).mean(axis=0)
        assert r > 150 and g < 80 and b < 80  # Chromium's red canvas
        assert level > 1000  # int16 rms of the 440 Hz tone at 0.3 of full scale, not silence

        tv.goto(box.url + "/display#token=" + box.read_token)
        tv.wait_for_function("window.roomboxDisplay.framesDecoded > 10", timeout=60_000)
        shown = tv.evaluate("""() => {
            const v = document.getElementById("video"), c = document.createElement("canvas");
            c.width = v.videoWidth; c.height = v.videoHeight;
            const g = c.getContext("2d"); g.drawImage(v, 0, 0);
            return [v.videoWidth, v.videoHeight, Array.from(g.getImageData(30, 30, 1, 1).data.slice(0, 3))];
        }""")
        print(f"the room display shows {shown}")
        assert shown[:2] == [640, 360] and shown[2][0] > 150 and shown[2][1] < 80  # the far end's red picture
        page.evaluate("window.farEnd.close()")

        async def gone() -> None:
            await wait_for(lambda: not pub.far_ends, 15, "the far end dropped after it left")

        box.lt.run(gone(), timeout=20)
        # a far end leaving is no reason to leave the room (a loaded machine may still lose RTCP for 4 s)
        assert not [d for _, st, d in box.room.states if st == "retrying" and ("hangup" in d or "detached" in d)]
    finally:
        tv.close()
        page.close()
        box.close()


@pytest.mark.e2e
def test_whip_through_simple_whip_server_carries_the_rooms_picture_and_sound(janus: Janus, chromium: Any) -> None:
    """The box publishes over WHIP to Debian's simple-whip-server, which puts it into the Janus VideoRoom:
    Janus receives Opus and VP8 from it, and Chromium subscribed through Janus decodes the picture and hears the
    room's tone (its inbound audio's packets and energy grow); leaving hangs the publisher up in Janus."""
    lt = LoopThread()
    with SimpleWhipServer.running(janus) as sws:
        url = sws.endpoint("roombox", ROOM, TOKEN)

        async def start() -> tuple[Room, WhipPublisher]:
            room = Room(codecs=("VP8",), tone_hz=440.0)
            pub = WhipPublisher(url, room.video, room.audio, token=TOKEN, on_state=room.on_state)
            await pub.start()
            await wait_for(lambda: pub.state == "connected", 20, "connected")
            return room, pub

        room, pub = lt.run(start(), timeout=30)
        page = chromium.new_page()
        try:
            assert pub.resource == f"http://127.0.0.1:{sws.port}/whip/resource/roombox"
            time.sleep(1.0)
            audio0 = janus.published("audio")
            time.sleep(1.0)
            audio, video = janus.published("audio"), janus.published("video")
            print(f"\nJanus receives over simple-whip-server: audio {audio}, video {video}")
            assert [a["codec"] for a in audio] == ["opus"] and [v["codec"] for v in video] == ["vp8"]
            assert audio[0]["packets"] >= audio0[0]["packets"] + 30  # 50 packets/s of 20 ms
            page.goto(f"http://127.0.0.1:{janus.port}/janus/info")
            result = page.evaluate(SUBSCRIBE_JS, [ROOM, 3])
            print(f"Chromium through Janus (simple-whip-server): {result}")
            assert "error" not in result, result
            assert result["codec"] == "video/VP8" and result["framesDecoded"] > 20
            assert result["audioCodec"] == "audio/opus"
            assert result["audioPackets"] >= result["audioPacketsBefore"] + 50  # 3 s of 20 ms packets, some lost
            assert result["audioEnergy"] > result["audioEnergyBefore"]  # sound, not silence:
            assert result["audioLevel"] > 0.1  # the tone at 0.3 of full scale (silence is 0)
        finally:
            page.close()

            async def stop() -> None:
                await pub.stop()
                await room.close()

            lt.run(stop(), timeout=30)
            lt.close()
        deadline = time.monotonic() + 10
        while janus.published("audio") or janus.published("video"):  # the DELETE hung the publisher up
            assert time.monotonic() < deadline, f"still published in Janus: {janus.published('video')}"
            time.sleep(0.2)
        assert pub.state == "stopped" and pub.resource is None
