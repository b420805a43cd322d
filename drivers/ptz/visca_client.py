"""VISCA PTZ cameras (PTZOptics, Sony, Avonic, Lumens, ...) over IP (Sony VISCA over UDP, port 52381), over
TCP (raw VISCA, e.g. port 5678) and over a serial line (RS-232/RS-422, 9600 baud 8N1).

``[ptz.NAME] type = "visca-ip" | "visca-tcp" | "visca-serial"``. One request is in flight at a time; each
waits ``timeout_s`` for its answer: a camera that does not answer, or answers garbage, raises
:class:`drivers.ptz.base.PtzError` (never a hang; it listens a little longer, 1-2 s, to tell a camera that
answers late, and says so, from one that does not answer), naming the head (``[ptz.NAME]``), its address and
what is wrong. A command the camera refuses but could not execute now raises
:class:`drivers.ptz.base.PtzRefused` (the camera works). A camera that closes a TCP connection after an
answer is connected again at the next request. Positions are converted with ``pan_units_per_deg``,
``tilt_units_per_deg`` and ``zoom_max`` (the camera's manual gives them; the defaults are PTZOptics').
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import termios
from typing import Any, Literal

from pydantic import Field, field_validator

from common.settings import host_or_ip
from drivers.ptz import visca
from drivers.ptz.base import PtzError, PtzLimits, PtzPosition, PtzRefused, PtzSection
from drivers.registry import DriverContext, register

log = logging.getLogger(__name__)

# VISCA errors that refuse one command of a camera that works: it cannot execute it now or there (beyond its
# travel, in a mode that forbids it), or it is busy. The next command may well be taken: PtzRefused. A message
# length or syntax error is not among them: the camera does not understand what this driver sends (a wrong
# zoom_max, speed or VISCA dialect in the config), which every later command would meet too: a PtzError, the
# head reported lost with the reason until the config is mended.
REFUSALS = {0x03, 0x04, 0x05, 0x41}
# how long past ``timeout_s`` a request still listens, to tell a late answer from none
LATE_S = (1.0, 2.0)  # at least, at most


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


class _Fault(Exception):
    """What went wrong on a transport, in words; :class:`ViscaPtz` names the head and its address.
    ``closed``: the camera closed the connection (a new one may work)."""

    def __init__(self, reason: str, closed: bool = False) -> None:
        super().__init__(reason)
        self.closed = closed


def _words(e: OSError) -> str:
    """An OSError as a reader says it: "network is unreachable", not "[Errno 101] Network is unreachable"."""
    if isinstance(e, socket.gaierror):
        return f"no such host name ({(e.strerror or str(e)).lower()})"
    # (asyncio's "Connect call failed ('10.0.0.9', 5678)" is ECONNREFUSED: the errno says it in words)
    text = (os.strerror(e.errno) if e.errno else "") or e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]


class _Transport:
    where = ""

    async def open(self, timeout: float) -> None: ...

    def peer_closed(self) -> bool:
        """The camera has closed the connection since its last answer."""
        return False

    def network_error(self) -> str:
        """An error the network reported while waiting (UDP: ICMP port unreachable), in words, or ""."""
        return ""

    async def send(self, msg: bytes, inquiry: bool) -> None: ...

    async def recv(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None: ...


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.error = ""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable: wait for the timeout
        self.error = _words(exc) if isinstance(exc, OSError) else str(exc)


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
        try:  # (a host name is looked up here: bounded too)
            transport, _ = await asyncio.wait_for(
                loop.create_datagram_endpoint(lambda: self._proto, remote_addr=(self.host, self.port)), timeout
            )
        except TimeoutError:
            raise _Fault(f"cannot reach the camera: no address for {self.host} within {timeout:g} s") from None
        except OSError as e:
            raise _Fault(f"cannot reach the camera: {_words(e)}") from None
        # reset the camera's sequence number (cameras that do not answer it are still usable)
        self._seq = 0
        self._transport = transport
        transport.sendto(visca.ip_pack(visca.PT_CONTROL, 0, visca.CONTROL_RESET))

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
                raise _Fault(f"the camera reports {what}")

    def network_error(self) -> str:
        return self._proto.error

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
            try:
                data = await self._reader.read(64)
            except OSError as e:  # reset: the camera closed the connection while we wrote to it
                raise _Fault(f"the camera closed the connection ({_words(e)})", closed=True) from None
            if not data:
                raise _Fault("the camera closed the connection", closed=True)
            self._ready += self._split.feed(data)
        return self._ready.pop(0)

    def peer_closed(self) -> bool:
        return self._reader is not None and self._reader.at_eof()

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
            raise _Fault(f"cannot connect: no connection within {timeout:g} s") from None
        except OSError as e:
            raise _Fault(f"cannot connect: {_words(e)}") from None


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
            raise _Fault(f"cannot open the serial line: {_words(e) if isinstance(e, OSError) else e}") from None
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
                try:
                    await self._t.open(self.cfg.timeout_s)
                except _Fault as e:
                    raise PtzError(f"{self.where}: {e}") from None
                except OSError as e:
                    raise PtzError(f"{self.where}: cannot reach the camera: {_words(e)}") from None
                self._open = True

    async def close(self) -> None:
        self._t.close()
        self._open = False

    async def _request(self, msg: bytes, what: str, inquiry: bool = False, wait: bool = False) -> bytes:
        """Send one message and wait for its answer: an inquiry's data, or a command's ACK (and its
        completion with ``wait``). Stale answers to earlier commands are skipped.

        Some cameras (raw VISCA on TCP) close the connection after each answer: a connection the camera has
        closed is opened again, once and at once, and the message sent on the new one (every message this
        driver sends may be sent twice: absolute moves, stops, inquiries). Only when a fresh connection
        fails too is the camera reported (:class:`PtzError`)."""
        async with self._lock:
            retried = False
            while True:
                fresh = not self._open
                if not fresh and self._t.peer_closed():  # closed after its last answer: a new connection
                    await self.close()
                    fresh = retried = True
                await self.open()
                try:
                    return await self._exchange(msg, what, inquiry, wait)
                except _Fault as e:
                    if e.closed:
                        await self.close()  # whatever happens, the next request opens a new connection
                    if not e.closed or fresh or retried:
                        raise PtzError(f"{self.where}: {e}") from None
                    log.info("%s: %s: connecting again", self.where, e)
                    retried = True
                except OSError as e:
                    await self.close()
                    raise PtzError(f"{self.where}: lost the connection: {_words(e)}") from None

    async def _exchange(self, msg: bytes, what: str, inquiry: bool, wait: bool) -> bytes:
        await self._t.send(msg, inquiry)
        loop = asyncio.get_running_loop()
        timeout = self.cfg.timeout_s
        start = loop.time()
        deadline = start + timeout
        late = False  # past timeout_s, still listening a little to tell a late answer from none
        socket = -1
        while True:
            left = deadline - loop.time()
            try:
                raw = await asyncio.wait_for(self._t.recv(), max(left, 0.0))
            except TimeoutError:
                if socket >= 0:
                    raise PtzError(
                        f"{self.where}: no completion to {what} within {self.cfg.move_timeout_s:g} s "
                        f"(raise [ptz.{self.name}] move_timeout_s for a slow head)"
                    ) from None
                if not late:
                    late = True
                    deadline = loop.time() + min(max(timeout, LATE_S[0]), LATE_S[1])
                    continue
                why = self._t.network_error()
                raise PtzError(
                    f"{self.where}: no answer to {what} within {timeout:g} s{f': {why}' if why else ''} "
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
            answered = False
            if r.kind == "error":
                if socket >= 0 and r.socket not in (0, socket):
                    continue  # about an earlier command
                answered = True
            elif inquiry:
                if not (r.kind == "completion" and r.socket == 0 and r.data):
                    continue  # an ACK or completion of an earlier command
                answered = True
            elif r.kind == "ack" and socket < 0:
                answered = True
            if answered and late:
                raise PtzError(
                    f"{self.where}: the camera answered {what} after {loop.time() - start:.1f} s, after the "
                    f"timeout_s ({timeout:g} s): raise [ptz.{self.name}] timeout_s"
                )
            if r.kind == "error":
                code = r.data[0] if r.data else -1
                if code in REFUSALS:
                    raise PtzRefused(f"{self.where}: the camera refused {what}: {r.error}")
                raise PtzError(f"{self.where}: the camera refused {what}: {r.error}")
            if inquiry:
                return r.data
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
