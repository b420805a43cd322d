"""VISCA: the codec against the bytes of the protocol, and the client against the VISCA camera simulator over
UDP (VISCA over IP), TCP and a pseudo-terminal (serial), including cameras that are silent or talk garbage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from common.clock import VirtualClock
from drivers.base import Frame
from drivers.ptz import visca
from drivers.ptz.base import PtzControl, PtzError, PtzPosition, PtzRefused, room_direction
from drivers.ptz.simulator import ViscaCameraSim
from drivers.ptz.visca_client import ViscaIpConfig, ViscaPtz, ViscaSerialConfig, ViscaTcpConfig
from drivers.registry import open_device


def test_codec_bytes() -> None:
    assert visca.pan_tilt_absolute(1, -2448, 300, 0x18, 0x14) == bytes.fromhex(
        "81 01 06 02 18 14 0f 06 07 00 00 01 02 0c ff"
    )
    assert visca.zoom_direct(1, 0x4000) == bytes.fromhex("81 01 04 47 04 00 00 00 ff")
    assert visca.inquire_pan_tilt(2) == bytes.fromhex("82 09 06 12 ff")
    assert visca.inquire_zoom(1) == bytes.fromhex("81 09 04 47 ff")
    assert visca.pan_tilt_stop(1) == bytes.fromhex("81 01 06 01 01 01 03 03 ff")
    assert visca.parse_reply(bytes.fromhex("90 41 ff")) == visca.Reply("ack", 1, 1)
    assert visca.parse_reply(bytes.fromhex("a0 52 ff")) == visca.Reply("completion", 2, 2)
    err = visca.parse_reply(bytes.fromhex("90 60 03 ff"))
    assert (err.kind, err.error) == ("error", "command buffer full")
    data = visca.parse_reply(bytes.fromhex("90 50 0f 06 07 00 00 01 02 0c ff")).data
    assert visca.pan_tilt_answer(data) == (-2448, 300)
    assert visca.zoom_answer(bytes.fromhex("04 00 00 00")) == 0x4000
    for bad in ("48 54 54 50", "90 41", "81 01 ff", "90 70 ff", "90 50 ff ff", "90 60 01 02 ff"):
        with pytest.raises(visca.ViscaProtocolError):
            visca.parse_reply(bytes.fromhex(bad))
    with pytest.raises(visca.ViscaProtocolError):
        visca.pan_tilt_answer(bytes.fromhex("1f 06 07 00 00 01 02 0c"))
    with pytest.raises(ValueError):
        visca.pan_tilt_absolute(9, 0, 0)
    # VISCA over IP: 8-byte header (type, length, sequence)
    assert visca.ip_pack(visca.PT_COMMAND, 7, visca.inquire_zoom(1)) == bytes.fromhex(
        "01 00 00 05 00 00 00 07 81 09 04 47 ff"
    )
    assert visca.ip_unpack(bytes.fromhex("01 11 00 03 00 00 00 07 90 41 ff")) == (
        visca.PT_REPLY,
        7,
        bytes.fromhex("90 41 ff"),
    )
    with pytest.raises(visca.ViscaProtocolError):
        visca.ip_unpack(bytes.fromhex("01 11 00 09 00 00 00 07 90 41 ff"))
    split = visca.MessageSplitter()
    assert split.feed(bytes.fromhex("90 41 ff 90")) == [bytes.fromhex("90 41 ff")]
    assert split.feed(bytes.fromhex("51 ff")) == [bytes.fromhex("90 51 ff")]
    with pytest.raises(visca.ViscaProtocolError):
        split.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert room_direction(PtzPosition(30.0, 0.0, 0.0), 10.0) == pytest.approx((40.0, 0.0))


async def _connect(sim: ViscaCameraSim, kind: str, **kw: Any) -> PtzControl:
    if kind == "visca-ip":
        cfg: Any = ViscaIpConfig(host="127.0.0.1", port=await sim.serve_udp(), **kw)
    elif kind == "visca-tcp":
        cfg = ViscaTcpConfig(host="127.0.0.1", port=await sim.serve_tcp(), **kw)
    else:
        cfg = ViscaSerialConfig(device=await sim.serve_pty(), **kw)
    ptz = open_device("ptz", "head", cfg)
    assert isinstance(ptz, ViscaPtz) and isinstance(ptz, PtzControl)
    return ptz


@pytest.mark.parametrize("kind", ["visca-ip", "visca-tcp", "visca-serial"])
def test_drives_the_simulated_camera(kind: str) -> None:
    async def run() -> None:
        sim = ViscaCameraSim(max_pan_deg_s=200.0, max_tilt_deg_s=200.0, zoom_full_s=0.5)
        ptz = await _connect(sim, kind, timeout_s=3.0)
        try:
            assert await ptz.position() == PtzPosition(0.0, 0.0, 0.0)
            t0 = time.monotonic()
            pos = await ptz.move_to(20.0, -5.0, 0.5)  # returns on the ACK
            assert pos == PtzPosition(20.0, -5.0, 0.5)
            assert time.monotonic() - t0 < 0.5 * 20.0 / 200.0 + 2.0
            await ptz.move_to(20.0, -5.0, 0.5, wait=True)  # arrives at finite speed
            got = await ptz.position()
            assert got.pan_deg == pytest.approx(20.0, abs=0.1) and got.tilt_deg == pytest.approx(-5.0, abs=0.1)
            assert got.zoom == pytest.approx(0.5, abs=1e-3)
            # outside the travel: clamped to the limits the config gives
            assert (await ptz.move_to(400.0, 0.0, 2.0)).pan_deg == 170.0
            await ptz.stop()
            assert sim.received[-2:] == [visca.pan_tilt_stop(1), visca.zoom_stop(1)]
        finally:
            await ptz.close()
            await sim.close()

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["visca-ip", "visca-tcp", "visca-serial"])
@pytest.mark.parametrize(
    "behaviour, message",
    [
        ("silent", "no answer to the pan-tilt inquiry within 0.3 s"),
        ("garbage", "garbage in answer to the pan-tilt inquiry"),
    ],
)
def test_a_camera_that_is_silent_or_talks_garbage(kind: str, behaviour: Any, message: str) -> None:
    async def run() -> float:
        sim = ViscaCameraSim(behaviour=behaviour)
        ptz = await _connect(sim, kind, timeout_s=0.3)
        t0 = time.monotonic()
        try:
            with pytest.raises(PtzError, match=message):
                await ptz.position()
            return time.monotonic() - t0
        finally:
            await ptz.close()
            await sim.close()

    assert asyncio.run(run()) < 5.0


def test_refusals_and_nobody_there() -> None:
    async def run() -> None:
        sim = ViscaCameraSim(limits=None)
        ptz = await _connect(sim, "visca-ip", timeout_s=1.0, pan_min_deg=-180.0, pan_max_deg=180.0)
        try:  # the config allows more travel than the head has: the camera says not executable
            with pytest.raises(PtzRefused, match="refused pan-tilt to .180.0, 0.0. deg: command not executable"):
                await ptz.move_to(180.0, 0.0, 0.0)
            assert await ptz.position() == PtzPosition(0.0, 0.0, 0.0)  # refused one move, still there
        finally:
            await ptz.close()
            await sim.close()
        closed = ViscaTcpConfig(host="127.0.0.1", port=sim_port_closed(), timeout_s=1.0)
        with pytest.raises(
            PtzError, match=r"^\[ptz\.head\] tcp://127\.0\.0\.1:\d+: cannot connect: connection refused$"
        ):
            await open_device("ptz", "head", closed).position()
        with pytest.raises(
            PtzError, match=r"^\[ptz\.head\] /dev/ttyNOPE .*: cannot open the serial line: no such file"
        ):
            await open_device("ptz", "head", ViscaSerialConfig(device="/dev/ttyNOPE")).position()

    asyncio.run(run())


def test_every_error_names_the_head_its_address_and_why() -> None:
    """A sweep: a VISCA-over-IP head on a network the box has no route to gave "ptz lost: OSError: [Errno 101]
    Network is unreachable", no head, no address (the tests run in a network namespace with loopback only)."""

    async def run() -> None:
        far = ViscaIpConfig(host="192.0.2.1", timeout_s=0.3)
        with pytest.raises(
            PtzError, match=r"^\[ptz\.head\] udp://192\.0\.2\.1:52381: cannot reach the camera: network is unreachable$"
        ):
            await open_device("ptz", "head", far).position()
        # nothing on that UDP port: the ICMP "port unreachable" says so beside the timeout
        nobody = open_device("ptz", "head", ViscaIpConfig(host="127.0.0.1", port=sim_port_closed(), timeout_s=0.3))
        with pytest.raises(
            PtzError,
            match=r"^\[ptz\.head\] udp://127\.0\.0\.1:\d+: no answer to the pan-tilt inquiry within 0\.3 s: "
            r"connection refused \(is the camera on",
        ):
            try:
                await nobody.position()
            finally:
                await nobody.close()

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["visca-ip", "visca-tcp"])
def test_an_answer_after_the_timeout_is_told_from_none(kind: str) -> None:
    """A camera that answers, but later than timeout_s, is told to raise it, not asked whether it is on."""

    async def run() -> None:
        sim = ViscaCameraSim()
        sim.delay_s = 0.7
        ptz = await _connect(sim, kind, timeout_s=0.3)
        try:
            with pytest.raises(
                PtzError,
                match=r"^\[ptz\.head\] (udp|tcp)://127\.0\.0\.1:\d+: the camera answered the pan-tilt inquiry "
                r"after 0\.\d s, after the timeout_s \(0\.3 s\): raise \[ptz\.head\] timeout_s$",
            ):
                await ptz.position()
        finally:
            await ptz.close()
            await sim.close()

    asyncio.run(run())


def test_a_tcp_camera_that_hangs_up_after_each_answer_is_usable() -> None:
    """A sweep: a head that closes the TCP connection after each answer was never usable (the zoom inquiry
    after the pan-tilt one met the closed connection; the head lost, retried, lost again). The client opens
    a new connection, once and at once; a head that closes a fresh connection too is reported."""

    async def run() -> None:
        sim = ViscaCameraSim(max_pan_deg_s=400.0, zoom_full_s=0.2)
        sim.hang_up = "after_answer"
        ptz = await _connect(sim, "visca-tcp", timeout_s=3.0)
        try:
            assert await ptz.position() == PtzPosition(0.0, 0.0, 0.0)
            await ptz.move_to(10.0, -5.0, 0.25)
            await ptz.stop()
            assert await ptz.position() == await ptz.position()
            assert sim.connections >= 6  # a connection per answer
            sim.hang_up = "at_once"  # now it closes each connection without answering
            before = sim.connections
            with pytest.raises(
                PtzError,
                match=r"^\[ptz\.head\] tcp://127\.0\.0\.1:\d+: the camera closed the connection",
            ):
                await ptz.position()
            assert sim.connections == before + 1  # one fresh connection tried, not a loop
            sim.hang_up = "never"  # back: the next request connects again by itself
            assert (await ptz.position()).zoom == pytest.approx(0.0, abs=0.3)
        finally:
            await ptz.close()
            await sim.close()

    asyncio.run(run())


def sim_port_closed() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Wide:
    """A wide picture with a bright marker at its centre column, as a VideoSource."""

    name = "wide"

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        img = np.zeros((540, 960, 3), np.uint8)
        img[:, 475:485] = 255
        self.img = img

    async def start(self) -> None:
        pass

    async def recv(self) -> Frame:
        await self.clock.sleep_until(self.clock.now() + 1 / 30)
        return Frame(self.clock.now(), self.img)

    async def stop(self) -> None:
        pass


def test_the_simulated_view_moves_at_finite_speed() -> None:
    clock = VirtualClock()
    sim = ViscaCameraSim(
        Wide(clock),
        clock=clock,
        source_hfov_deg=90.0,
        hfov_wide_deg=60.0,
        optical_zoom=4.0,
        out_size=(320, 180),
        max_pan_deg_s=30.0,
    )

    async def run() -> list[tuple[float, int]]:
        await sim.start()
        port = await sim.serve_udp()
        ptz = open_device("ptz", "head", ViscaIpConfig(host="127.0.0.1", port=port))
        out = []
        try:
            f = await sim.recv()
            assert f.image.shape == (180, 320, 3) and abs(int(np.argmax(f.image[90, :, 0])) - 160) <= 6
            await ptz.move_to(-20.0, 0.0, 0.0)  # 20 deg at 30 deg/s: 0.67 s
            t0 = clock.now()
            for _ in range(30):
                f = await sim.recv()
                marker = int(np.argmax(f.image[90, :, 0]))  # the room's centre column in the view
                out.append((f.t - t0, marker))
        finally:
            await ptz.close()
            await sim.close()
            await sim.stop()
        return out

    track = asyncio.run(run())
    # panning left, the marker moves right in the view, then stays once the head has arrived
    xs = [x for _, x in track]
    assert all(b >= a for a, b in zip(xs, xs[1:], strict=False))
    halfway = next(x for t, x in track if t >= 0.33)
    arrived = [x for t, x in track if t >= 0.75]
    f = 160 / np.tan(np.radians(30))  # view focal length in output pixels
    assert arrived[-1] == pytest.approx(160 + f * np.tan(np.radians(20)), abs=6)
    assert 160 + 10 < halfway < arrived[-1] - 10
    assert len(set(arrived)) == 1


def test_a_camera_address_that_is_no_address_is_refused() -> None:
    """As [panel] host: an address that is neither an IP address nor a host name loaded, then failed at every
    connection (a sweep of the live box)."""
    from appliance.config import parse_config
    from common.settings import ConfigError

    for kind in ("visca-ip", "visca-tcp"):
        with pytest.raises(ConfigError, match=r"host\] 'not a host' is not an IP address or a host name to reach"):
            parse_config({"ptz": {"head": {"type": kind, "host": "not a host"}}})
        head = parse_config({"ptz": {"head": {"type": kind, "host": "ptz-1.local"}}}).ptz["head"]
        assert getattr(head, "host", None) == "ptz-1.local"
