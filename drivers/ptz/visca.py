"""The VISCA byte protocol, pure: commands and inquiries encoded, replies parsed, and the Sony VISCA-over-IP
header. No I/O here (the client is :mod:`drivers.ptz.visca_client`, the simulator :mod:`drivers.ptz.simulator`).

A VISCA message is ``header, bytes..., 0xFF``: ``0x8x`` from the controller to camera ``x`` (1-7, ``0x88``
broadcast), ``0x(x+8)0`` from camera ``x``. Replies: ACK ``y0 4s FF``, completion ``y0 5s FF`` (an inquiry's
completion carries its data: ``y0 50 data FF``), error ``y0 6s ee FF`` (``s`` the command socket). Positions
are 16-bit two's-complement values sent as four nibbles ``0p 0q 0r 0s``.

VISCA over IP (Sony; UDP port 52381) puts an 8-byte header before each message: payload type (2 bytes, big
endian), payload length (2), sequence number (4); a reply carries the sequence number of its command.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

TERMINATOR = 0xFF
MAX_MESSAGE = 16  # the longest VISCA message (3..16 bytes)

# VISCA over IP payload types
PT_COMMAND = 0x0100
PT_INQUIRY = 0x0110
PT_REPLY = 0x0111
PT_SETTING = 0x0120
PT_CONTROL = 0x0200
PT_CONTROL_REPLY = 0x0201
IP_HEADER = struct.Struct(">HHI")
CONTROL_RESET = b"\x01"  # control command: reset the sequence number
CONTROL_ERROR_SEQUENCE = b"\x0f\x01"  # control reply: abnormal sequence number
CONTROL_ERROR_MESSAGE = b"\x0f\x02"  # control reply: abnormal message

ERRORS = {
    0x01: "message length error",
    0x02: "syntax error",
    0x03: "command buffer full",
    0x04: "command cancelled",
    0x05: "no socket (to be cancelled)",
    0x41: "command not executable",
}

PAN_SPEED_MAX = 0x18
TILT_SPEED_MAX = 0x14


class ViscaProtocolError(ValueError):
    """Bytes that are not a VISCA message (or not a VISCA-over-IP datagram)."""


# --- values ---


def nibbles(value: int, n: int = 4) -> bytes:
    """``value`` (signed, two's complement in ``4 n`` bits) as ``n`` bytes ``0x0?``, most significant first."""
    lo, hi = -(1 << (4 * n - 1)), (1 << (4 * n)) - 1
    if not lo <= value <= hi:
        raise ValueError(f"{value} does not fit in {n} nibbles")
    v = value & ((1 << (4 * n)) - 1)
    return bytes((v >> (4 * (n - 1 - i))) & 0x0F for i in range(n))


def from_nibbles(data: bytes, signed: bool = True) -> int:
    """The value of ``0p 0q 0r 0s ...`` bytes (two's complement when ``signed``)."""
    if any(b > 0x0F for b in data):
        raise ViscaProtocolError(f"not nibbles: {data.hex(' ')}")
    v = 0
    for b in data:
        v = (v << 4) | b
    bits = 4 * len(data)
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def _check_address(address: int) -> int:
    if not 1 <= address <= 7:
        raise ValueError(f"VISCA address {address}: must be 1..7")
    return 0x80 | address


def _speed(v: int, top: int, what: str) -> int:
    if not 1 <= v <= top:
        raise ValueError(f"{what} speed {v}: must be 1..{top}")
    return v


# --- commands (controller -> camera) ---


def pan_tilt_absolute(
    address: int, pan: int, tilt: int, pan_speed: int = PAN_SPEED_MAX, tilt_speed: int = TILT_SPEED_MAX
) -> bytes:
    """``8x 01 06 02 VV WW 0Y 0Y 0Y 0Y 0Z 0Z 0Z 0Z FF``: go to pan ``pan``, tilt ``tilt`` (camera units)."""
    return (
        bytes(
            [
                _check_address(address),
                0x01,
                0x06,
                0x02,
                _speed(pan_speed, PAN_SPEED_MAX, "pan"),
                _speed(tilt_speed, TILT_SPEED_MAX, "tilt"),
            ]
        )
        + nibbles(pan)
        + nibbles(tilt)
        + b"\xff"
    )


def pan_tilt_stop(address: int, pan_speed: int = 1, tilt_speed: int = 1) -> bytes:
    """``8x 01 06 01 VV WW 03 03 FF``."""
    return bytes([_check_address(address), 0x01, 0x06, 0x01, pan_speed, tilt_speed, 0x03, 0x03, 0xFF])


def pan_tilt_home(address: int) -> bytes:
    return bytes([_check_address(address), 0x01, 0x06, 0x04, 0xFF])


def zoom_direct(address: int, position: int) -> bytes:
    """``8x 01 04 47 0p 0q 0r 0s FF``: zoom to ``position`` (0 = widest)."""
    if position < 0:
        raise ValueError(f"zoom position {position}: must be >= 0")
    return bytes([_check_address(address), 0x01, 0x04, 0x47]) + nibbles(position) + b"\xff"


def zoom_stop(address: int) -> bytes:
    return bytes([_check_address(address), 0x01, 0x04, 0x07, 0x00, 0xFF])


def inquire_pan_tilt(address: int) -> bytes:
    """``8x 09 06 12 FF``; answer ``y0 50 0w 0w 0w 0w 0z 0z 0z 0z FF``."""
    return bytes([_check_address(address), 0x09, 0x06, 0x12, 0xFF])


def inquire_zoom(address: int) -> bytes:
    """``8x 09 04 47 FF``; answer ``y0 50 0p 0q 0r 0s FF``."""
    return bytes([_check_address(address), 0x09, 0x04, 0x47, 0xFF])


def if_clear() -> bytes:
    """``88 01 00 01 FF`` (broadcast): clear the command buffers."""
    return bytes([0x88, 0x01, 0x00, 0x01, 0xFF])


# --- replies (camera -> controller) ---

ReplyKind = Literal["ack", "completion", "error"]


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    address: int  # the camera's address (1-7)
    socket: int
    data: bytes = b""  # an inquiry's answer (completion), or the error code (error)

    @property
    def error(self) -> str:
        code = self.data[0] if self.data else -1
        return ERRORS.get(code, f"error 0x{code:02x}")


def parse_reply(msg: bytes) -> Reply:
    """One camera-to-controller message; raises :class:`ViscaProtocolError` on anything else."""
    if len(msg) < 3 or msg[-1] != TERMINATOR or TERMINATOR in msg[:-1]:
        raise ViscaProtocolError(f"not a VISCA message: {msg[:24].hex(' ')}")
    if len(msg) > MAX_MESSAGE:
        raise ViscaProtocolError(f"VISCA message too long ({len(msg)} bytes): {msg[:24].hex(' ')}")
    head, kind = msg[0], msg[1]
    if head & 0x8F != 0x80 or not 9 <= head >> 4 <= 0x0F:
        raise ViscaProtocolError(f"not a camera's reply header: {msg[:24].hex(' ')}")
    address = (head >> 4) - 8
    socket, body = kind & 0x0F, msg[2:-1]
    if kind & 0xF0 == 0x40 and not body:
        return Reply("ack", address, socket)
    if kind & 0xF0 == 0x50:
        return Reply("completion", address, socket, bytes(body))
    if kind & 0xF0 == 0x60 and len(body) == 1:
        return Reply("error", address, socket, bytes(body))
    raise ViscaProtocolError(f"not a VISCA reply: {msg[:24].hex(' ')}")


def ack(address: int, socket: int) -> bytes:
    return bytes([0x80 | (address + 8) << 4, 0x40 | socket, 0xFF])


def completion(address: int, socket: int, data: bytes = b"") -> bytes:
    return bytes([0x80 | (address + 8) << 4, 0x50 | socket]) + data + b"\xff"


def error(address: int, socket: int, code: int) -> bytes:
    return bytes([0x80 | (address + 8) << 4, 0x60 | socket, code, 0xFF])


def pan_tilt_answer(data: bytes) -> tuple[int, int]:
    """The (pan, tilt) of a pan-tilt inquiry's completion data (8 nibbles)."""
    if len(data) != 8:
        raise ViscaProtocolError(f"a pan-tilt position has 8 bytes, got {data.hex(' ') or 'none'}")
    return from_nibbles(data[:4]), from_nibbles(data[4:])


def zoom_answer(data: bytes) -> int:
    if len(data) != 4:
        raise ViscaProtocolError(f"a zoom position has 4 bytes, got {data.hex(' ') or 'none'}")
    return from_nibbles(data, signed=False)


class MessageSplitter:
    """Cuts a byte stream (TCP, serial) into VISCA messages at each 0xFF; too long a run without one is
    garbage (:class:`ViscaProtocolError`)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while (i := self._buf.find(TERMINATOR)) >= 0:
            out.append(bytes(self._buf[: i + 1]))
            del self._buf[: i + 1]
        if len(self._buf) > MAX_MESSAGE:
            junk = bytes(self._buf[:24])
            self._buf.clear()
            raise ViscaProtocolError(f"{len(junk)}+ bytes without a VISCA terminator: {junk.hex(' ')}")
        return out


# --- commands as the camera sees them (for the simulator) ---


@dataclass(frozen=True)
class Command:
    kind: str  # pan_tilt_absolute, pan_tilt_drive, home, zoom_direct, zoom_stop, inq_pan_tilt, inq_zoom, if_clear
    address: int
    values: tuple[int, ...] = ()
    inquiry: bool = False


def parse_command(msg: bytes) -> Command:
    """A controller-to-camera message; :class:`ViscaProtocolError` for malformed bytes, ``Command("unknown")``
    for a well-formed message this module does not know (a camera answers it with a syntax error)."""
    if len(msg) < 3 or msg[-1] != TERMINATOR or TERMINATOR in msg[:-1] or len(msg) > MAX_MESSAGE:
        raise ViscaProtocolError(f"not a VISCA message: {msg[:24].hex(' ')}")
    if msg[0] & 0xF0 != 0x80:
        raise ViscaProtocolError(f"not a controller's header: {msg[:24].hex(' ')}")
    address, body = msg[0] & 0x0F, msg[1:-1]
    try:
        if body[:3] == b"\x01\x06\x02" and len(body) == 13:
            return Command(
                "pan_tilt_absolute", address, (from_nibbles(body[5:9]), from_nibbles(body[9:13]), body[3], body[4])
            )
        if body[:3] == b"\x01\x06\x01" and len(body) == 7:
            return Command("pan_tilt_drive", address, (body[3], body[4], body[5], body[6]))
        if body == b"\x01\x06\x04":
            return Command("home", address)
        if body[:3] == b"\x01\x04\x47" and len(body) == 7:
            return Command("zoom_direct", address, (from_nibbles(body[3:7], signed=False),))
        if body == b"\x01\x04\x07\x00":
            return Command("zoom_stop", address)
        if body == b"\x09\x06\x12":
            return Command("inq_pan_tilt", address, inquiry=True)
        if body == b"\x09\x04\x47":
            return Command("inq_zoom", address, inquiry=True)
        if msg == if_clear():
            return Command("if_clear", 8)
    except ViscaProtocolError:
        pass
    return Command("unknown", address, inquiry=bool(body) and body[0] == 0x09)


# --- VISCA over IP ---


def ip_pack(payload_type: int, sequence: int, payload: bytes) -> bytes:
    return IP_HEADER.pack(payload_type, len(payload), sequence & 0xFFFFFFFF) + payload


def ip_unpack(datagram: bytes) -> tuple[int, int, bytes]:
    """(payload type, sequence number, payload) of a VISCA-over-IP datagram."""
    if len(datagram) < IP_HEADER.size + 1:
        raise ViscaProtocolError(f"a VISCA-over-IP datagram has 9+ bytes, got {datagram[:24].hex(' ')}")
    ptype, length, seq = IP_HEADER.unpack_from(datagram)
    payload = datagram[IP_HEADER.size :]
    if ptype not in (PT_COMMAND, PT_INQUIRY, PT_REPLY, PT_SETTING, PT_CONTROL, PT_CONTROL_REPLY):
        raise ViscaProtocolError(f"unknown VISCA-over-IP payload type 0x{ptype:04x}")
    if length != len(payload) or length > MAX_MESSAGE:
        raise ViscaProtocolError(f"VISCA-over-IP payload length {length}, got {len(payload)} bytes")
    return ptype, seq, payload
