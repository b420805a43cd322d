"""The small interfaces the box is wired through: what finds faces, where framed pictures and sound go, and
where messages go. Anything with these methods fits (the live hubs, files, tests' collectors)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from appliance.messages import Faces, Message


class Detector(Protocol):
    """Finds faces: ``detect(rgb, t)`` is called on a worker thread, one call at a time."""

    def detect(self, image: np.ndarray, t: float) -> Faces: ...

    def close(self) -> None: ...


class FrameSink(Protocol):
    """Takes each framed picture (RGB uint8 at the output size) and its capture time; ``framed`` False: a
    card shown in the camera's place, not a picture of the room."""

    def put(self, image: np.ndarray, t: float, framed: bool = True) -> None: ...


class AudioSink(Protocol):
    """Takes the room's sound: mono float32 samples at ``sample_rate`` whose first sample is at ``t``."""

    def put(self, samples: np.ndarray, sample_rate: int, t: float) -> None: ...


class EventSink(Protocol):
    """Takes every message the box publishes (:mod:`appliance.messages`)."""

    def publish(self, message: Message) -> None: ...
