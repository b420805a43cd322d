"""Network cameras over RTSP (most room PTZ cameras speak it): PyAV (FFmpeg) on a reader thread.

``[cameras.NAME] type = "rtsp"``, ``url = "rtsp://..."``. Every network wait is bounded: opening the stream
(``open_timeout_s``) and each read (``read_timeout_s``), so a dead or silent server gives
:class:`drivers.base.SourceLost` and never hangs the box; the supervisor reconnects. Frames are stamped with
the box's capture clock when decoded (:mod:`drivers.capture`); only the newest is converted to RGB.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from common.clock import SYSTEM_CLOCK, Clock
from drivers.base import CameraSection, SourceLost
from drivers.capture import CameraFormatError, LatestFrameCamera
from drivers.registry import DriverContext, register


class RtspCameraConfig(CameraSection):
    """A network camera's RTSP stream. ``width``/``height`` must be the stream's picture size (the camera's
    own setting); a stream of another size is refused with a message naming both."""

    type: Literal["rtsp"] = "rtsp"
    url: str = Field(
        ...,
        pattern=r"^rtsps?://\S+$",
        max_length=1000,
        title="Stream URL",
        description="rtsp://[user:password@]host[:port]/path",
    )
    transport: Literal["tcp", "udp"] = Field(
        "tcp",
        title="RTP transport",
        description="tcp (interleaved in the RTSP connection) passes firewalls and loses nothing",
    )
    open_timeout_s: float = Field(10.0, gt=0.0, le=120.0, title="Connect timeout (s)")
    read_timeout_s: float = Field(5.0, gt=0.0, le=60.0, title="Silence before the stream counts as lost (s)")


def _redact(url: str) -> str:
    """The URL without its password (for messages)."""
    head, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{head}{sep}{user}:***@{host}"


class RtspGrabber:
    """PyAV over one RTSP URL; every call on the reader thread."""

    def __init__(
        self,
        url: str,
        transport: str,
        open_timeout_s: float,
        read_timeout_s: float,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        self.url, self.transport = url, transport
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.width, self.height = width, height
        self._container: Any = None
        self._frames: Any = None
        self._frame: Any = None

    def open(self) -> None:
        import av

        options = {
            "rtsp_transport": self.transport,
            # FFmpeg's own socket timeout (microseconds), beside PyAV's interrupt timeouts. It bounds every wait on
            # the socket, the RTSP handshake's too, and some servers (GStreamer's) answer DESCRIBE only once their
            # stream has passed a keyframe: seconds on a slow camera (2 fps, a keyframe every 15 frames: 7.5 s).
            # So the open is bounded by open_timeout_s (as PyAV bounds it); reads stay bounded by read_timeout_s,
            # PyAV's read timeout, which fires first.
            "timeout": str(int(max(self.open_timeout_s, self.read_timeout_s) * 1e6)),
            # start on the first picture rather than after FFmpeg's default 5 s of probing (a stream whose first
            # keyframe comes later opens all the same, its size from the SDP or unknown: frames follow once
            # the keyframe does, bounded by the reads' timeout)
            "analyzeduration": "1000000",
            "probesize": "1000000",
        }
        try:
            self._container = av.open(self.url, options=options, timeout=(self.open_timeout_s, self.read_timeout_s))
        except av.error.ExitError:
            raise SourceLost(
                f"{_redact(self.url)}: cannot open the stream: no answer within {self.open_timeout_s:g} s"
            ) from None
        except av.error.InvalidDataError:  # what FFmpeg says of a server that answered nothing it reads
            raise SourceLost(
                f"{_redact(self.url)}: cannot open the stream: no RTSP answer it can read within "
                f"{max(self.open_timeout_s, self.read_timeout_s):g} s (a server that stalls, e.g. one that waits "
                "for its stream's next keyframe before it answers: raise open_timeout_s; has no stream there; or "
                "does not speak RTSP)"
            ) from None
        except (av.error.FFmpegError, OSError) as e:  # without FFmpeg's error number and the URL again
            raise SourceLost(f"{_redact(self.url)}: cannot open the stream: {e.strerror or e}") from None
        if not self._container.streams.video:
            self.close()
            raise SourceLost(f"{_redact(self.url)}: the stream has no video")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)

    def grab(self) -> bool:
        import av

        try:
            self._frame = next(self._frames, None)
        except av.error.ExitError:  # PyAV's read timeout
            raise SourceLost(f"{_redact(self.url)}: no data for {self.read_timeout_s:g} s") from None
        except (av.error.FFmpegError, OSError) as e:
            raise SourceLost(f"{_redact(self.url)}: {e}") from None
        if self._frame is None:
            raise SourceLost(f"{_redact(self.url)}: the server ended the stream")
        f = self._frame
        if self.width is not None and (f.width, f.height) != (self.width, self.height):
            raise CameraFormatError(
                f"{_redact(self.url)}: the stream is {f.width}x{f.height} but the config "
                f"says width = {self.width}, height = {self.height}; set those"
            )
        return True

    def retrieve(self) -> np.ndarray:
        image: np.ndarray = self._frame.to_ndarray(format="rgb24")
        return image

    def close(self) -> None:
        container, self._container, self._frames, self._frame = self._container, None, None, None
        if container is not None:
            container.close()


def open_rtsp(
    url: str,
    name: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    transport: str = "tcp",
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    width: int | None = None,
    height: int | None = None,
) -> LatestFrameCamera:
    """A VideoSource over an RTSP stream (``width``/``height`` None: any picture size)."""
    grabber = RtspGrabber(url, transport, open_timeout_s, read_timeout_s, width, height)
    return LatestFrameCamera(
        name or f"rtsp:{_redact(url)}",
        grabber,
        clock,
        stall_s=read_timeout_s + 1.0,
        open_timeout_s=open_timeout_s + read_timeout_s + 5.0,
    )


@register("camera", "rtsp", RtspCameraConfig)
def open_rtsp_camera(name: str, cfg: RtspCameraConfig, ctx: DriverContext) -> LatestFrameCamera:
    return open_rtsp(
        cfg.url, name, ctx.clock, cfg.transport, cfg.open_timeout_s, cfg.read_timeout_s, cfg.width, cfg.height
    )
