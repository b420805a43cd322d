"""A VISCA PTZ camera simulator: it answers the real byte protocol (VISCA over IP on UDP, raw VISCA on TCP
and on a pseudo-terminal standing in for a serial line) and moves a virtual view over a wide picture.

:class:`ViscaCameraSim` holds the head's state: pan and tilt move towards their target at a finite speed
(``max_pan_deg_s`` at VISCA speed 24, proportionally slower at lower speeds), the zoom crosses its range in
``zoom_full_s``. Commands are ACKed at once and completed when the move ends (two command sockets, as real
cameras have; a new pan-tilt or zoom command supersedes the one in progress). It is also a
:class:`drivers.base.VideoSource` when given one: each picture of the wrapped (wide) source is cropped to
where the head looks at that picture's time, through a pinhole model, and scaled to the output size.

``behaviour`` makes it a bad camera for tests: ``"silent"`` (never answers) or ``"garbage"`` (answers
bytes that are not VISCA); ``delay_s`` delays every answer (a slow camera, a congested link); ``hang_up``
(raw VISCA on TCP) closes the connection after each answer (``"after_answer"``, as some cameras do) or on each
message without answering (``"at_once"``). Everything listens on 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import math
import os
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from common.clock import SYSTEM_CLOCK, Clock
from drivers.base import Frame, VideoSource
from drivers.ptz import visca
from drivers.ptz.base import PtzLimits, PtzPosition, hfov_at

Reply = Callable[[bytes], None]
Behaviour = Literal["ok", "silent", "garbage"]
HangUp = Literal["never", "after_answer", "at_once"]


@dataclass
class _Axis:
    """One axis moving linearly from ``start`` (at ``t0``) towards ``target`` at ``speed`` units/s."""

    start: float = 0.0
    target: float = 0.0
    t0: float = 0.0
    speed: float = 1.0

    def at(self, t: float) -> float:
        d = self.target - self.start
        step = self.speed * max(0.0, t - self.t0)
        return self.target if abs(d) <= step else self.start + math.copysign(step, d)

    def arrival(self) -> float:
        return self.t0 + abs(self.target - self.start) / self.speed

    def go(self, t: float, target: float, speed: float) -> None:
        self.start, self.t0, self.target, self.speed = self.at(t), t, target, max(speed, 1e-6)


class ViscaCameraSim:
    def __init__(
        self,
        source: VideoSource | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        address: int = 1,
        source_hfov_deg: float = 90.0,
        hfov_wide_deg: float = 60.0,
        optical_zoom: float = 4.0,
        limits: PtzLimits | None = None,
        pan_units_per_deg: float = 14.4,
        tilt_units_per_deg: float = 14.4,
        zoom_max: int = 0x4000,
        max_pan_deg_s: float = 100.0,
        max_tilt_deg_s: float = 80.0,
        zoom_full_s: float = 2.0,
        out_size: tuple[int, int] = (1280, 720),
        behaviour: Behaviour = "ok",
        name: str = "visca-sim",
    ) -> None:
        self.source, self.clock, self.address, self.name = source, clock, address, name
        self.source_hfov_deg, self.hfov_wide_deg, self.optical_zoom = source_hfov_deg, hfov_wide_deg, optical_zoom
        self.limits = limits or PtzLimits((-170.0, 170.0), (-30.0, 90.0))
        self.pan_units, self.tilt_units, self.zoom_max = pan_units_per_deg, tilt_units_per_deg, zoom_max
        self.max_pan_deg_s, self.max_tilt_deg_s, self.zoom_full_s = max_pan_deg_s, max_tilt_deg_s, zoom_full_s
        self.out_size = out_size
        self.behaviour: Behaviour = behaviour
        self.delay_s = 0.0
        self.hang_up: HangUp = "never"
        self.connections = 0  # TCP connections accepted
        self.pan, self.tilt, self.zoom = _Axis(), _Axis(), _Axis()
        self.received: list[bytes] = []  # every VISCA message, for tests
        self._sockets: dict[int, tuple[str, Reply, int]] = {}  # socket -> (what it runs, where to answer, id)
        self._ids = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[Any] = []
        self._pty: tuple[int, int] | None = None

    # --- state ---
    def position(self, t: float | None = None) -> PtzPosition:
        t = self.clock.now() if t is None else t
        return PtzPosition(self.pan.at(t), self.tilt.at(t), self.zoom.at(t))

    def _complete_when(self, socket: int, t_end: float) -> None:
        _, reply, cid = self._sockets[socket]

        async def later() -> None:
            # wait without driving the clock: a virtual clock moves only with the pictures read
            while (left := t_end - self.clock.now()) > 0:
                await asyncio.sleep(min(left, 0.02))
            if socket in self._sockets and self._sockets[socket][2] == cid:  # not superseded meanwhile
                del self._sockets[socket]
                reply(visca.completion(self.address, socket))

        task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_socket(self, kind: str, reply: Reply) -> int | None:
        for s, (k, old_reply, _) in list(self._sockets.items()):
            if k == kind:  # supersede the move in progress: it is complete as far as it went
                del self._sockets[s]
                old_reply(visca.completion(self.address, s))
        for s in (1, 2):
            if s not in self._sockets:
                self._ids += 1
                self._sockets[s] = (kind, reply, self._ids)
                return s
        return None

    def handle(self, msg: bytes, reply: Reply) -> None:
        """Answer one controller message (``reply`` sends a VISCA message back the way it came)."""
        self.received.append(msg)
        if self.behaviour == "silent":
            return
        if self.delay_s > 0:
            answer, delay = reply, self.delay_s
            loop = asyncio.get_running_loop()

            def reply(m: bytes) -> None:
                loop.call_later(delay, answer, m)

        if self.behaviour == "garbage":
            reply(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            return
        a = self.address
        try:
            cmd = visca.parse_command(msg)
        except visca.ViscaProtocolError:
            reply(visca.error(a, 0, 0x02))
            return
        if cmd.kind == "if_clear":
            self._sockets.clear()
            reply(visca.completion(a, 0))
            return
        if cmd.address != a:
            return
        now = self.clock.now()
        if cmd.kind == "inq_pan_tilt":
            p = self.position(now)
            reply(
                visca.completion(
                    a,
                    0,
                    visca.nibbles(round(p.pan_deg * self.pan_units))
                    + visca.nibbles(round(p.tilt_deg * self.tilt_units)),
                )
            )
        elif cmd.kind == "inq_zoom":
            reply(visca.completion(a, 0, visca.nibbles(round(self.zoom.at(now) * self.zoom_max))))
        elif cmd.kind in ("pan_tilt_absolute", "pan_tilt_drive", "home"):
            self._pan_tilt(cmd, now, reply)
        elif cmd.kind in ("zoom_direct", "zoom_stop"):
            if cmd.kind == "zoom_direct" and cmd.values[0] > self.zoom_max:
                reply(visca.error(a, 0, 0x02))
                return
            socket = self._take_socket("zoom", reply)
            if socket is None:
                reply(visca.error(a, 0, 0x03))
                return
            reply(visca.ack(a, socket))
            target = cmd.values[0] / self.zoom_max if cmd.kind == "zoom_direct" else self.zoom.at(now)
            self.zoom.go(now, target, 1.0 / self.zoom_full_s)
            self._complete_when(socket, self.zoom.arrival())
        else:
            reply(visca.error(a, 0, 0x02))

    def _pan_tilt(self, cmd: visca.Command, now: float, reply: Reply) -> None:
        a, lim = self.address, self.limits
        vp, vt = visca.PAN_SPEED_MAX, visca.TILT_SPEED_MAX
        if cmd.kind == "pan_tilt_absolute":
            pan, tilt, vp, vt = cmd.values[0] / self.pan_units, cmd.values[1] / self.tilt_units, *cmd.values[2:]
            if not (
                lim.pan_deg[0] - 0.5 <= pan <= lim.pan_deg[1] + 0.5
                and lim.tilt_deg[0] - 0.5 <= tilt <= lim.tilt_deg[1] + 0.5
            ):
                reply(visca.error(a, 0, 0x41))  # beyond the head's travel: not executable
                return
        elif cmd.kind == "home":
            pan, tilt = 0.0, 0.0
        else:  # drive: 01 left/up, 02 right/down, 03 stop
            vp, vt, dp, dt = cmd.values
            pan = {1: lim.pan_deg[0], 2: lim.pan_deg[1]}.get(dp, self.pan.at(now))
            tilt = {1: lim.tilt_deg[1], 2: lim.tilt_deg[0]}.get(dt, self.tilt.at(now))
        if not (1 <= vp <= visca.PAN_SPEED_MAX and 1 <= vt <= visca.TILT_SPEED_MAX):
            reply(visca.error(a, 0, 0x02))
            return
        socket = self._take_socket("pan_tilt", reply)
        if socket is None:
            reply(visca.error(a, 0, 0x03))
            return
        reply(visca.ack(a, socket))
        self.pan.go(now, pan, self.max_pan_deg_s * vp / visca.PAN_SPEED_MAX)
        self.tilt.go(now, tilt, self.max_tilt_deg_s * vt / visca.TILT_SPEED_MAX)
        self._complete_when(socket, max(self.pan.arrival(), self.tilt.arrival()))

    # --- serving the protocol ---
    async def serve_udp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """VISCA over IP on UDP; returns the port."""
        sim = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                try:
                    ptype, seq, payload = visca.ip_unpack(data)
                except visca.ViscaProtocolError:
                    self.transport.sendto(visca.ip_pack(visca.PT_CONTROL_REPLY, 0, visca.CONTROL_ERROR_MESSAGE), addr)
                    return
                if ptype == visca.PT_CONTROL:
                    if sim.behaviour == "ok":
                        self.transport.sendto(visca.ip_pack(visca.PT_CONTROL_REPLY, seq, b"\x01"), addr)
                    return

                def reply(msg: bytes) -> None:
                    if sim.behaviour == "garbage":
                        self.transport.sendto(msg, addr)
                    else:
                        self.transport.sendto(visca.ip_pack(visca.PT_REPLY, seq, msg), addr)

                sim.handle(payload, reply)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Proto, local_addr=(host, port))
        self._servers.append(transport)
        return int(transport.get_extra_info("sockname")[1])

    async def _serve_stream(
        self, reader: asyncio.StreamReader, write: Reply, handle: Callable[[bytes], None] | None = None
    ) -> None:
        split = visca.MessageSplitter()
        while data := await reader.read(256):
            try:
                messages = split.feed(data)
            except visca.ViscaProtocolError:
                write(visca.error(self.address, 0, 0x01))
                continue
            for m in messages:
                if handle is not None:
                    handle(m)
                else:
                    self.handle(m, write)

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Raw VISCA on TCP; returns the port."""

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1

            def write(msg: bytes) -> None:
                writer.write(msg)
                if self.hang_up == "after_answer":
                    writer.close()

            def hang_up(msg: bytes) -> None:
                self.received.append(msg)
                writer.close()

            try:
                await self._serve_stream(reader, write, hang_up if self.hang_up == "at_once" else None)
            except ConnectionError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(client, host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def serve_pty(self) -> str:
        """Raw VISCA on a pseudo-terminal, as on a serial line; returns the path the controller opens."""
        master, slave = os.openpty()
        tty.setraw(master, termios.TCSANOW)
        tty.setraw(slave, termios.TCSANOW)
        self._pty = (master, slave)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        read_pipe = os.fdopen(os.dup(master), "rb", buffering=0)
        r_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_pipe)
        w_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(os.dup(master), "wb", buffering=0))
        self._servers += [r_transport, w_transport]
        task = loop.create_task(self._serve_stream(reader, w_transport.write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return os.ttyname(slave)

    async def close(self) -> None:
        for s in self._servers:
            s.close()
            if isinstance(s, asyncio.Server):
                await s.wait_closed()
        self._servers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pty is not None:
            for fd in self._pty:
                os.close(fd)
            self._pty = None

    # --- the virtual view (a VideoSource) ---
    def crop_box(self, width: int, height: int, pos: PtzPosition) -> tuple[int, int, int, int]:
        """The (x, y, w, h) of the wide picture (``width`` x ``height``, ``source_hfov_deg`` wide) that the
        head sees at ``pos``, at the output's aspect ratio, kept inside the picture."""
        f = (width / 2) / math.tan(math.radians(self.source_hfov_deg) / 2)
        view = min(hfov_at(self.hfov_wide_deg, self.optical_zoom, pos.zoom), self.source_hfov_deg)
        w = min(float(width), 2 * f * math.tan(math.radians(view) / 2))
        h = w * self.out_size[1] / self.out_size[0]
        if h > height:
            w, h = w * height / h, float(height)
        cx = width / 2 + f * math.tan(math.radians(max(-80.0, min(80.0, pos.pan_deg))))
        cy = height / 2 - f * math.tan(math.radians(max(-80.0, min(80.0, pos.tilt_deg))))
        x = min(max(cx - w / 2, 0.0), width - w)
        y = min(max(cy - h / 2, 0.0), height - h)
        return round(x), round(y), max(1, round(w)), max(1, round(h))

    async def start(self) -> None:
        if self.source is None:
            raise RuntimeError(f"{self.name}: no picture to move over (give a source)")
        await self.source.start()

    async def recv(self) -> Frame:
        import cv2

        assert self.source is not None
        frame = await self.source.recv()
        x, y, w, h = self.crop_box(frame.width, frame.height, self.position(frame.t))
        view = cv2.resize(frame.image[y : y + h, x : x + w], self.out_size, interpolation=cv2.INTER_AREA)
        return Frame(t=frame.t, image=np.ascontiguousarray(view))

    async def stop(self) -> None:
        if self.source is not None:
            await self.source.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m drivers.ptz.simulator [--udp PORT] [--tcp PORT]``: a VISCA camera on 127.0.0.1 (no
    picture) until interrupted, for trying a controller against it."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m drivers.ptz.simulator", description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--udp", type=int, default=52381, help="VISCA-over-IP port (0: any)")
    p.add_argument("--tcp", type=int, default=5678, help="raw VISCA TCP port (0: any)")
    a = p.parse_args(argv)

    async def run() -> None:
        sim = ViscaCameraSim()
        udp, tcp = await sim.serve_udp(a.host, a.udp), await sim.serve_tcp(a.host, a.tcp)
        print(f"VISCA camera: udp://{a.host}:{udp} (VISCA over IP), tcp://{a.host}:{tcp}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
