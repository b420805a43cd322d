"""The small contracts every source honours: a camera or a mic array is something you ``await recv()`` from.

The same contract serves the simulated room, files, V4L2 cameras, sound-card arrays and aiortc tracks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import Field, field_validator

from common.settings import Section

Vec3 = tuple[float, float, float]


class SourceLost(RuntimeError):
    """The device went away (unplugged, file ended, stream closed); the supervisor may retry."""


@dataclass(frozen=True)
class Frame:
    """One camera picture: ``image`` is RGB uint8 (height, width, 3), captured at ``t`` on the box's capture
    clock (:mod:`common.clock`; for offline runs, seconds from the recording's start)."""

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
    """A block of mic-array samples: float32 (frames, channels) in [-1, 1]; ``t`` is the time of the first
    sample on the box's capture clock (:mod:`common.clock`). Channel k is microphone k of the array's
    ``positions`` (a driver applies its channel map before handing the block over). ``reference``, when the
    device knows it, is the playback reference: float32 (frames,), what was sent to the room's loudspeaker
    over the same samples (sample-aligned, same rate), for telling the far end from a talker."""

    t: float
    samples: np.ndarray
    sample_rate: int
    reference: np.ndarray | None = None


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


def _ring(n: int, radius: float, y: float) -> list[Vec3]:
    step = 360 // n
    return [(radius * math.cos(math.radians(a)), y, radius * math.sin(math.radians(a))) for a in range(0, 360, step)]


class CameraSection(Section):
    """What every camera's config section has: the picture's geometry. Drivers add their own keys and a
    ``type`` (see :mod:`drivers.registry`)."""

    hfov_deg: float = Field(
        90.0,
        gt=10.0,
        lt=180.0,
        title="Horizontal field of view (degrees)",
        description="Of the undistorted source picture.",
    )
    width: int = Field(1920, ge=160, le=7680, title="Capture width (px)")
    height: int = Field(1080, ge=120, le=4320, title="Capture height (px)")
    fps: float = Field(15.0, gt=0.0, le=60.0, title="Capture frame rate (frames/s)")


def check_mic_positions(v: list[Vec3]) -> list[Vec3]:
    """Microphone positions (camera frame, m) an array can have: finite, within 2 m of the camera, no two at
    the same place. Raises ValueError naming the microphone."""
    for i, p in enumerate(v):
        if not all(math.isfinite(c) for c in p):
            raise ValueError(f"microphone {i} is {p}: not a finite position")
        if any(abs(c) > 2.0 for c in p):
            raise ValueError(f"microphone {i} is {p}: more than 2 m from the camera")
        for j in range(i):
            if math.dist(p, v[j]) < 1e-3:
                raise ValueError(f"microphones {j} and {i} are at the same place")
    return v


class MicArraySection(Section):
    """What every mic array's config section has: the rate and where each microphone is. Drivers add their
    own keys and a ``type`` (see :mod:`drivers.registry`)."""

    sample_rate: int = Field(16000, ge=8000, le=96000, title="Sample rate (Hz)")
    positions: list[Vec3] = Field(
        default_factory=lambda: _ring(6, 0.0463, -0.1),
        title="Microphone positions (m)",
        description="In the camera's frame: x right, y up, z forward; origin at the camera. Channel k is microphone k.",
        min_length=2,
        max_length=64,
    )

    @field_validator("positions")
    @classmethod
    def _distinct(cls, v: list[Vec3]) -> list[Vec3]:
        return check_mic_positions(v)
