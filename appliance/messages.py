"""Typed messages with one wire form.

Each message is a frozen dataclass with a ``KIND``; ``to_json()`` gives the dict that goes unchanged to the
panel's WebSocket, the JSON-lines outputs, logs and test assertions, and ``from_json()`` reads it back.
On a stream of mixed messages (the WebSocket, MQTT) each travels in an envelope, :func:`envelope`:
``{"kind": KIND, "data": to_json()}``; :func:`from_envelope` reads one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, cast

Box = tuple[float, float, float, float]  # x, y, w, h in source pixels


def _r(v: float, nd: int = 3) -> float:
    return round(float(v), nd)


@dataclass(frozen=True)
class Face:
    """One detected face: box in source pixels (x, y, w, h) and detector score in [0, 1]."""

    box: Box
    score: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Face:
        x, y, w, h = (float(v) for v in d["box"])
        return cls((x, y, w, h), float(d["score"]))

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    def to_json(self) -> dict[str, Any]:
        return {"box": [_r(v, 1) for v in self.box], "score": _r(self.score)}


@dataclass(frozen=True)
class Faces:
    """The faces found in one frame taken at time ``t`` (seconds) of size ``width`` x ``height`` (0 when
    unknown)."""

    KIND: ClassVar[str] = "faces"
    t: float
    faces: tuple[Face, ...]
    width: int = 0
    height: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "faces": [f.to_json() for f in self.faces],
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Faces:
        return cls(
            float(d["t"]), tuple(Face.from_json(f) for f in d["faces"]), int(d.get("width", 0)), int(d.get("height", 0))
        )


@dataclass(frozen=True)
class Doa:
    """Direction of arrival of one audio block that ends at time ``t``.

    ``azimuth_deg`` is 0 on the camera's axis, positive to the camera's right; None when no
    direction is reported (no speech, or no clear peak).
    """

    KIND: ClassVar[str] = "doa"
    t: float
    azimuth_deg: float | None
    speech: bool
    level_db: float = -120.0
    confidence: float = 0.0
    farend: bool = False  # the far end's voice from the room's loudspeaker (then never speech)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "azimuth_deg": None if self.azimuth_deg is None else _r(self.azimuth_deg, 2),
            "speech": bool(self.speech),
            "level_db": _r(self.level_db, 1),
            "confidence": _r(self.confidence),
            "farend": bool(self.farend),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Doa:
        az = d["azimuth_deg"]
        return cls(
            float(d["t"]),
            None if az is None else float(az),
            bool(d["speech"]),
            float(d.get("level_db", -120.0)),
            float(d.get("confidence", 0.0)),
            bool(d.get("farend", False)),
        )


ShotMode = Literal["speaker", "group", "wide", "gallery", "manual"]
SHOT_MODES: tuple[ShotMode, ...] = ("speaker", "group", "wide", "gallery", "manual")
Crop = tuple[int, int, int, int]


@dataclass(frozen=True)
class Shot:
    """What the director frames at time ``t``: a crop of the source picture (x, y, w, h in source pixels)
    and why. A gallery shot also has ``tiles``: one crop per person, laid out in one picture; ``crop`` is
    then the box around them all."""

    KIND: ClassVar[str] = "shot"
    t: float
    crop: Crop
    mode: ShotMode
    target_azimuth_deg: float | None = None
    reason: str = ""
    cut: bool = False
    tiles: tuple[Crop, ...] = ()
    policy: str = "speaker"  # the framing mode chosen (speaker, group, gallery, manual, off)
    rule: str = ""  # the rule that chose this shot (talker, silence, ping-pong, overlap, print, muted, ...)
    muted: bool = False  # the room's microphones are muted from the panel
    evidence: dict[str, Any] = field(default_factory=dict)  # on a cut: what the rule saw (sources, people)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "crop": [int(v) for v in self.crop],
            "mode": self.mode,
            "target_azimuth_deg": None if self.target_azimuth_deg is None else _r(self.target_azimuth_deg, 2),
            "reason": self.reason,
            "cut": self.cut,
            "tiles": [[int(v) for v in c] for c in self.tiles],
            "policy": self.policy,
            "rule": self.rule,
            "muted": self.muted,
            "evidence": self.evidence,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Shot:
        az = d.get("target_azimuth_deg")
        mode = str(d["mode"])
        if mode not in SHOT_MODES:
            raise ValueError(f"unknown shot mode {mode!r}")
        return cls(
            float(d["t"]),
            _crop(d["crop"]),
            mode,
            None if az is None else float(az),
            str(d.get("reason", "")),
            bool(d.get("cut", False)),
            tuple(_crop(c) for c in d.get("tiles", ())),
            str(d.get("policy", "speaker")),
            str(d.get("rule", "")),
            bool(d.get("muted", False)),
            dict(d.get("evidence", {})),
        )


def _crop(v: Any) -> Crop:
    x, y, w, h = (int(c) for c in v)
    return x, y, w, h


DeviceState = Literal["starting", "running", "lost", "retrying", "stopped"]


@dataclass(frozen=True)
class DeviceStatus:
    """A device's health as the supervisor sees it."""

    KIND: ClassVar[str] = "device"
    name: str
    state: DeviceState
    detail: str = ""
    t: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "detail": self.detail,
            "t": _r(self.t),
            "counters": dict(self.counters),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeviceStatus:
        state = str(d["state"])
        if state not in ("starting", "running", "lost", "retrying", "stopped"):
            raise ValueError(f"unknown device state {state!r}")
        return cls(
            str(d["name"]),
            cast(DeviceState, state),
            str(d.get("detail", "")),
            float(d.get("t", 0.0)),
            {str(k): int(v) for k, v in dict(d.get("counters", {})).items()},
        )


@dataclass(frozen=True)
class CameraInfo:
    """The camera the director frames: its picture's geometry (so the panel can draw the room's map)."""

    KIND: ClassVar[str] = "camera"
    name: str
    hfov_deg: float
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hfov_deg": _r(self.hfov_deg, 2),
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CameraInfo:
        return cls(str(d["name"]), float(d["hfov_deg"]), int(d["width"]), int(d["height"]))


@dataclass(frozen=True)
class Stats:
    """The live box's running counters, published once a second."""

    KIND: ClassVar[str] = "stats"
    t: float
    frames: int = 0
    detections: int = 0
    detection_ms: float = 0.0
    audio_blocks: int = 0
    doa_blocks: int = 0
    frames_dropped: int = 0
    program: str = "crop"  # the picture the meeting sees: "crop" of the wide camera, or "ptz" (the PTZ camera's)
    # the mic array's (a sound card's, ``drivers.audio.capture``): the driver's buffer overrun, blocks dropped
    # because the box did not take them in time, and gaps in the stream (a stall)
    audio_overflows: int = 0
    audio_blocks_dropped: int = 0
    audio_gaps: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "frames": self.frames,
            "detections": self.detections,
            "detection_ms": _r(self.detection_ms, 1),
            "audio_blocks": self.audio_blocks,
            "doa_blocks": self.doa_blocks,
            "frames_dropped": self.frames_dropped,
            "program": self.program,
            "audio_overflows": self.audio_overflows,
            "audio_blocks_dropped": self.audio_blocks_dropped,
            "audio_gaps": self.audio_gaps,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stats:
        return cls(
            float(d["t"]),
            int(d.get("frames", 0)),
            int(d.get("detections", 0)),
            float(d.get("detection_ms", 0.0)),
            int(d.get("audio_blocks", 0)),
            int(d.get("doa_blocks", 0)),
            int(d.get("frames_dropped", 0)),
            str(d.get("program", "crop")),
            int(d.get("audio_overflows", 0)),
            int(d.get("audio_blocks_dropped", 0)),
            int(d.get("audio_gaps", 0)),
        )


@dataclass(frozen=True)
class MeetingStatus:
    """A meeting connector's state (WHIP, Janus): connecting, connected, retrying, failed, stopped."""

    KIND: ClassVar[str] = "meeting"
    name: str
    state: str
    detail: str = ""
    t: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "detail": self.detail, "t": _r(self.t)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MeetingStatus:
        return cls(str(d["name"]), str(d["state"]), str(d.get("detail", "")), float(d.get("t", 0.0)))


@dataclass(frozen=True)
class Decisions:
    """The director's latest cuts, newest first (a bounded log): why the camera shows what it shows."""

    KIND: ClassVar[str] = "decisions"
    cuts: tuple[Shot, ...]

    def to_json(self) -> dict[str, Any]:
        return {"cuts": [c.to_json() for c in self.cuts]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Decisions:
        return cls(tuple(Shot.from_json(c) for c in d["cuts"]))


@dataclass(frozen=True)
class RoomState:
    """The room's controls as the panel shows them: the framing mode, the microphones (muted or not), the
    speaker volume (0-100), the meetings configured (each a :class:`MeetingStatus`), the cameras and mic
    arrays configured, the one running and the one chosen for the next start, and what waits for a restart."""

    KIND: ClassVar[str] = "room"
    t: float
    policy: str | None = None
    muted: bool = False
    volume: int = 100
    meetings: tuple[MeetingStatus, ...] = ()
    cameras: tuple[str, ...] = ()
    camera: str = ""
    camera_chosen: str = ""
    mic_arrays: tuple[str, ...] = ()
    mic_array: str = ""
    mic_array_chosen: str = ""
    restart_required: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "policy": self.policy,
            "muted": self.muted,
            "volume": self.volume,
            "meetings": [m.to_json() for m in self.meetings],
            "cameras": list(self.cameras),
            "camera": self.camera,
            "camera_chosen": self.camera_chosen,
            "mic_arrays": list(self.mic_arrays),
            "mic_array": self.mic_array,
            "mic_array_chosen": self.mic_array_chosen,
            "restart_required": list(self.restart_required),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RoomState:
        policy = d.get("policy")
        return cls(
            float(d["t"]),
            None if policy is None else str(policy),
            bool(d.get("muted", False)),
            int(d.get("volume", 100)),
            tuple(MeetingStatus.from_json(m) for m in d.get("meetings", ())),
            tuple(str(c) for c in d.get("cameras", ())),
            str(d.get("camera", "")),
            str(d.get("camera_chosen", "")),
            tuple(str(m) for m in d.get("mic_arrays", ())),
            str(d.get("mic_array", "")),
            str(d.get("mic_array_chosen", "")),
            tuple(str(k) for k in d.get("restart_required", ())),
        )


@dataclass(frozen=True)
class CalibrationPoint:
    """One point of the mic array's guided calibration (:mod:`appliance.calibration`): the talker was heard at
    ``doa_deg`` (the array's frame) and their face seen at ``camera_deg``; ``blocks`` speech blocks with a
    direction, their spread (degrees), ``faces`` detections that saw the face; ``level_db`` the median voice-band
    level of those blocks (dBFS, as the hearing heard them: after the gain in force)."""

    name: str
    doa_deg: float
    camera_deg: float
    blocks: int = 0
    spread_deg: float = 0.0
    faces: int = 0
    level_db: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "doa_deg": _r(self.doa_deg, 2),
            "camera_deg": _r(self.camera_deg, 2),
            "blocks": int(self.blocks),
            "spread_deg": _r(self.spread_deg, 2),
            "faces": int(self.faces),
            "level_db": None if self.level_db is None else _r(self.level_db, 1),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CalibrationPoint:
        level = d.get("level_db")
        return cls(
            str(d["name"]),
            float(d["doa_deg"]),
            float(d["camera_deg"]),
            int(d.get("blocks", 0)),
            float(d.get("spread_deg", 0.0)),
            int(d.get("faces", 0)),
            None if level is None else float(level),
        )


@dataclass(frozen=True)
class CalibrationState:
    """The mic array's calibration as the panel and ``/api/state`` show it: the one saved (``calibrated``,
    ``when``, for which ``mic_array``, whether it is ``in_use`` with the array running, its rotation, scale and
    points) and the guided calibration under way (the point ``capturing`` until ``until`` on the capture clock
    with ``blocks`` speech blocks so far, the points ``captured``, the fit they give or why not, the last
    refusal)."""

    KIND: ClassVar[str] = "calibration"
    t: float
    calibrated: bool = False
    in_use: bool = False
    when: str = ""
    mic_array: str = ""
    rotation_deg: float | None = None
    scale: float | None = None
    points: tuple[tuple[float, float], ...] = ()
    capturing: str | None = None
    until: float = 0.0
    blocks: int = 0
    captured: tuple[CalibrationPoint, ...] = ()
    proposal: str = ""  # what the captured points fit to (or why they do not)
    proposal_ok: bool = False
    error: str = ""  # the last refusal (a capture, a fit, a save)
    gain_db: float = 0.0  # the gain on the array's audio the saved calibration set (dB)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": _r(self.t),
            "calibrated": self.calibrated,
            "in_use": self.in_use,
            "when": self.when,
            "mic_array": self.mic_array,
            "rotation_deg": None if self.rotation_deg is None else _r(self.rotation_deg, 2),
            "scale": None if self.scale is None else _r(self.scale, 3),
            "points": [[_r(d, 2), _r(c, 2)] for d, c in self.points],
            "gain_db": _r(self.gain_db, 1),
            "capturing": self.capturing,
            "until": _r(self.until),
            "blocks": int(self.blocks),
            "captured": [p.to_json() for p in self.captured],
            "proposal": self.proposal,
            "proposal_ok": self.proposal_ok,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CalibrationState:
        rot, scale, capturing = d.get("rotation_deg"), d.get("scale"), d.get("capturing")
        return cls(
            float(d["t"]),
            bool(d.get("calibrated", False)),
            bool(d.get("in_use", False)),
            str(d.get("when", "")),
            str(d.get("mic_array", "")),
            None if rot is None else float(rot),
            None if scale is None else float(scale),
            tuple((float(p[0]), float(p[1])) for p in d.get("points", ())),
            None if capturing is None else str(capturing),
            float(d.get("until", 0.0)),
            int(d.get("blocks", 0)),
            tuple(CalibrationPoint.from_json(p) for p in d.get("captured", ())),
            str(d.get("proposal", "")),
            bool(d.get("proposal_ok", False)),
            str(d.get("error", "")),
            float(d.get("gain_db", 0.0)),
        )


class Message(Protocol):
    """What every message is: a kind, a JSON form and a way back from it."""

    KIND: ClassVar[str]

    def to_json(self) -> dict[str, Any]: ...


AnyMessage = (
    Faces | Doa | Shot | DeviceStatus | CameraInfo | Stats | Decisions | MeetingStatus | RoomState | CalibrationState
)
MESSAGE_TYPES: dict[str, type[AnyMessage]] = {
    t.KIND: t
    for t in (
        Faces,
        Doa,
        Shot,
        DeviceStatus,
        CameraInfo,
        Stats,
        Decisions,
        MeetingStatus,
        RoomState,
        CalibrationState,
    )
}


def envelope(message: Message) -> dict[str, Any]:
    """A message on a mixed stream: ``{"kind": KIND, "data": to_json()}``."""
    return {"kind": message.KIND, "data": message.to_json()}


def from_envelope(d: Mapping[str, Any]) -> AnyMessage:
    """The message in an envelope; a ValueError names an unknown kind or a malformed message."""
    kind = d.get("kind")
    cls = MESSAGE_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown message kind {kind!r}")
    try:
        return cls.from_json(d["data"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed {kind} message: {type(e).__name__}: {e}") from None
