"""WHIP (RFC 9725): publish the room to any WHIP ingest.

The box POSTs its SDP offer (``application/sdp``, all ICE candidates in it: no trickle) with
``Authorization: Bearer <token>``; the ingest answers ``201 Created`` with the SDP answer and a
``Location`` (the session's resource URL), which the box DELETEs when it leaves. ICE servers come from
``[whip] ice_servers``. Errors are one line naming the endpoint and what is wrong; those retrying cannot
fix (401/403: the token; other 4xx; an answer that is not usable SDP) stop the publisher in ``failed``;
5xx, 408, 429 and unreachable endpoints are retried with back-off (``Retry-After`` honoured).

Wiring (the live box): ``WhipPublisher.from_config(cfg.whip, video, audio, on_state=...)``, then
``await pub.start()`` and, on the way out, ``await pub.stop()``.
"""

from __future__ import annotations

import email.utils
import logging
import time
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from appliance.config import WhipConfig
from appliance.streaming.connector import ConnectError, Connector, StateCallback, describe_error
from appliance.streaming.encoder import EncodedVideo
from appliance.streaming.hub import AudioHub
from common.text import excerpt, page_excerpt

log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 425, 429}
MAX_ANSWER_BYTES = 256 * 1024  # an SDP answer is a few kB; a bigger one is refused before it is read whole


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date); None when absent or unreadable (ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(text: str, content_type: str = "") -> str:
    text = page_excerpt(text, content_type)
    return ": " + text if text else ""


class WhipPublisher(Connector):
    """Publishes the shared encoder's video (and the room's sound) to a WHIP endpoint."""

    kind = "whip"

    def __init__(
        self, url: str, video: EncodedVideo, audio: AudioHub | None, token: str = "", **kwargs: object
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"WHIP endpoint {url!r}: expected an http:// or https:// URL")
        super().__init__(video, audio, **kwargs)  # type: ignore[arg-type]
        self.url = url
        self.token = token
        self.resource: str | None = None

    @classmethod
    def from_config(
        cls, cfg: WhipConfig, video: EncodedVideo, audio: AudioHub | None, on_state: StateCallback | None = None
    ) -> WhipPublisher:
        if not cfg.url:
            raise ValueError("[whip.url] is empty: give the WHIP endpoint (or roombox demo --whip URL)")
        return cls(
            cfg.url,
            video,
            audio,
            token=cfg.token,
            ice=cfg.ice_servers,
            connect_timeout_s=cfg.connect_timeout_s,
            media_timeout_s=cfg.media_timeout_s,
            retry_min_s=cfg.retry_min_s,
            retry_max_s=cfg.retry_max_s,
            on_state=on_state,
        )

    def _headers(self, content_type: str | None = None, url: str | None = None) -> dict[str, str]:
        """The request's headers; the token goes to ``url`` (default the endpoint) unless it would travel
        in clear: an https endpoint whose session Location is plain http:// does not get it there."""
        to = url or self.url
        clear = to.lower().startswith("http://") and self.url.lower().startswith("https://")
        h = {"Authorization": f"Bearer {self.token}"} if self.token and not clear else {}
        if content_type:
            h["Content-Type"] = content_type
        return h

    async def _negotiate(self, pc: RTCPeerConnection) -> None:
        assert self.http is not None
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers every candidate first
        where = f"WHIP {self.url}"
        try:
            async with self.http.post(
                self.url,
                data=pc.localDescription.sdp.encode(),
                headers=self._headers("application/sdp"),
                timeout=aiohttp.ClientTimeout(total=self.connect_timeout_s),
            ) as r:
                status, reason = r.status, excerpt(r.reason or "", 80)
                location = r.headers.get("Location")
                retry_after = _retry_after(r.headers.get("Retry-After"))
                ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if location:  # even on an error: a resource that exists must be deleted
                    try:
                        self.resource = urljoin(str(r.url), location)
                    except ValueError:
                        raise ConnectError(
                            f"{where}: the answer's Location is not a URL: {location[:160]!r}", retry=False
                        ) from None
                raw = bytearray()
                async for chunk in r.content.iter_chunked(64 * 1024):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise ConnectError(
                            f"{where}: the answer is larger than {MAX_ANSWER_BYTES // 1024} kB: not an SDP answer",
                            retry=False,
                        )
                body = raw.decode("utf-8", errors="replace")  # SDP is UTF-8 (RFC 8866)
        except TimeoutError:
            raise ConnectError(f"{where} did not answer within {self.connect_timeout_s:.0f} s") from None
        except aiohttp.TooManyRedirects:
            raise ConnectError(f"{where}: too many redirects (a redirect loop?)") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectError(f"{where} unreachable: {describe_error(e)}") from None
        said = _snippet(body, ctype)
        if status in (401, 403):
            raise ConnectError(f"{where}: the token was refused ({status} {reason}){said}", retry=False)
        if status >= 500 or status in _RETRY_STATUS:
            raise ConnectError(f"{where}: {status} {reason}{said}", retry_after_s=retry_after)
        if status not in (200, 201):
            raise ConnectError(f"{where}: refused the offer ({status} {reason}){said}", retry=False)
        if ctype != "application/sdp":
            raise ConnectError(f"{where}: the answer is {ctype or 'untyped'}, not application/sdp{said}", retry=False)
        if not location:
            raise ConnectError(f"{where}: the answer has no Location header (no session to leave)", retry=False)
        if not body.lstrip().startswith("v=0") or "\nm=" not in body:
            raise ConnectError(f"{where}: the answer is not an SDP session description{said}", retry=False)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        except Exception as e:  # aiortc raises ValueError and others for an SDP it cannot use
            raise ConnectError(f"{where}: cannot use the SDP answer: {describe_error(e)}", retry=False) from None

    async def _leave(self) -> None:
        if self.resource is None or self.http is None:
            return
        resource, self.resource = self.resource, None
        headers = self._headers(url=resource)
        if self.token and "Authorization" not in headers:
            log.warning("WHIP %s: the session's Location %s is plain http: left without the token", self.url, resource)
        async with self.http.delete(resource, headers=headers, timeout=aiohttp.ClientTimeout(total=5.0)) as r:
            if r.status >= 400 and r.status != 404:
                raise ConnectError(f"WHIP {resource}: DELETE answered {r.status} {excerpt(r.reason or '', 80)}")
