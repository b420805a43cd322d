"""/metrics (Prometheus text, scraped over HTTP while a real aiortc viewer receives the stream) and
/api/health (ok, degraded, dead)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from prometheus_client.parser import text_string_to_metric_families

from appliance.config import StreamConfig
from appliance.control import Auth, Control
from appliance.control.metrics import HealthCheck, Metrics, add_metrics_routes
from appliance.messages import DeviceStatus, RoomState, Shot, Stats
from appliance.streaming.hub import AudioHub, EventBus, LatestFrame
from appliance.streaming.server import create_app, run_server
from common.clock import VirtualClock

W, H, FPS = 320, 180, 15.0


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{key} not scraped; have {sorted(k for k in samples if k[0].startswith('roombox'))}"
    return samples[key]


async def _feed(frames: LatestFrame, audio: AudioHub, stop: asyncio.Event) -> None:
    rng = np.random.default_rng(0)
    t = 0.0
    while not stop.is_set():
        frames.put(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), t)  # noise: the encoder has work
        audio.put(np.zeros(1600, np.float32), 16000, t)
        t += 1 / FPS
        await asyncio.sleep(1 / FPS)


async def _viewer(url: str, got: list[Any], token: str) -> RTCPeerConnection:
    """A receive-only aiortc viewer with a ``read`` token; its tracks land in ``got``."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.on("track", got.append)
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url + "/offer",
            headers={"Authorization": f"Bearer {token}"},
            json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        answer = await r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    return pc


def test_metrics_are_scraped_with_frames_devices_timings_cpu_viewers_and_bitrate() -> None:
    async def scenario() -> None:
        frames, audio, events = LatestFrame(), AudioHub(), EventBus()
        control = Control(Auth.in_memory())
        token = control.auth.tokens.create("read", "a viewer")[1]
        app = create_app(frames, audio, events, StreamConfig(width=W, height=H, fps=FPS), control=control)
        metrics = Metrics(events=events, frames=frames, audio=audio)
        add_metrics_routes(app, metrics)
        events.publish(DeviceStatus("camera", "running"))
        events.publish(DeviceStatus("mic_array", "lost", "unplugged"))
        events.publish(
            Stats(
                1.0,
                frames=42,
                detections=5,
                detection_ms=18.5,
                audio_blocks=100,
                doa_blocks=90,
                audio_overflows=2,
                audio_blocks_dropped=100,
                audio_gaps=1,
            )
        )
        events.publish(Shot(1.0, (0, 0, 10, 10), "group", None, "r"))
        metrics.observe_detection(0.02)
        metrics.observe_detection(0.05)
        metrics.observe_doa(0.0004)
        stop = asyncio.Event()
        feeder = asyncio.create_task(_feed(frames, audio, stop))
        pc: RTCPeerConnection | None = None
        try:
            async with run_server(app, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{server.port}"

                async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                    async with http.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
                        assert r.status == 200
                        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                        return _samples(await r.text())

                for headers in ({}, {"Authorization": "Bearer rbx_00000000_forged"}):
                    async with http.get(url + "/metrics", headers=headers) as r:  # as /api/status: read scope
                        assert r.status == 401 and "roombox_" not in await r.text()
                before = await scrape()
                assert _get(before, "roombox_viewers") == 0
                got: list[Any] = []
                pc = await _viewer(url, got, token)
                for _ in range(400):  # until the viewer decodes pictures (ICE, DTLS, then RTP)
                    if got and pc.connectionState == "connected":
                        break
                    await asyncio.sleep(0.05)
                video = next(t for t in got if t.kind == "video")
                for _ in range(5):
                    await asyncio.wait_for(video.recv(), 20.0)
                s1 = await scrape()
                for _ in range(10):
                    await asyncio.wait_for(video.recv(), 20.0)
                s2 = await scrape()
        finally:
            stop.set()
            await feeder
            if pc is not None:
                await pc.close()

        assert _get(s2, "roombox_viewers") == 1
        assert _get(s2, "roombox_frames_out_total") >= 15 and _get(s2, "roombox_frames_dropped_total") >= 0
        assert _get(s2, "roombox_frames_in_total") == 42 and _get(s2, "roombox_doa_blocks_total") == 90
        # the mic array's losses (a sweep: counted by the driver, shown nowhere)
        assert _get(s2, "roombox_audio_overflows_total") == 2 and _get(s2, "roombox_audio_gaps_total") == 1
        assert _get(s2, "roombox_audio_blocks_dropped_total") == 100
        assert _get(s2, "roombox_detection_recent_seconds") == 0.0185
        assert _get(s2, "roombox_detection_seconds_count") == 2
        assert _get(s2, "roombox_detection_seconds_bucket", le="0.04") == 1
        assert _get(s2, "roombox_doa_seconds_count") == 1
        assert _get(s2, "roombox_device_state", device="camera", state="running") == 1
        assert _get(s2, "roombox_device_state", device="mic_array", state="lost") == 1
        assert _get(s2, "roombox_device_state", device="mic_array", state="running") == 0
        assert _get(s2, "roombox_shot_mode", mode="group") == 1
        assert _get(s2, "process_cpu_seconds_total") > 0
        v1 = _get(s1, "roombox_stream_sent_bytes_total", kind="video")
        v2 = _get(s2, "roombox_stream_sent_bytes_total", kind="video")
        assert 0 < v1 < v2, (v1, v2)  # ten more pictures went out between the scrapes
        assert _get(s2, "roombox_stream_bitrate_bps", kind="video") > 1000
        assert _get(s2, "roombox_stream_sent_bytes_total", kind="audio") > 0

    asyncio.run(scenario())


def test_health_tells_ok_from_degraded_from_dead_over_http() -> None:
    clock = VirtualClock()

    async def scenario() -> None:
        frames, events = LatestFrame(clock=clock.now), EventBus()
        control = Control(Auth.in_memory())
        token = control.auth.tokens.create("read", "a monitor")[1]
        app = create_app(frames, None, events, StreamConfig(), control=control)
        health = HealthCheck(events, frames, clock=clock.now, stale_s=5.0, dead_s=30.0)
        add_metrics_routes(app, Metrics(events=events, process=False), health)
        fleet_up = [True]
        health.add_check("mqtt", lambda: None if fleet_up[0] else ("degraded", "broker unreachable"))
        picture = np.zeros((90, 160, 3), np.uint8)
        async with run_server(app, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:

            async def health_now(token: str | None = token) -> tuple[int, dict[str, Any]]:
                headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
                async with http.get(f"http://127.0.0.1:{server.port}/api/health", headers=headers) as r:
                    return r.status, await r.json()

            status, body = await health_now(None)  # as /api/status: the read scope
            assert status == 401 and "status" not in body, body

            events.publish(DeviceStatus("camera", "running"))
            events.publish(DeviceStatus("mic_array", "running"))
            frames.put(picture, 0.0)
            status, body = await health_now()
            assert (status, body["status"]) == (200, "ok") and body["reasons"] == []
            assert body["devices"] == {"camera": "running", "mic_array": "running"}

            events.publish(DeviceStatus("mic_array", "lost", "unplugged"))
            fleet_up[0] = False
            status, body = await health_now()
            assert (status, body["status"]) == (200, "degraded")
            # which device, and why (before: "mic_array is lost", the reason only in the journal)
            assert body["reasons"] == ["degraded: mic_array is lost: unplugged", "degraded: mqtt: broker unreachable"]
            events.publish(RoomState(t=0.0, mic_arrays=("table", "ceiling"), mic_array="ceiling"))
            status, body = await health_now()  # which of the configured ones, once the room's state names it
            assert body["reasons"][0] == "degraded: mic_array 'ceiling' is lost: unplugged", body["reasons"]

            events.publish(DeviceStatus("mic_array", "running"))
            fleet_up[0] = True
            clock.advance(6.0)  # no new picture for 6 s: late, not yet dead
            status, body = await health_now()
            assert (status, body["status"]) == (200, "degraded") and "no framed picture" in body["reasons"][0]
            assert not health.wedged()

            clock.advance(30.0)  # the camera says it runs, yet nothing framed for 36 s
            status, body = await health_now()
            assert (status, body["status"]) == (503, "dead") and body["frames"]["age_s"] == 36.0
            assert health.wedged()

            frames.put(picture, 1.0)  # pictures again: alive
            status, body = await health_now()
            assert (status, body["status"]) == (200, "ok")
            # a picture, then none for 45 s, with nobody asking in between: the age counts from the picture
            frames.put(picture, 2.0)
            clock.advance(45.0)
            status, body = await health_now()
            assert (status, body["status"], body["frames"]["age_s"]) == (503, "dead", 45.0)
            frames.put(picture, 3.0)

            health.add_check("broken", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
            status, body = await health_now()
            assert status == 503 and "ZeroDivisionError" in body["reasons"][0]

    asyncio.run(scenario())
