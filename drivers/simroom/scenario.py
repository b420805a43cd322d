"""The simulated room's scenario: a room, a camera, a mic array and people who talk, read from TOML.

Room coordinates: x across the room, y away from the front wall, z up (metres, origin at a floor corner).
The camera stands at ``camera.position_m`` and looks along +y of the room, level, so that the camera
frame (x right, y up, z forward; see :mod:`common.geometry`) is the room frame shifted and turned:
camera (x, y, z) = room (x - cx, z - cz, y - cy).

An optional ``[loudspeaker]`` is the room's far-end loudspeaker (on the ceiling, beside the display): its
``turns`` are what the far end says, and when; the simulated room plays them through the same acoustics
as the people, and what was sent to it is the playback reference.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from common.settings import Section, describe_errors, read_toml
from drivers.base import MicArraySection, check_mic_positions

Vec3 = tuple[float, float, float]
MIN_LOUDSPEAKER_TO_MIC_M = 0.2


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file, the key and the reason."""


class RoomSpec(Section):
    size_m: Vec3 = Field((7.0, 6.0, 3.0), title="Room size (width x, depth y, height z) (m)")
    rt60_s: float = Field(0.45, ge=0.1, le=2.0, title="Reverberation time RT60 (s)")
    noise_db: float = Field(
        -55.0,
        ge=-120.0,
        le=-10.0,
        title="Diffuse noise level (dBFS RMS)",
        description="At each microphone, with the speech peak-normalised to -6 dBFS.",
    )
    seed: int = Field(0, ge=0, title="Random seed (noise, head motion)")

    @field_validator("size_m")
    @classmethod
    def _size(cls, v: Vec3) -> Vec3:
        if not all(1.5 <= c <= 50.0 for c in v):
            raise ValueError(f"each side must be between 1.5 and 50 m, got {v}")
        return v


class CameraSpec(Section):
    position_m: Vec3 = Field(
        (3.5, 0.05, 1.25), title="Camera position in the room (m)", description="It looks along +y of the room, level."
    )
    hfov_deg: float = Field(90.0, gt=10.0, lt=170.0, title="Horizontal field of view (degrees)")
    width: int = Field(1920, ge=160, le=7680, title="Width (px)")
    height: int = Field(1080, ge=120, le=4320, title="Height (px)")
    fps: float = Field(15.0, gt=0.0, le=60.0, title="Frame rate (frames/s)")

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"{v} is odd: the video (H.264, yuv420p) needs an even width and height")
        return v


class MicArraySpec(Section):
    sample_rate: int = Field(16000, ge=8000, le=48000, title="Sample rate (Hz)")
    positions: list[Vec3] = Field(
        default_factory=lambda: list(MicArraySection().positions),
        min_length=2,
        max_length=64,
        title="Microphone positions (m)",
        description="In the camera's frame, as in the roombox config.",
    )

    @field_validator("positions")
    @classmethod
    def _placed(cls, v: list[Vec3]) -> list[Vec3]:
        return check_mic_positions(v)  # what the rendering's config will be checked against


class Utterance(Section):
    start_s: float = Field(ge=0.0, title="Start time (s)")
    text: str | None = Field(None, min_length=1, max_length=2000, title="Text spoken by espeak-ng")
    clip: Literal["arctic"] | None = Field(None, title="A recorded clip instead of text")
    voice: str = Field("en-us", pattern=r"^[A-Za-z0-9_+\-]+$", title="espeak-ng voice")
    speed_wpm: int = Field(160, ge=80, le=400, title="espeak-ng speed (words/min)")
    gain_db: float = Field(0.0, ge=-30.0, le=20.0, title="Level relative to normal speech (dB)")

    @model_validator(mode="after")
    def _one_source(self) -> Utterance:
        if (self.text is None) == (self.clip is None):
            raise ValueError("give exactly one of text or clip")
        return self


class Move(Section):
    """Something a seated person does for a while: lean, turn away, or hide the face behind a hand.

    ``lean``: the head moves by ``offset_m`` (room metres, across x and up z) and back, easing in and out
    over ``ease_s``; ``turn``: the head is turned away (the camera sees the back of it); ``hide``: a hand
    covers the face. During ``turn`` and ``hide`` the face is not visible (the ground truth says so).
    """

    kind: Literal["lean", "turn", "hide"] = Field(title="What the person does")
    start_s: float = Field(ge=0.0, le=3600.0, title="Start time (s)")
    duration_s: float = Field(gt=0.0, le=600.0, title="How long (s)")
    offset_m: tuple[float, float] = Field(
        (0.0, 0.0), title="Lean: head displacement (across x, up z) (m)", description="Each between -0.6 and 0.6."
    )
    ease_s: float = Field(0.6, ge=0.0, le=10.0, title="Lean: time to reach the full offset and to come back (s)")

    @field_validator("offset_m")
    @classmethod
    def _offset(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(-0.6 <= c <= 0.6 for c in v):
            raise ValueError(f"each component must be between -0.6 and 0.6 m, got {v}")
        return v

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.start_s + self.duration_s

    def lean_at(self, t: float) -> tuple[float, float]:
        """The lean's head offset (x, z) at time ``t`` (zero outside it, eased at both ends)."""
        if self.kind != "lean" or not self.active(t):
            return (0.0, 0.0)
        ease = min(self.ease_s, self.duration_s / 2.0)
        k = 1.0 if ease <= 0 else min(1.0, (t - self.start_s) / ease, (self.start_s + self.duration_s - t) / ease)
        k = k * k * (3.0 - 2.0 * k)  # smoothstep
        return (k * self.offset_m[0], k * self.offset_m[1])


class Person(Section):
    id: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_\-]+$", title="Name")
    seat_m: tuple[float, float] = Field(title="Seat position in the room (x, y) (m)")
    head_height_m: float = Field(1.2, ge=0.5, le=2.2, title="Height of the head centre (m)")
    face: str = Field("astronaut", pattern=r"^(astronaut|lfw:\d{1,3})$", title="Face photo: astronaut or lfw:N (0-199)")
    shirt_rgb: tuple[int, int, int] = Field((60, 90, 160), title="Shirt colour (RGB 0-255)")
    utterances: list[Utterance] = Field(default_factory=list, title="What the person says, and when")
    moves: list[Move] = Field(
        default_factory=list, max_length=5000, title="Leaning, turning away, hiding the face, and when"
    )

    @field_validator("face")
    @classmethod
    def _lfw_index(cls, v: str) -> str:
        if v.startswith("lfw:") and not 0 <= int(v[4:]) < 200:
            raise ValueError("lfw faces are numbered 0 to 199")
        return v

    @field_validator("shirt_rgb")
    @classmethod
    def _rgb(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(0 <= c <= 255 for c in v):
            raise ValueError("colour components are 0-255")
        return v


class LoudspeakerSpec(Section):
    """The room's loudspeaker, playing the far end of the meeting."""

    position_m: Vec3 = Field(
        title="Loudspeaker position in the room (m)",
        description="Room coordinates, like camera.position_m: on the ceiling, or beside the display.",
    )
    level_db: float = Field(
        0.0,
        ge=-30.0,
        le=20.0,
        title="Far-end speech level in the room, relative to a local talker's (dB)",
        description="How loud the loudspeaker plays a turn of gain 0 dB, compared with a person's utterance.",
    )
    turns: list[Utterance] = Field(
        min_length=1,
        max_length=500,
        title="What the far end says, and when",
        description="Like a person's utterances; turns are in time order and must not overlap.",
    )

    @field_validator("turns")
    @classmethod
    def _in_order(cls, v: list[Utterance]) -> list[Utterance]:
        for k in range(1, len(v)):
            if v[k].start_s <= v[k - 1].start_s:
                raise ValueError(
                    f"turn {k} starts at {v[k].start_s} s, not after turn {k - 1} ({v[k - 1].start_s} s): "
                    "give the turns in time order"
                )
        return v


class Scenario(Section):
    duration_s: float = Field(60.0, gt=0.0, le=3600.0, title="Length (s)")
    room: RoomSpec = Field(default_factory=RoomSpec)
    camera: CameraSpec = Field(default_factory=CameraSpec)
    mic_array: MicArraySpec = Field(default_factory=MicArraySpec)
    people: list[Person] = Field(default_factory=list, max_length=20)
    loudspeaker: LoudspeakerSpec | None = Field(None, title="The far-end loudspeaker (none by default)")

    @model_validator(mode="after")
    def _inside(self) -> Scenario:
        w, d, h = self.room.size_m
        if not (
            0 < self.camera.position_m[0] < w
            and 0 < self.camera.position_m[1] < d
            and 0 < self.camera.position_m[2] < h
        ):
            raise ValueError(f"camera.position_m {self.camera.position_m} is outside the room")
        for k, m in enumerate(self.mic_positions_room()):
            if not (0 < m[0] < w and 0 < m[1] < d and 0 < m[2] < h):
                raise ValueError(f"mic_array.positions.{k} is outside the room")
        ids = [p.id for p in self.people]
        for i, p in enumerate(self.people):
            if ids.index(p.id) != i:
                raise ValueError(f"people.{i}.id {p.id!r} is used twice")
            x, y = p.seat_m
            if not (0.2 < x < w - 0.2 and 0.2 < y < d - 0.2) or p.head_height_m > h - 0.1:
                raise ValueError(f"people.{i} ({p.id}) is outside the room")
            if self.to_camera((x, y, p.head_height_m))[2] < 0.5:
                raise ValueError(f"people.{i} ({p.id}) is less than 0.5 m in front of the camera")
            for k, u in enumerate(p.utterances):
                if u.start_s >= self.duration_s:
                    raise ValueError(
                        f"people.{i}.utterances.{k} ({p.id}) starts at {u.start_s} s, after the scenario ends "
                        f"({self.duration_s} s)"
                    )
        if self.loudspeaker is not None:
            self._check_loudspeaker(self.loudspeaker)
        return self

    def _check_loudspeaker(self, spk: LoudspeakerSpec) -> None:
        w, d, h = self.room.size_m
        x, y, z = spk.position_m
        if not (0 < x < w and 0 < y < d and 0 < z < h):
            raise ValueError(f"loudspeaker.position_m {spk.position_m} is outside the room ({w} x {d} x {h} m)")
        for k, m in enumerate(self.mic_positions_room()):
            if math.dist(m, spk.position_m) < MIN_LOUDSPEAKER_TO_MIC_M:
                raise ValueError(
                    f"loudspeaker.position_m {spk.position_m} is {math.dist(m, spk.position_m):.2f} m from "
                    f"microphone {k}: keep it at least {MIN_LOUDSPEAKER_TO_MIC_M} m away"
                )
        for k, turn in enumerate(spk.turns):
            if turn.start_s >= self.duration_s:
                raise ValueError(
                    f"loudspeaker.turns.{k} starts at {turn.start_s} s, after the scenario ends ({self.duration_s} s)"
                )

    def to_camera(self, p: Vec3) -> Vec3:
        """Camera-frame coordinates of the room point ``p``."""
        cx, cy, cz = self.camera.position_m
        return (p[0] - cx, p[2] - cz, p[1] - cy)

    def to_room(self, p: Vec3) -> Vec3:
        """Room coordinates of the camera-frame point ``p``."""
        cx, cy, cz = self.camera.position_m
        return (p[0] + cx, p[2] + cy, p[1] + cz)

    def mic_positions_room(self) -> list[Vec3]:
        return [self.to_room(p) for p in self.mic_array.positions]

    def head_room(self, person: Person) -> Vec3:
        """The head centre at rest (the seat, at head height)."""
        return (person.seat_m[0], person.seat_m[1], person.head_height_m)

    @staticmethod
    def lean_at(person: Person, t: float) -> tuple[float, float]:
        """The person's head offset from rest (across x, up z; metres) at time ``t``, all leans added."""
        dx = dz = 0.0
        for m in person.moves:
            ox, oz = m.lean_at(t)
            dx, dz = dx + ox, dz + oz
        return dx, dz

    @staticmethod
    def face_state(person: Person, t: float) -> Literal["visible", "turned", "hidden"]:
        """Whether the camera can see the person's face at time ``t``: a turn wins over a hand."""
        kinds = {m.kind for m in person.moves if m.active(t)}
        return "turned" if "turn" in kinds else "hidden" if "hide" in kinds else "visible"

    def mouth_room(self, person: Person) -> Vec3:
        """Where the person's voice comes from: 8 cm below the head centre, 8 cm towards the camera."""
        x, y, z = self.head_room(person)
        cx, cy, _ = self.camera.position_m
        dx, dy = cx - x, cy - y
        n = math.hypot(dx, dy) or 1.0
        return (x + 0.08 * dx / n, y + 0.08 * dy / n, z - 0.08)

    def mouth_azimuth_deg(self, person: Person) -> float:
        x, _, z = self.to_camera(self.mouth_room(person))
        return math.degrees(math.atan2(x, z))

    def loudspeaker_direction_deg(self) -> tuple[float, float] | None:
        """The loudspeaker's (azimuth, elevation) seen from the mic array's centre in the camera frame, in
        degrees (azimuth 0 on the camera's axis, positive to its right); None without a loudspeaker."""
        if self.loudspeaker is None:
            return None
        mics = self.mic_array.positions
        centre = [sum(m[k] for m in mics) / len(mics) for k in range(3)]
        x, y, z = (a - b for a, b in zip(self.to_camera(self.loudspeaker.position_m), centre, strict=True))
        return math.degrees(math.atan2(x, z)), math.degrees(math.atan2(y, math.hypot(x, z)))


def camera_geometry(scn: Scenario) -> dict[str, Any]:
    """The scenario's camera as the keys every camera section has (:class:`drivers.base.CameraSection`)."""
    cam = scn.camera
    return {"hfov_deg": cam.hfov_deg, "width": cam.width, "height": cam.height, "fps": cam.fps}


def mic_array_geometry(scn: Scenario) -> dict[str, Any]:
    """The scenario's mic array as the keys every mic-array section has
    (:class:`drivers.base.MicArraySection`)."""
    return {"sample_rate": scn.mic_array.sample_rate, "positions": [list(p) for p in scn.mic_array.positions]}


def parse_scenario(data: dict[str, Any], source: str = "scenario") -> Scenario:
    """Validate a parsed TOML document; raises ScenarioError naming each bad key."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(describe_errors(e, source, data)) from None


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario TOML file."""
    return parse_scenario(read_toml(path, "scenario", ScenarioError), str(path))


def builtin_scenario(name: str) -> Path:
    """Path of a scenario shipped with roombox (``default``, ``short``, ``farend``)."""
    p = Path(__file__).parent / "scenarios" / f"{name}.toml"
    if not p.is_file():
        names = ", ".join(sorted(q.stem for q in p.parent.glob("*.toml")))
        raise ScenarioError(f"no built-in scenario named {name!r} (built in: {names}; or give a .toml file)")
    return p
