"""Hand-over points between the box's pipeline and the viewers: the newest framed picture, the room's
sound and the event stream for the panel.

Everything here lives on the box's asyncio loop and is not thread-safe: a producer in another thread
hands over with ``loop.call_soon_threadsafe(hub.put, ...)``. Nothing here reads a clock; times are the
producer's ``t`` (seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.messages import Message


class LatestFrame:
    """The newest framed picture (RGB uint8 (height, width, 3), already at output size) and its time.

    Not a queue: ``put`` replaces the picture. Any number of consumers may wait with :meth:`get_newer`.
    The last ``HISTORY`` pictures stay at hand for a consumer that takes them in order (:meth:`get_next`:
    an encoder that a busy machine held up for a picture or two catches up instead of losing them); a
    producer must not change a picture once it is put. ``published`` counts puts; ``dropped`` counts
    pictures no consumer ever took, once they are out of reach (``HISTORY`` newer ones put since).
    """

    HISTORY = 4

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.put_at: float | None = None  # when the newest picture was put, on ``clock`` (what the health reads)
        self._seq = 0
        self._image: np.ndarray | None = None
        self._t = 0.0
        self._changed = asyncio.Event()
        self._recent: deque[tuple[int, np.ndarray, float]] = deque()  # the last HISTORY pictures
        self._handed_out: set[int] = set()  # the seqs in _recent some consumer took
        self.published = 0
        self.dropped = 0

    @property
    def seq(self) -> int:
        """Sequence number of the current picture; 0 before the first."""
        return self._seq

    def put(self, image: np.ndarray, t: float, framed: bool = True) -> None:
        """Publish a new picture taken (or composed) at ``t`` seconds. ``framed`` False: a card the box shows
        in the camera's place (it is lost): sent like any picture, but neither counted in ``published`` nor
        in ``put_at``, so the health still sees that nothing of the room was framed."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected RGB uint8 (h, w, 3), got {image.dtype} {image.shape}")
        self._seq += 1
        self._image = image
        self._t = float(t)
        if framed:
            self.put_at = self._clock()
        self._recent.append((self._seq, image, self._t))
        if len(self._recent) > self.HISTORY:  # out of reach: a drop unless some consumer took it
            gone = self._recent.popleft()[0]
            if gone in self._handed_out:
                self._handed_out.discard(gone)
            else:
                self.dropped += 1
        if framed:
            self.published += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def latest(self) -> tuple[int, np.ndarray, float] | None:
        """The current picture as (seq, image, t) without waiting, or None before the first."""
        if self._image is None:
            return None
        return self._seq, self._image, self._t

    async def get_newer(self, after_seq: int) -> tuple[int, np.ndarray, float]:
        """Wait for a picture newer than ``after_seq``; returns (seq, image, t)."""
        while self._seq <= after_seq or self._image is None:
            await self._changed.wait()
        self._handed_out.add(self._seq)
        return self._seq, self._image, self._t

    async def get_next(self, after_seq: int, max_behind: int = 2) -> tuple[int, np.ndarray, float]:
        """Wait for a picture newer than ``after_seq``; returns (seq, image, t) of the one right after it when
        that is at most ``max_behind`` pictures older than the newest (and still at hand), else of the newest.

        A consumer that takes every picture in turn, as long as it is no more than ``max_behind`` late: a
        short hold-up costs a little latency instead of pictures, a long one skips to the newest.
        """
        while self._seq <= after_seq or self._image is None:
            await self._changed.wait()
        if self._seq - after_seq <= max_behind + 1:
            for seq, image, t in self._recent:
                if seq == after_seq + 1:
                    self._handed_out.add(seq)
                    return seq, image, t
        self._handed_out.add(self._seq)
        return self._seq, self._image, self._t


@dataclass(frozen=True)
class AudioChunk:
    """A piece of the room's sound: mono int16 samples at ``sample_rate``; ``t`` is the first sample's time."""

    seq: int
    samples: np.ndarray
    sample_rate: int
    t: float


class AudioHub:
    """Mono audio for the outgoing audio tracks, kept as a bounded run of recent chunks.

    Each reader keeps its own cursor (the last ``seq`` it read), so every viewer hears the whole
    sound. A chunk pushed out by newer ones before a reader got to it is dropped for that reader
    and counted in ``dropped`` (chunks).
    """

    def __init__(self, max_seconds: float = 0.5) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be > 0")
        self.max_seconds = max_seconds
        self._chunks: deque[AudioChunk] = deque()
        self._held_s = 0.0
        self._seq = 0
        self.published = 0
        self.dropped = 0

    def put(self, samples: np.ndarray, sample_rate: int, t: float) -> None:
        """Add float32 mono samples in [-1, 1] (shape (n,) or (n, 1)) taken from ``t`` on."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {x.shape}")
        if sample_rate <= 0:
            raise ValueError("sample_rate must be > 0")
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
        self._seq += 1
        self._chunks.append(AudioChunk(self._seq, pcm, int(sample_rate), float(t)))
        self._held_s += len(pcm) / sample_rate
        self.published += 1
        while len(self._chunks) > 1 and self._held_s > self.max_seconds + 1e-9:
            old = self._chunks.popleft()
            self._held_s -= len(old.samples) / old.sample_rate

    @property
    def seq(self) -> int:
        """Sequence number of the newest chunk; 0 before the first."""
        return self._seq

    def read(self, after_seq: int) -> tuple[int, list[AudioChunk]]:
        """The chunks newer than ``after_seq`` and the new cursor. Counts chunks this reader missed."""
        new = [c for c in self._chunks if c.seq > after_seq]
        if new and after_seq > 0:
            self.dropped += new[0].seq - after_seq - 1
        return (new[-1].seq if new else max(after_seq, self._seq)), new


class EventBus:
    """Typed messages fanned out to the panel's WebSockets (and anyone else who subscribes).

    ``publish(message)`` takes any message of :mod:`appliance.messages`. Each subscriber has a bounded queue
    of ``(kind, data)`` (the message's envelope: ``KIND`` and ``to_json()``); a slow subscriber loses its
    oldest messages, counted in ``dropped``. ``snapshot()`` keeps the latest of each kind; kinds listed in
    ``keyed_by`` (by default ``device`` by its ``name``) keep one per key.
    """

    def __init__(self, queue_size: int = 256, keyed_by: dict[str, str] | None = None) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.queue_size = queue_size
        self.keyed_by = {"device": "name", "meeting": "name"} if keyed_by is None else dict(keyed_by)
        self._latest: dict[str, tuple[str, dict[str, Any]]] = {}
        self._subscribers: list[asyncio.Queue[tuple[str, dict[str, Any]]]] = []
        self.published = 0
        self.dropped = 0

    def publish(self, message: Message) -> None:
        """Send ``message`` to every subscriber and remember it."""
        kind, payload = message.KIND, message.to_json()
        field_name = self.keyed_by.get(kind)
        key = f"{kind}:{payload.get(field_name, '')}" if field_name else kind
        self._latest[key] = (kind, payload)
        self.published += 1
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait((kind, payload))

    def subscribe(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        """A new bounded queue receiving ``(kind, payload)`` from now on."""
        q: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(self.queue_size)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        """Stop feeding ``q``; unknown queues are ignored."""
        if q in self._subscribers:
            self._subscribers.remove(q)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The latest payload of each kind (of each key for keyed kinds, as ``"device:camera"``)."""
        return {key: payload for key, (_, payload) in self._latest.items()}

    def snapshot_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """The snapshot as ``(kind, payload)`` pairs, in first-published order: what a new viewer is sent."""
        return list(self._latest.values())
