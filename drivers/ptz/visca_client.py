"""VISCA PTZ cameras (PTZOptics, Sony, Avonic, Lumens, ...) over IP (Sony VISCA over UDP, port 52381), over
TCP (raw VISCA, e.g. port 5678) and over a serial line (RS-232/RS-422, 9600 baud 8N1).

``[ptz.NAME] type = "visca-ip" | "visca-tcp" | "visca-serial"``. One request is in flight at a time; each
waits at most ``timeout_s`` for its answer: a camera that does not answer, or answers garbage, raises
:class:`drivers.ptz.base.PtzError` (never a hang). Positions are converted with ``pan_units_per_deg``,
``tilt_units_per_deg`` and ``zoom_max`` (the camera's manual gives them; the defaults are PTZOptics').
"""

from __future__ import annotations

import asyncio
import os
import termios
from typing import Any, Literal

from pydantic import Field, field_validator

from common.settings import host_or_ip
from drivers.ptz import visca
from drivers.ptz.base import PtzError, PtzLimits, PtzPosition, PtzSection
from drivers.registry import DriverContext, register


class ViscaSection(PtzSection):
    address: int = Field(1, ge=1, le=7, title="VISCA camera address")
    timeout_s: float = Field(1.0, gt=0.0, le=30.0, title="Answer timeout (s)")
    move_timeout_s: float = Field(20.0, gt=0.0, le=120.0, title="Longest move, when waiting for it (s)")
    pan_units_per_deg: float = Field(14.4, gt=0.0, le=1000.0, title="Pan position units per degree")
    tilt_units_per_deg: float = Field(14.4, gt=0.0, le=1000.0, title="Tilt position units per degree")
    zoom_max: int = Field(0x4000, ge=1, le=0xFFFF, title="Zoom position at the tightest zoom")
    pan_speed: int = Field(visca.PAN_SPEED_MAX, ge=1, le=visca.PAN_SPEED_MAX, title="Pan speed (1-24)")
    tilt_speed: int = Field(visca.TILT_SPEED_MAX, ge=1, le=visca.TILT_SPEED_MAX, title="Tilt speed (1-20)")


class _Networked(ViscaSection):
    @field_validator("host", check_fields=False)
    @classmethod
    def _address(cls, v: str) -> str:
        return host_or_ip(v, "to reach the camera at")


class ViscaIpConfig(_Networked):
    type: Literal["visca-ip"] = "visca-ip"
    host: str = Field(..., min_length=1, max_length=255, title="Camera address (IP or host name)")
    port: int = Field(52381, ge=1, le=65535, title="VISCA-over-IP UDP port")


class ViscaTcpConfig(_Networked):
    type: Literal["visca-tcp"] = "visca-tcp"
    host: str = Field(..., min_length=1, max_length=255, title="Camera address (IP or host name)")
    port: int = Field(5678, ge=1, le=65535, title="VISCA TCP port")


class ViscaSerialConfig(ViscaSection):
    type: Literal["visca-serial"] = "visca-serial"
    device: str = Field(..., min_length=1, max_length=300, title="Serial device (/dev/ttyUSB0)")
    baud: Literal[2400, 4800, 9600, 19200, 38400, 115200] = Field(9600, title="Baud rate")


# --- transports: send one VISCA message, receive VISCA messages ---


class _Transport:
    where = ""

    async def open(self, timeout: float) -> None: ...

    async def send(self, msg: bytes, inquiry: bool) -> None: ...

    async def recv(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None: ...


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable: wait for the timeout
        pass


class UdpTransport(_Transport):
    """Sony VISCA over IP: each message in a datagram with the 8-byte header; replies carry the sequence
    number of their command, so a late answer to an earlier command is told apart and dropped."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.where = f"udp://{host}:{port}"
        self._seq = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._proto = _Datagrams()

    async def open(self, timeout: float) -> None:
        self.close()  # a reopen never leaves the previous endpoint open
        loop = asyncio.get_running_loop()
        self._proto = _Datagrams()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self._proto, remote_addr=(self.host, self.port)
        )
        # reset the camera's sequence number (cameras that do not answer it are still usable)
        self._seq = 0
        self._transport.sendto(visca.ip_pack(visca.PT_CONTROL, 0, visca.CONTROL_RESET))

    async def send(self, msg: bytes, inquiry: bool) -> None:
        assert self._transport is not None
        self._seq += 1
        self._transport.sendto(visca.ip_pack(visca.PT_INQUIRY if inquiry else visca.PT_COMMAND, self._seq, msg))

    async def recv(self) -> bytes:
        while True:
            ptype, seq, payload = visca.ip_unpack(await self._proto.queue.get())
            if ptype == visca.PT_REPLY and seq == self._seq:
                return payload
            if ptype == visca.PT_CONTROL_REPLY and payload[:1] == b"\x0f" and seq == self._seq:
                what = {
                    visca.CONTROL_ERROR_SEQUENCE: "an abnormal sequence number",
                    visca.CONTROL_ERROR_MESSAGE: "an abnormal message",
                }.get(payload, payload.hex(" "))
                raise PtzError(f"{self.where}: the camera reports {what}")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _StreamTransport(_Transport):
    """Raw VISCA on a byte stream (TCP, serial): messages cut at 0xFF."""

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: Any = None
        self._split = visca.MessageSplitter()
        self._ready: list[bytes] = []

    async def send(self, msg: bytes, inquiry: bool) -> None:
        assert self._writer is not None
        self._writer.write(msg)

    async def recv(self) -> bytes:
        assert self._reader is not None
        while not self._ready:
            data = await self._reader.read(64)
            if not data:
                raise PtzError(f"{self.where}: the camera closed the connection")
            self._ready += self._split.feed(data)
        return self._ready.pop(0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reader = None
        self._ready.clear()
        self._split = visca.MessageSplitter()


class TcpTransport(_StreamTransport):
    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host, self.port = host, port
        self.where = f"tcp://{host}:{port}"

    async def open(self, timeout: float) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        except TimeoutError:
            raise PtzError(f"{self.where}: no connection within {timeout:g} s") from None
        except OSError as e:
            raise PtzError(f"{self.where}: cannot connect: {e.strerror or e}") from None


_BAUD = {
    2400: termios.B2400,
    4800: termios.B4800,
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    115200: termios.B115200,
}


def open_serial(path: str, baud: int) -> int:
    """A serial line (or pseudo-terminal) opened raw, 8N1, no flow control; returns the file descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        attrs = termios.tcgetattr(fd)
        iflag, oflag, cflag, lflag, _, _, cc = attrs
        iflag = 0
        oflag = 0
        lflag = 0
        cflag = (
            (cflag & ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | termios.CRTSCTS))
            | termios.CS8
            | termios.CREAD
            | termios.CLOCAL
        )
        cc[termios.VMIN], cc[termios.VTIME] = 1, 0
        speed = _BAUD[baud]
        termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])
    except BaseException:
        os.close(fd)
        raise
    return fd


class SerialTransport(_StreamTransport):
    def __init__(self, device: str, baud: int) -> None:
        super().__init__()
        self.device, self.baud = device, baud
        self.where = f"{device} ({baud} baud)"
        self._read_transport: asyncio.ReadTransport | None = None

    async def open(self, timeout: float) -> None:
        try:
            fd = open_serial(self.device, self.baud)
        except (OSError, termios.error) as e:
            raise PtzError(f"{self.where}: cannot open the serial line: {e}") from None
        loop = asyncio.get_running_loop()
        reader = self._reader = asyncio.StreamReader()
        read_file = os.fdopen(fd, "rb", buffering=0)
        write_file = os.fdopen(os.dup(fd), "wb", buffering=0)
        self._read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_file)
        self._writer, _ = await loop.connect_write_pipe(asyncio.Protocol, write_file)

    def close(self) -> None:
        super().close()
        if self._read_transport is not None:
            self._read_transport.close()
            self._read_transport = None


# --- the camera ---


class ViscaPtz:
    """A :class:`drivers.ptz.base.PtzControl` over VISCA."""

    def __init__(self, name: str, cfg: ViscaSection, transport: _Transport) -> None:
        self.name, self.cfg, self._t = name, cfg, transport
        self.limits: PtzLimits = cfg.limits
        self._lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._open = False

    @property
    def where(self) -> str:
        return f"[ptz.{self.name}] {self._t.where}"

    async def open(self) -> None:
        async with self._open_lock:  # two first requests at once open the camera once
            if not self._open:
                await self._t.open(self.cfg.timeout_s)
                self._open = True

    async def close(self) -> None:
        self._t.close()
        self._open = False

    async def _request(self, msg: bytes, what: str, inquiry: bool = False, wait: bool = False) -> bytes:
        """Send one message and wait for its answer: an inquiry's data, or a command's ACK (and its
        completion with ``wait``). Stale answers to earlier commands are skipped."""
        await self.open()
        async with self._lock:
            await self._t.send(msg, inquiry)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.cfg.timeout_s
            socket = -1
            while True:
                left = deadline - loop.time()
                try:
                    raw = await asyncio.wait_for(self._t.recv(), max(left, 0.0))
                except TimeoutError:
                    state = "no completion" if socket >= 0 else "no answer"
                    raise PtzError(
                        f"{self.where}: {state} to {what} within "
                        f"{(self.cfg.move_timeout_s if socket >= 0 else self.cfg.timeout_s):g} s "
                        f"(is the camera on, at this address?)"
                    ) from None
                except visca.ViscaProtocolError as e:
                    raise PtzError(f"{self.where}: garbage in answer to {what}: {e}") from None
                try:
                    r = visca.parse_reply(raw)
                except visca.ViscaProtocolError as e:
                    raise PtzError(f"{self.where}: garbage in answer to {what}: {e}") from None
                if r.address != self.cfg.address:
                    continue
                if r.kind == "error":
                    if socket >= 0 and r.socket not in (0, socket):
                        continue  # about an earlier command
                    raise PtzError(f"{self.where}: the camera refused {what}: {r.error}")
                if inquiry:
                    if r.kind == "completion" and r.socket == 0 and r.data:
                        return r.data
                    continue  # an ACK or completion of an earlier command
                if r.kind == "ack" and socket < 0:
                    socket = r.socket
                    if not wait:
                        return b""
                    deadline = loop.time() + self.cfg.move_timeout_s
                elif r.kind == "completion" and socket >= 0 and r.socket == socket and not r.data:
                    return b""

    def _units(self, pos: PtzPosition) -> tuple[int, int, int]:
        c = self.cfg
        pan = max(-0x8000, min(0x7FFF, round(pos.pan_deg * c.pan_units_per_deg)))
        tilt = max(-0x8000, min(0x7FFF, round(pos.tilt_deg * c.tilt_units_per_deg)))
        return pan, tilt, round(pos.zoom * c.zoom_max)

    async def move_to(self, pan_deg: float, tilt_deg: float, zoom: float, wait: bool = False) -> PtzPosition:
        pos = self.limits.clamp(pan_deg, tilt_deg, zoom)
        pan, tilt, z = self._units(pos)
        a = self.cfg.address
        await self._request(
            visca.pan_tilt_absolute(a, pan, tilt, self.cfg.pan_speed, self.cfg.tilt_speed),
            f"pan-tilt to ({pos.pan_deg:.1f}, {pos.tilt_deg:.1f}) deg",
            wait=wait,
        )
        await self._request(visca.zoom_direct(a, z), f"zoom to {pos.zoom:.2f}", wait=wait)
        return pos

    async def position(self) -> PtzPosition:
        a, c = self.cfg.address, self.cfg
        try:
            pan, tilt = visca.pan_tilt_answer(
                await self._request(visca.inquire_pan_tilt(a), "the pan-tilt inquiry", inquiry=True)
            )
            zoom = visca.zoom_answer(await self._request(visca.inquire_zoom(a), "the zoom inquiry", inquiry=True))
        except visca.ViscaProtocolError as e:
            raise PtzError(f"{self.where}: garbage in a position answer: {e}") from None
        return PtzPosition(pan / c.pan_units_per_deg, tilt / c.tilt_units_per_deg, zoom / c.zoom_max)

    async def stop(self) -> None:
        a = self.cfg.address
        await self._request(visca.pan_tilt_stop(a), "pan-tilt stop")
        await self._request(visca.zoom_stop(a), "zoom stop")


@register("ptz", "visca-ip", ViscaIpConfig)
def open_visca_ip(name: str, cfg: ViscaIpConfig, ctx: DriverContext) -> ViscaPtz:
    return ViscaPtz(name, cfg, UdpTransport(cfg.host, cfg.port))


@register("ptz", "visca-tcp", ViscaTcpConfig)
def open_visca_tcp(name: str, cfg: ViscaTcpConfig, ctx: DriverContext) -> ViscaPtz:
    return ViscaPtz(name, cfg, TcpTransport(cfg.host, cfg.port))


@register("ptz", "visca-serial", ViscaSerialConfig)
def open_visca_serial(name: str, cfg: ViscaSerialConfig, ctx: DriverContext) -> ViscaPtz:
    return ViscaPtz(name, cfg, SerialTransport(cfg.device, cfg.baud))
