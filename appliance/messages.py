"""Typed messages with one wire form.

Each message is a frozen dataclass; ``to_json()`` gives the dict that goes unchanged to the panel's
WebSocket, the JSON-lines outputs, logs and test assertions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Box = tuple[float, float, float, float]  # x, y, w, h in source pixels


def _r(v: float, nd: int = 3) -> float:
    return round(float(v), nd)


@dataclass(frozen=True)
class Face:
    """One detected face: box in source pixels (x, y, w, h) and detector score in [0, 1]."""

    box: Box
    score: float

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    def to_json(self) -> dict[str, Any]:
        return {"box": [_r(v, 1) for v in self.box], "score": _r(self.score)}


@dataclass(frozen=True)
class Faces:
    """The faces found in one frame taken at time ``t`` (seconds) of size ``width`` x ``height``."""

    t: float
    faces: tuple[Face, ...]
    width: int = 0
    height: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"t": _r(self.t), "faces": [f.to_json() for f in self.faces]}


@dataclass(frozen=True)
class Doa:
    """Direction of arrival of one audio block that ends at time ``t``.

    ``azimuth_deg`` is 0 on the camera's axis, positive to the camera's right; None when no
    direction is reported (no speech, or no clear peak).
    """

    t: float
    azimuth_deg: float | None
    speech: bool
    level_db: float = -120.0
    confidence: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "azimuth_deg": None if self.azimuth_deg is None else _r(self.azimuth_deg, 2),
            "speech": bool(self.speech),
            "level_db": _r(self.level_db, 1),
            "confidence": _r(self.confidence),
        }


ShotMode = Literal["speaker", "group", "wide"]


@dataclass(frozen=True)
class Shot:
    """What the director frames at time ``t``: a crop of the source picture and why."""

    t: float
    crop: tuple[int, int, int, int]
    mode: ShotMode
    target_azimuth_deg: float | None = None
    reason: str = ""
    cut: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "crop": [int(v) for v in self.crop],
            "mode": self.mode,
            "target_azimuth_deg": None if self.target_azimuth_deg is None else _r(self.target_azimuth_deg, 2),
            "reason": self.reason,
            "cut": self.cut,
        }


DeviceState = Literal["starting", "running", "lost", "retrying", "stopped"]


@dataclass(frozen=True)
class DeviceStatus:
    """A device's health as the supervisor sees it."""

    name: str
    state: DeviceState
    detail: str = ""
    t: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "detail": self.detail, "t": _r(self.t),
                "counters": dict(self.counters)}
