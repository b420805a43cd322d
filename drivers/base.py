"""The small contracts every source honours: a camera or a mic array is something you ``await recv()`` from.

The same contract serves the simulated room, files, V4L2 cameras, sound-card arrays and aiortc tracks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class SourceLost(RuntimeError):
    """The device went away (unplugged, file ended, stream closed); the supervisor may retry."""


@dataclass(frozen=True)
class Frame:
    """One camera picture: ``image`` is RGB uint8 (height, width, 3), taken at ``t`` seconds."""

    t: float
    image: np.ndarray

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class AudioBlock:
    """A block of mic-array samples: float32 (frames, channels) in [-1, 1]; ``t`` is the time of the
    first sample in seconds. Channel k is microphone k."""

    t: float
    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return float(self.samples.shape[0] / self.sample_rate)


@runtime_checkable
class VideoSource(Protocol):
    name: str

    async def start(self) -> None: ...

    async def recv(self) -> Frame: ...

    async def stop(self) -> None: ...


@runtime_checkable
class AudioSource(Protocol):
    name: str

    async def start(self) -> None: ...

    async def recv(self) -> AudioBlock: ...

    async def stop(self) -> None: ...
