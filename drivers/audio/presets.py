"""The mic arrays people buy: geometry, channel layout, and the array's pose relative to the camera.

**The array's own frame** has the camera frame's axes when the array is not rotated: x to the right, y up,
z forward (into the room, along the camera's axis). A board lying flat has its microphones in the x-z
plane; the board's own x and y axes (as drawn in its datasheet and in its ODAS config, ``mu``) are our x
and z, so "rotation 0" means: the board flat, its +y edge pointing into the room.

**The pose**: ``rotation_deg = [yaw, pitch, roll]`` turns the array about its centre, then it is moved to
``position`` (its centre in the camera frame, metres). Roll (about z, +x towards +y) is applied first,
then pitch (about x, the front edge +z tilts up towards +y), then yaw (about the vertical y, +z towards +x:
positive yaw turns the array to the right, the same sense as azimuth). A board hung on the wall under the
camera, facing the room, is pitch 90.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class ArrayPreset:
    """A mic array model: ``geometry`` (array frame, metres; entry k = microphone k), the number of
    ``channels`` its firmware delivers, which device channel carries each microphone (``channel_map``),
    the device channel carrying what the array's loudspeaker output plays (``playback_channel``), and the
    rate the firmware runs at."""

    key: str
    title: str
    geometry: tuple[Vec3, ...]
    channels: int
    channel_map: tuple[int, ...]
    playback_channel: int | None
    native_rate: int
    source: str


def _ring(n: int, radius: float, start_deg: float = 0.0, clockwise: bool = False) -> tuple[Vec3, ...]:
    """``n`` microphones on a flat circle (board x, y -> our x, z), the first at ``start_deg`` from +x."""
    sign = -1.0 if clockwise else 1.0
    out = []
    for k in range(n):
        a = math.radians(start_deg + sign * 360.0 * k / n)
        out.append((round(radius * math.cos(a), 6), 0.0, round(radius * math.sin(a), 6)))
    return tuple(out)


PRESETS: dict[str, ArrayPreset] = {
    p.key: p
    for p in (
        ArrayPreset(
            "respeaker-usb-4mic",
            "Seeed ReSpeaker USB Mic Array v2.0 (4 mics, 6-channel firmware)",
            # ODAS respeaker_usb_4_mic_array.cfg: mics at (-32, 0), (0, -32), (32, 0), (0, 32) mm
            ((-0.032, 0.0, 0.0), (0.0, 0.0, -0.032), (0.032, 0.0, 0.0), (0.0, 0.0, 0.032)),
            channels=6,
            channel_map=(1, 2, 3, 4),
            playback_channel=5,
            native_rate=16000,
            source="6_channels_firmware: channel 0 processed audio, 1-4 the raw microphones, 5 playback; "
            "square of 45.3 mm sides (radius 32 mm)",
        ),
        ArrayPreset(
            "respeaker-6mic",
            "Seeed ReSpeaker 6-Mic Circular Array kit for Raspberry Pi (AC108)",
            # ODAS respeaker_6_mic_array.cfg: radius 46.3 mm, mic 1 at 120 deg, counter-clockwise
            _ring(6, 0.0463, start_deg=120.0),
            channels=8,
            channel_map=(0, 1, 2, 3, 4, 5),
            playback_channel=6,
            native_rate=16000,
            source="seeed-voicecard: 8 channels, 0-5 the microphones, 6-7 the playback loopback; "
            "circle of radius 46.3 mm",
        ),
        ArrayPreset(
            "uma8",
            "miniDSP UMA-8 (7 mics, raw firmware)",
            ((0.0, 0.0, 0.0),) + _ring(6, 0.043, start_deg=0.0),
            channels=8,
            channel_map=(0, 1, 2, 3, 4, 5, 6),
            playback_channel=None,
            native_rate=48000,
            source="one centre microphone and six on a circle of radius 43 mm (90 mm board), "
            "counter-clockwise from the first; raw firmware, 8 channels, the 8th unused",
        ),
        ArrayPreset(
            "respeaker-lite",
            "Seeed ReSpeaker Lite (2 mics, XU316, USB firmware)",
            ((-0.033, 0.0, 0.0), (0.033, 0.0, 0.0)),
            channels=2,
            channel_map=(0, 1),
            playback_channel=None,
            native_rate=16000,
            source="two microphones across the 86 mm board; the datasheet gives no spacing, 66 mm is "
            "an estimate: measure your board and give geometry if it differs. A pair has a front/back "
            "ambiguity: azimuth only within +-90 deg",
        ),
        ArrayPreset(
            "linear-4",
            "A generic 4-mic linear array, 50 mm pitch",
            tuple(((k - 1.5) * 0.05, 0.0, 0.0) for k in range(4)),
            channels=4,
            channel_map=(0, 1, 2, 3),
            playback_channel=None,
            native_rate=16000,
            source="a uniform line along x; a line has a front/back ambiguity: azimuth only within +-90 deg",
        ),
    )
}


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """The 3x3 rotation ``R_yaw @ R_pitch @ R_roll`` (see the module's docstring for the senses)."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    cy, sy, cp, sp, cr, sr = math.cos(y), math.sin(y), math.cos(p), math.sin(p), math.cos(r), math.sin(r)
    r_yaw = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])  # +z -> +x
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])  # +z -> +y
    r_roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])  # +x -> +y
    rot: np.ndarray = r_yaw @ r_pitch @ r_roll
    return rot


def place(
    geometry: Sequence[Sequence[float]], position: Sequence[float], rotation_deg: Sequence[float] = (0.0, 0.0, 0.0)
) -> list[Vec3]:
    """Microphone positions in the camera frame: ``geometry`` (array frame) rotated by ``rotation_deg``
    (yaw, pitch, roll) and moved to ``position``."""
    g = np.asarray(geometry, dtype=np.float64).reshape(-1, 3)
    rot = rotation_matrix(*(float(a) for a in rotation_deg))
    cam = g @ rot.T + np.asarray(position, dtype=np.float64)
    # rounded to a nanometre, and + 0.0 turns -0.0 into 0.0
    return [(round(float(x), 9) + 0.0, round(float(y), 9) + 0.0, round(float(z), 9) + 0.0) for x, y, z in cam]
