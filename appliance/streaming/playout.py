"""The RTP playout-delay header extension on the box's video: how long a receiver may hold frames.

Chromium keeps received frames in its jitter buffer for an estimated jitter plus decode and render time
(25-90 ms measured on loopback with a loaded machine: `roombox bench stream`). With the extension
(``http://www.webrtc.org/experiments/rtp-hdrext/playout-delay``: min and max in 10 ms units, 12 bits each)
the sender bounds that delay; min 0, max 0 makes Chromium decode and show each frame as soon as it is
complete. aiortc does not know the extension: :func:`offer_playout_delay` adds it to aiortc's video
header extensions (so that answers and offers negotiate it) and :func:`send_playout_delay` gives one
sender a header-extension map that writes it on every packet.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpParameters, rtp
from aiortc import codecs as aiortc_codecs

PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
PLAYOUT_DELAY_ID = 6  # in our own offers; aiortc's video uses 1 (mid) and 3 (abs-send-time), audio 1 and 2
MAX_MS = 40950  # 12 bits of 10 ms


def offer_playout_delay() -> None:
    """Let aiortc negotiate the extension on video (idempotent; the remote's id wins in an answer)."""
    video = aiortc_codecs.HEADER_EXTENSIONS["video"]
    if not any(x.uri == PLAYOUT_DELAY_URI for x in video):
        video.append(RTCRtpHeaderExtensionParameters(id=PLAYOUT_DELAY_ID, uri=PLAYOUT_DELAY_URI))


def playout_delay_bytes(min_ms: int, max_ms: int) -> bytes:
    """The extension's 3 bytes: min and max playout delay in 10 ms units (12 bits each, rounded up)."""
    if not 0 <= min_ms <= max_ms <= MAX_MS:
        raise ValueError(f"playout delay must be 0 <= min <= max <= {MAX_MS} ms, got {min_ms}..{max_ms}")
    lo, hi = -(-min_ms // 10), -(-max_ms // 10)
    return ((lo << 12) | hi).to_bytes(3, "big")


class PlayoutDelayMap(rtp.HeaderExtensionsMap):
    """aiortc's header-extension map, plus the playout delay on every packet once negotiated."""

    def __init__(self, min_ms: int, max_ms: int) -> None:
        super().__init__()
        self.value = playout_delay_bytes(min_ms, max_ms)
        self.id: int | None = None

    def configure(self, parameters: RTCRtpParameters) -> None:
        super().configure(parameters)
        self.id = next((x.id for x in parameters.headerExtensions if x.uri == PLAYOUT_DELAY_URI), None)

    def set(self, values: rtp.HeaderExtensions) -> tuple[int, bytes]:
        profile, data = super().set(values)
        if self.id is None:
            return profile, data
        extensions = rtp.unpack_header_extensions(profile, data) if data else []
        return rtp.pack_header_extensions([*extensions, (self.id, self.value)])


def send_playout_delay(sender: Any, min_ms: int, max_ms: int) -> None:
    """Make an ``RTCRtpSender`` that has not started yet write the playout delay on its packets (when the
    remote side negotiated it). Uses the sender's private map: aiortc has no API for extensions."""
    offer_playout_delay()
    if getattr(sender, "_RTCRtpSender__started", False):
        raise RuntimeError("the sender has started: set its playout delay before the connection is negotiated")
    sender._RTCRtpSender__rtp_header_extensions_map = PlayoutDelayMap(min_ms, max_ms)
