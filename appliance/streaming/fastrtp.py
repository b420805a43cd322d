"""A connection's RTP for the shared encoder's video, with less work per viewer than aiortc's sender loop.

aiortc's ``RTCRtpSender`` packetizes every frame again for each connection, makes an ``RtpPacket`` object per
packet, serializes its header extensions per packet (and reads the NTP clock twice per packet). With frames
encoded once and sent to many viewers, that per-viewer Python work is what grows with the viewers
(``roombox bench stream``). Here the shared encoder's line packetizes each frame once
(:class:`~appliance.streaming.encoder.EncodedFrame`: the RTP payloads, shared by every connection) and each
connection's loop (:func:`install`, replacing the sender's ``_run_rtp``) only writes a 12-byte header per
packet, with the header extensions serialized once per frame (the mid, the send time, the playout delay), and
hands it to SRTP and the ICE transport. Sequence numbers, timestamps, the RTCP sender report's counters, NACK
retransmission (an ``RtpPacket`` is made only for a packet asked for again) and the sender's stop work as
in aiortc.

aiortc has no API for this: it uses the sender's private attributes (checked by :func:`install`, which
leaves aiortc's own loop in place when they are not there).
"""

from __future__ import annotations

import asyncio
import logging
from struct import pack
from typing import TYPE_CHECKING, Any

from aiortc import clock, rtp
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE
from aiortc.utils import random32

if TYPE_CHECKING:
    from appliance.streaming.encoder import EncodedVideoTrack

log = logging.getLogger(__name__)

_P = "_RTCRtpSender__"
_NEEDED: tuple[str, ...] = ("rtp_started", "rtp_exited", "mid", "rtp_header_extensions_map", "rtp_history", "track")
_NEEDED += ("ntp_timestamp", "rtp_timestamp", "octet_count", "packet_count")


def install(sender: Any, track: EncodedVideoTrack) -> bool:
    """Make ``sender`` (an ``RTCRtpSender`` not started yet) send ``track``'s shared packets with
    :func:`run_rtp`. Returns False (aiortc's loop stays) when the sender lacks what it needs."""
    if not all(hasattr(sender, _P + name) for name in _NEEDED) or not hasattr(sender, "_retransmit"):
        return False
    history: dict[int, tuple[int, int, int, bytes, rtp.HeaderExtensions, int]] = {}
    retransmit = sender._retransmit

    async def run(codec: RTCRtpCodecParameters) -> None:
        await run_rtp(sender, track, codec, history)

    async def retransmit_one(sequence_number: int) -> None:
        sent = history.get(sequence_number % RTP_HISTORY_SIZE)
        if sent is not None and sent[0] == sequence_number:
            seq, timestamp, marker, payload, extensions, payload_type = sent
            packet = rtp.RtpPacket(payload_type=payload_type, marker=marker, sequence_number=seq, timestamp=timestamp)
            packet.ssrc = sender._ssrc
            packet.payload = payload
            packet.extensions = extensions
            getattr(sender, _P + "rtp_history")[seq % RTP_HISTORY_SIZE] = packet
            await retransmit(sequence_number)

    sender._run_rtp = run
    sender._retransmit = retransmit_one
    return True


async def run_rtp(
    sender: Any,
    track: EncodedVideoTrack,
    codec: RTCRtpCodecParameters,
    history: dict[int, tuple[int, int, int, bytes, rtp.HeaderExtensions, int]],
) -> None:
    """The sender's RTP loop: each shared frame's payloads as RTP packets, through SRTP, to the transport."""
    getattr(sender, _P + "rtp_started").set()
    ext_map: rtp.HeaderExtensionsMap = getattr(sender, _P + "rtp_header_extensions_map")
    payload_type = int(codec.payloadType or 0)
    sequence_number = random_sequence_number()
    origin = random32()
    try:
        while True:
            frame = await track.next_frame()
            if not sender._enabled:
                continue
            timestamp = (origin + frame.timestamp) & 0xFFFFFFFF
            ntp = clock.current_ntp_time()
            extensions = rtp.HeaderExtensions()
            extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
            extensions.mid = getattr(sender, _P + "mid")
            profile, value = ext_map.set(extensions)  # once per frame: the same on each of its packets
            first = 0x90 if value else 0x80  # version 2, extension bit
            tail = pack("!HH", profile, len(value) >> 2) + value if value else b""
            ssrc = sender._ssrc
            send = sender.transport._send_rtp
            last = len(frame.payloads) - 1
            octets = 0
            for i, payload in enumerate(frame.payloads):
                marker = 1 if i == last else 0
                data = pack("!BBHLL", first, (marker << 7) | payload_type, sequence_number, timestamp, ssrc)
                history[sequence_number % RTP_HISTORY_SIZE] = (
                    sequence_number,
                    timestamp,
                    marker,
                    payload,
                    extensions,
                    payload_type,
                )
                await send(data + tail + payload)
                octets += len(payload)
                sequence_number = (sequence_number + 1) & 0xFFFF
            setattr(sender, _P + "ntp_timestamp", ntp)
            setattr(sender, _P + "rtp_timestamp", timestamp)
            setattr(sender, _P + "octet_count", getattr(sender, _P + "octet_count") + octets)
            setattr(sender, _P + "packet_count", getattr(sender, _P + "packet_count") + last + 1)
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:  # as aiortc: the exit event must be set, or the sender's stop() hangs
        log.exception("RTP sender loop failed")
    own = getattr(sender, _P + "track")
    if own is not None:
        own.stop()
        setattr(sender, _P + "track", None)
    getattr(sender, _P + "rtp_exited").set()
