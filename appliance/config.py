"""The one config model: validates the TOML file, and later drives the panel's forms and the remote API.

Unknown keys are refused; every field has a title, a unit where it has one, and bounds. A config that
does not validate raises :class:`ConfigError`, which names the key and the reason.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import Field, ValidationError, field_validator, model_validator

from appliance.calibration import CalibrationRefused, Limits, fit
from appliance.control.settings import MqttConfig
from appliance.logs import LogConfig
from common.settings import ConfigError, Section, describe_errors, host_or_ip, read_toml
from drivers.base import CameraSection, MicArraySection
from drivers.registry import Kind, drivers, section_union

CameraSections = section_union("camera")
MicArraySections = section_union("mic_array")
PtzSections = section_union("ptz")
SpeakerSections = section_union("speaker")
_Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")]


class DoaConfig(Section):
    block_ms: float = Field(64.0, ge=8.0, le=512.0, title="Analysis block (ms)")
    hop_ms: float = Field(32.0, ge=4.0, le=512.0, title="Hop between blocks (ms)")
    fmin_hz: float = Field(300.0, ge=50.0, le=8000.0, title="Lowest frequency used (Hz)")
    fmax_hz: float = Field(4000.0, ge=500.0, le=24000.0, title="Highest frequency used (Hz)")
    grid_deg: float = Field(1.0, ge=0.1, le=10.0, title="Azimuth grid step (degrees)")
    speech_snr_db: float = Field(9.0, ge=0.0, le=60.0, title="Speech gate above the noise floor (dB)")
    min_level_db: float = Field(-65.0, ge=-120.0, le=0.0, title="Quietest block considered (dBFS)")
    min_confidence: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        title="Least DOA confidence reported",
        description="With estimator srp-phat: speech blocks whose SRP-PHAT peak "
        "stands out less than this (0..1) get no azimuth.",
    )
    estimator: Literal["tracker", "srp-phat"] = Field(
        "tracker",
        title="How the box hears where speech comes from",
        description="tracker: soft evidence over 360 degrees, tracked sources, the far end told apart by the "
        "playback reference ([tracker]); srp-phat: one SRP-PHAT peak per block behind a confidence gate.",
    )

    vad: Literal["energy", "silero"] = Field(
        "silero",
        title="Voice activity detector",
        description="silero: the Silero VAD v6 network (carried, offline, through ONNX Runtime), on the mics "
        "steered towards the source the box listens to; energy: band level over an adaptive noise floor (fires on "
        "a door or typing too).",
    )
    vad_threshold: float = Field(
        0.5,
        ge=0.05,
        le=0.95,
        title="Silero speech probability threshold",
        description="Speech starts above this probability and ends 0.15 below it.",
    )
    vad_rate: Literal[8000, 16000] = Field(
        16000,
        title="Rate the Silero network hears (Hz)",
        description="16000: the network hears 16 kHz; 8000: the voice signal low-passed and decimated to 8 kHz "
        "(Silero's 8 kHz model): about 4 % less of Silero's CPU in the listener, and more chair scrapes, "
        "typing and coughs taken for speech (docs/hearing-grid.md, 'Cost, fourth pass').",
    )

    @model_validator(mode="after")
    def _band(self) -> DoaConfig:
        if self.fmax_hz <= self.fmin_hz:
            raise ValueError(f"fmax_hz ({self.fmax_hz:g}) must be above fmin_hz ({self.fmin_hz:g})")
        return self


class TrackerConfig(Section):
    """Soft DOA evidence, the source tracker and the far-end detector (:mod:`appliance.perception.listening`)."""

    full_circle: bool = Field(
        True,
        title="Search all around the array",
        description="360 degrees where the geometry allows it (a planar array); a linear "
        "array always searches the front half only. A flat array on the wall under the camera: false "
        "(nobody talks from inside the wall; what comes from there is the wall's reflection).",
    )
    max_azimuth_deg: float = Field(
        90.0,
        ge=10.0,
        le=90.0,
        title="Widest azimuth searched (degrees off the camera's axis)",
        description="When the search is the front half (a linear array, or full_circle = false): nothing "
        "further out is searched. An array under the camera: the camera's half field of view plus a margin "
        "(75 for a 120-degree camera): nobody further out can be framed, and what an array flat on the "
        "front wall hears from there is mostly the side walls' reflections.",
    )
    hop_ms: float = Field(
        64.0,
        ge=8.0,
        le=512.0,
        title="Hop between analysed blocks (ms)",
        description="The block length is [doa] block_ms; a hop as long as the block analyses every sample once.",
    )
    max_sources: int = Field(2, ge=1, le=4, title="Most simultaneous sources per block")
    second_ratio: float = Field(
        0.45,
        ge=0.0,
        le=1.0,
        title="Second source, least height relative to the first",
        description="After masking the first source, the next peak must reach this "
        "fraction of the first peak's height.",
    )
    min_weight: float = Field(0.04, ge=0.0, le=1.0, title="Least evidence weight of a block estimate")
    birth_evidence: float = Field(0.5, gt=0.0, le=20.0, title="Evidence needed to confirm a new source")
    evidence_tau_s: float = Field(0.6, gt=0.0, le=30.0, title="Memory of a source's evidence (s)")
    gate_deg: float = Field(14.0, ge=1.0, le=90.0, title="Widest estimate-to-source distance (degrees)")
    merge_deg: float = Field(8.0, ge=0.0, le=60.0, title="Sources closer than this are merged (degrees)")
    process_noise_deg: float = Field(6.0, ge=0.0, le=90.0, title="How far a talker may move in 1 s (degrees)")
    measurement_deg: float = Field(4.0, gt=0.0, le=90.0, title="Error of a full-weight block estimate (degrees)")
    active_hold_s: float = Field(0.35, ge=0.0, le=10.0, title="A source stays active this long after evidence (s)")
    forget_s: float = Field(20.0, ge=0.1, le=600.0, title="A talker unheard this long is forgotten (s)")
    forget_noise_s: float = Field(60.0, ge=0.1, le=3600.0, title="A learnt noise or loudspeaker is kept (s)")
    noise_learn_s: float = Field(1.5, ge=0.1, le=60.0, title="Observation time before a source is classified (s)")
    steady_db: float = Field(2.5, ge=0.0, le=20.0, title="Level spread of a steady (non-speech) source (dB)")
    max_talker_elevation_deg: float = Field(
        50.0,
        ge=5.0,
        le=90.0,
        title="Highest talker elevation (degrees)",
        description="A source seen from higher up (a ceiling loudspeaker) "
        "is not taken for a seated or standing person. A small planar "
        "array's elevation is coarse and reads high in reverberation.",
    )
    farend_ratio: float = Field(
        0.08,
        ge=0.0,
        le=1.0,
        title="Far-end share of the mics' power to mark a block",
        description="Fraction of the array's power explained by the playback "
        "reference above which a block is far end, not local speech.",
    )
    farend_max_delay_ms: float = Field(60.0, ge=1.0, le=500.0, title="Longest reference-to-mic delay (ms)")
    farend_window_ms: float = Field(256.0, ge=64.0, le=2000.0, title="Far-end detector window (ms)")
    farend_hold_s: float = Field(0.15, ge=0.0, le=5.0, title="Far-end marking held after the reference (s)")


_TileCount = Annotated[int, Field(ge=1, le=16)]


class BlazeFaceConfig(Section):
    """``[detector] type = "blazeface"``: MediaPipe BlazeFace on the whole frame and on overlapping tiles."""

    type: Literal["blazeface"] = "blazeface"
    model: Literal["full_range", "short_range"] = Field("full_range", title="BlazeFace model")
    min_score: float = Field(0.5, ge=0.05, le=1.0, title="Least detection score")
    tiles: tuple[_TileCount, _TileCount] = Field(
        (5, 3),
        title="Tiles (columns, rows)",
        description="The picture is also searched in overlapping tiles so that small, far faces are found.",
    )
    interval_s: float = Field(0.4, ge=0.03, le=10.0, title="Time between detections (s)")


DetectorConfig = BlazeFaceConfig  # the name BlazeFace's section had before detectors were plugins


class YuNetConfig(Section):
    """``[detector] type = "yunet"`` (the default): OpenCV's YuNet on a downscaled copy of the frame, small or
    uncertain faces confirmed on full-resolution crops."""

    type: Literal["yunet"] = "yunet"
    min_score: float = Field(0.6, ge=0.05, le=1.0, title="Least detection score")
    candidate_score: float = Field(
        0.02,
        ge=0.01,
        le=1.0,
        title="Least score of a face worth a second look",
        description="Faces between this and min_score on the downscaled copy are "
        "looked at again on a full-resolution crop.",
    )
    confirm_score: float = Field(
        0.8,
        ge=0.05,
        le=1.0,
        title="Least score of a face confirmed on a crop",
        description="A small or uncertain face is kept when its full-resolution "
        "crop scores this much (blobs such as a galaxy on a poster score up to 0.77).",
    )
    long_side: int = Field(960, ge=160, le=3840, title="Long side of the downscaled copy (px)")
    min_face_px: int = Field(
        24,
        ge=8,
        le=400,
        title="Smallest face to find (px of the frame)",
        description="A frame whose downscaled copy would show such a face under "
        "12 px is searched at a larger scale (more time per search).",
    )
    refine_below_px: int = Field(
        64,
        ge=0,
        le=1000,
        title="Faces narrower than this are refined (px)",
        description="Their box and score come from a full-resolution crop.",
    )
    interval_s: float = Field(0.2, ge=0.03, le=10.0, title="Time between detections (s)")
    scan_interval_s: float = Field(
        3.0,
        ge=0.0,
        le=60.0,
        title="Time between whole-frame searches (s)",
        description="In between, the faces being tracked are looked for on "
        "full-resolution crops around them only; 0 searches the whole frame "
        "every time.",
    )


DetectorSection = Annotated[YuNetConfig | BlazeFaceConfig, Field(discriminator="type")]


class DirectorConfig(Section):
    min_hold_s: float = Field(1.5, ge=0.0, le=60.0, title="Least time on a shot before a cut (s)")
    switch_after_s: float = Field(0.25, ge=0.0, le=10.0, title="Localized speech needed to cut to a new talker (s)")
    silence_to_group_s: float = Field(5.0, ge=0.5, le=600.0, title="Silence before the group shot (s)")
    match_deg: float = Field(10.0, ge=1.0, le=45.0, title="Largest DOA-to-face distance (degrees)")
    evidence_tau_s: float = Field(0.5, gt=0.0, le=10.0, title="Memory of speech evidence (s)")
    face_widths: float = Field(5.5, ge=2.0, le=20.0, title="Speaker shot width in face widths")
    group_margin: float = Field(0.6, ge=0.0, le=5.0, title="Group shot margin in face widths")
    smooth_tau_s: float = Field(0.5, ge=0.0, le=10.0, title="Framing smoothing time constant (s)")
    min_crop_frac: float = Field(0.25, gt=0.05, le=1.0, title="Narrowest crop (fraction of width)")
    mode: Literal["speaker", "group", "gallery", "off"] = Field(
        "speaker",
        title="Framing mode at start",
        description="speaker: the talker, the group when nobody talks; group: everyone present; gallery: up to "
        "gallery_max people each in a tile; off: the whole view. Manual framing comes from the panel.",
    )
    manual_resume_s: float = Field(
        30.0,
        ge=0.0,
        le=86400.0,
        title="Automatic framing resumes after manual (s)",
        description="0: manual framing stays until another mode is chosen.",
    )
    gallery_max: int = Field(4, ge=1, le=4, title="People in the gallery")
    exclude_deg: list[tuple[float, float]] = Field(
        default_factory=list,
        max_length=16,
        title="Azimuth ranges where nobody is framed (degrees)",
        description="[from, to] pairs, e.g. a TV or a picture on the wall; faces there are never framed.",
    )
    print_still_s: float = Field(
        20.0,
        ge=1.0,
        le=3600.0,
        title="A face still this long and never heard is a picture (s)",
        description="A face track that has not moved for this long and was never matched to speech (a print on "
        "the wall, the room's display) is never the subject of a close shot and never a reason to move.",
    )
    ping_pong_swaps: int = Field(
        3,
        ge=0,
        le=20,
        title="Talker swaps between two people that make an exchange (0: off)",
        description="After this many swaps between the same two talkers within ping_pong_window_s, both are "
        "framed together until the exchange ends.",
    )
    ping_pong_window_s: float = Field(20.0, ge=1.0, le=300.0, title="Time in which the exchange's swaps count (s)")
    ping_pong_quick_s: float = Field(
        3.0,
        ge=0.0,
        le=30.0,
        title="A turn this short that a neighbour answers starts an exchange at once (s; 0: off)",
        description="When the new talker answers their neighbour (nobody seen between them), who held the floor "
        "less than this, both are framed together at once, as after ping_pong_swaps swaps: quick remarks back "
        "and forth between neighbours are an exchange. Across the table the ping_pong_swaps rule still applies.",
    )
    ping_pong_end_s: float = Field(
        4.0, ge=0.5, le=60.0, title="One talker holding the floor this long ends an exchange (s)"
    )
    answer_two_shot_s: float = Field(
        2.0,
        ge=0.0,
        le=30.0,
        title="A neighbour's answer keeps the one they answer in the shot this long (s; 0: off)",
        description="When the new talker answers their neighbour (nobody seen between them), the cut to them "
        "keeps that neighbour in the picture at its edge, the talker nearer the centre, for this long; then the "
        "shot glides in to the talker alone. An answer often starts an exchange, which then has both in the "
        "picture from its first swap. Not when the two would need a shot wider than two speaker shots.",
    )
    lips: bool = Field(
        True,
        title="Give heard speech to the face whose lips move",
        description="Among the faces within lips_window_deg of a heard direction, speech goes to those whose "
        "mouths move (appliance/perception/lips.py); with none, to the heard direction as before.",
    )
    lips_window_deg: float = Field(
        60.0,
        ge=0.0,
        le=90.0,
        title="Faces this near a heard direction may take its speech by their lips (degrees)",
        description="Wide: a small array under the camera in a reverberant room can hear a talker 30-40 "
        "degrees off (wall reflections, front and back confused), and only faces whose lips move take speech.",
    )
    lips_min: float = Field(
        0.1, ge=0.0, le=50.0, title="Lip activity that counts as a moving mouth (grey levels per frame)"
    )
    farend_still: bool = Field(
        True,
        title="Hold the picture still while the far end talks",
        description="While the far end's voice plays in the room and nobody in the room speaks, the shot does "
        "not glide, and the silence, print and exchange-ended cuts wait until the far end has been quiet "
        "farend_quiet_s: the room is listening, and the far end sees a still picture.",
    )
    farend_quiet_s: float = Field(
        1.5, ge=0.0, le=30.0, title="The far end counts as talking until it has been quiet this long (s)"
    )
    behind: Literal["mirror", "clamp"] = Field(
        "mirror",
        title="Speech heard behind the camera",
        description="mirror: a direction behind the camera's plane is taken as its mirror image in front (a box "
        "on the front wall has nobody behind it; what a small array hears there is the front wall's reflection, "
        "or front and back confused). clamp: it counts at the picture's nearest side, as a talker out of view.",
    )
    frame_overlap: bool = Field(True, title="Frame both when two people talk over each other")
    overlap_ratio: float = Field(
        0.5,
        ge=0.05,
        le=1.0,
        title="The second talker's share of the first's recent speech that counts as talking over",
    )
    overlap_level_s: float = Field(
        0.15, ge=0.01, le=5.0, title="Least recent speech of each of two talkers over each other (s)"
    )
    overlap_after_s: float = Field(
        0.8, ge=0.0, le=10.0, title="Two talking over each other this long before both are framed (s)"
    )

    @field_validator("exclude_deg")
    @classmethod
    def _ranges(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for i, (lo, hi) in enumerate(v):
            if not (-180.0 <= lo < hi <= 180.0):
                raise ValueError(f"range {i} is [{lo}, {hi}]: give [from, to] with -180 <= from < to <= 180")
        return v


_Angle = Annotated[float, Field(ge=-180.0, le=180.0)]


class CalibrationConfig(Section):
    """The mic array's calibration against the camera (:mod:`appliance.calibration`): the points the guided
    calibration captured, what a capture needs and what a fit may be. Every DOA block is mapped through it
    before the director sees it (:mod:`appliance.step`)."""

    points: list[tuple[_Angle, _Angle]] = Field(
        default_factory=list,
        max_length=8,
        title="Calibration points: [heard azimuth, camera azimuth] (degrees)",
        description="Empty: not calibrated. One point: the array's rotation; two or more: a monotone map "
        "between them. Written by the guided calibration on the panel or POST /api/calibration/save.",
    )
    mic_array: str = Field(
        "",
        max_length=40,
        title="Mic array the points were captured with",
        description="The calibration applies while this array ([mic_arrays.NAME]) is the one in use; empty: any.",
    )
    when: str = Field("", max_length=40, title="When the calibration was saved (UTC)")
    gain_db: float = Field(
        0.0,
        ge=-30.0,
        le=30.0,
        title="Gain on the mic array's audio before the hearing (dB)",
        description="Written by the guided calibration: the talkers' speech brought to the level the hearing is "
        "tuned for (about -33 dBFS in the voice band; within 4 dB of it the gain stays). Applies while the array "
        "the calibration was captured with is in use; by hand: raise it for a quiet array, lower it for a loud one.",
    )
    capture_s: float = Field(5.0, ge=1.0, le=60.0, title="Time one calibration point listens (s)")
    min_blocks: int = Field(12, ge=3, le=1000, title="Least speech blocks with a direction for a point")
    max_spread_deg: float = Field(8.0, ge=0.5, le=45.0, title="Widest DOA spread of a point's speech (degrees)")
    voice_gap_deg: float = Field(
        15.0, ge=2.0, le=90.0, title="Blocks this far from the talker's direction are another voice (degrees)"
    )
    max_offset_deg: float = Field(
        90.0,
        ge=1.0,
        le=180.0,
        title="Largest rotation of the array a calibration may find (degrees)",
        description="More means the array would face away from the camera: the config's positions are wrong.",
    )
    min_scale: float = Field(0.25, gt=0.0, le=1.0, title="Least camera degrees per heard degree between points")
    max_scale: float = Field(4.0, ge=1.0, le=20.0, title="Most camera degrees per heard degree between points")
    min_separation_deg: float = Field(
        5.0, ge=0.5, le=90.0, title="Least distance between two points in the picture (degrees)"
    )

    @property
    def limits(self) -> Limits:
        return Limits(
            self.min_blocks,
            self.max_spread_deg,
            self.voice_gap_deg,
            self.max_offset_deg,
            self.min_scale,
            self.max_scale,
            self.min_separation_deg,
        )

    @model_validator(mode="after")
    def _fits(self) -> CalibrationConfig:
        if self.points:
            try:
                fit(self.points, self.limits)
            except CalibrationRefused as e:
                raise ValueError(f"points {[list(p) for p in self.points]}: {e}") from None
        return self


class StreamConfig(Section):
    width: int = Field(1280, ge=160, le=3840, multiple_of=2, title="Output width (px)")
    height: int = Field(720, ge=90, le=2160, multiple_of=2, title="Output height (px)")
    fps: float = Field(30.0, ge=1.0, le=60.0, title="Output frame rate (frames/s)")
    codecs: tuple[Literal["VP8", "H264"], ...] = Field(
        ("VP8", "H264"),
        min_length=1,
        max_length=2,
        title="Video codecs, preferred first",
        description="What the box offers (WHIP, Janus); a viewer's offer decides among these. One shared "
        "encoder runs per codec in use, whatever the number of viewers.",
    )
    bitrate_kbps: int = Field(2500, ge=100, le=50_000, title="Video bitrate (kbit/s)")
    min_bitrate_kbps: int = Field(
        300,
        ge=50,
        le=50_000,
        title="Least video bitrate (kbit/s)",
        description="Receivers' estimates (REMB) lower the bitrate, never below this.",
    )
    keyframe_interval_s: float = Field(
        10.0,
        ge=0.5,
        le=600.0,
        title="Time between periodic keyframes (s)",
        description="Receivers also get a keyframe whenever they ask (PLI/FIR).",
    )
    x264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        "ultrafast", title="H.264 encoder preset (libx264)"
    )
    vp8_cpu_used: int = Field(
        8,
        ge=4,
        le=16,
        title="VP8 encoder speed (libvpx cpu-used, realtime)",
        description="Higher is faster and coarser.",
    )
    playout_delay: bool = Field(
        True,
        title="Tell receivers how long they may hold a frame",
        description="The RTP playout-delay header extension (minimum 0, maximum below) on the box's video. Off: "
        "the receiver's jitter buffer decides (25-100 ms in Chromium on a loaded machine).",
    )
    playout_delay_max_ms: int = Field(
        0,
        ge=0,
        le=40_950,
        title="Most time a receiver may hold a frame before showing it (ms)",
        description="0 shows each frame as soon as it is decoded (the panel on the room's network); more smooths "
        "a jittery network.",
    )
    ice_loopback: bool = Field(
        True,
        title="Offer a loopback candidate",
        description="So that a browser on the box itself (the kiosk panel, the demo page) connects over 127.0.0.1.",
    )


class IceServerConfig(Section):
    urls: tuple[Annotated[str, Field(pattern=r"^(stun|stuns|turn|turns):.+")], ...] = Field(
        min_length=1, title="STUN/TURN URLs", description='As in WebRTC: "stun:host:port", "turn:host?transport=udp".'
    )
    username: str = Field("", max_length=256, title="TURN user name")
    credential: str = Field("", max_length=256, title="TURN password")


class WhipConfig(Section):
    url: str = Field(
        "",
        max_length=2048,
        pattern=r"^(https?://.+)?$",
        title="WHIP endpoint URL",
        description="Empty: do not publish over WHIP. `roombox demo --whip URL` sets it.",
    )
    token: str = Field("", max_length=4096, title="Bearer token for the WHIP endpoint")
    ice_servers: tuple[IceServerConfig, ...] = Field((), max_length=8, title="ICE servers (STUN/TURN)")
    connect_timeout_s: float = Field(15.0, ge=1.0, le=120.0, title="Time to get connected (s)")
    media_timeout_s: float = Field(
        4.0,
        ge=1.0,
        le=60.0,
        title="Silence from the far end before reconnecting (s)",
        description="No RTCP from the ingest for this long counts as a lost connection.",
    )
    retry_min_s: float = Field(1.0, ge=0.1, le=60.0, title="First retry after (s)")
    retry_max_s: float = Field(8.0, ge=0.5, le=600.0, title="Longest time between retries (s)")

    @field_validator("token")
    @classmethod
    def _one_word(cls, v: str) -> str:
        """The token goes into an ``Authorization`` header: a line break or a blank there would fail (or split the
        header) at every connection, long after the config was taken."""
        if any(ch.isspace() for ch in v):
            raise ValueError("a bearer token has no blanks or line breaks (one pasted with its newline?)")
        return v


class JanusConfig(Section):
    url: str = Field(
        "",
        max_length=2048,
        pattern=r"^(https?://.+)?$",
        title="Janus HTTP API URL",
        description="Such as http://janus.example:8088/janus. Empty: do not join a Janus VideoRoom.",
    )
    room: int = Field(1234, ge=1, title="VideoRoom number")
    pin: str = Field("", max_length=256, title="VideoRoom PIN")
    display: str = Field("Roombox", min_length=1, max_length=100, title="Name shown to the other participants")
    subscribe: bool = Field(True, title="Receive the other participants (picture for /display, sound)")
    max_far_ends: int = Field(
        8,
        ge=1,
        le=64,
        title="Most participants received at once",
        description="Each one received is a picture decoded: a large room's first ones are received",
    )
    ice_servers: tuple[IceServerConfig, ...] = Field((), max_length=8, title="ICE servers (STUN/TURN)")
    connect_timeout_s: float = Field(15.0, ge=1.0, le=120.0, title="Time to get connected (s)")
    media_timeout_s: float = Field(4.0, ge=1.0, le=60.0, title="Silence from Janus before reconnecting (s)")
    retry_min_s: float = Field(1.0, ge=0.1, le=60.0, title="First retry after (s)")
    retry_max_s: float = Field(8.0, ge=0.5, le=600.0, title="Longest time between retries (s)")


class PtzFollowConfig(Section):
    """A PTZ camera that shows the director's shot: the director frames on the main (wide) camera, and the
    PTZ head named here is moved to show the same view (:mod:`appliance.ptz_follow`)."""

    enabled: bool = Field(False, title="Move a PTZ camera with the director's shots")
    ptz: str = Field(
        "",
        pattern=r"^([A-Za-z][A-Za-z0-9_-]{0,39})?$",
        title="PTZ camera that follows",
        description="A [ptz.NAME]; empty: the first one",
    )
    deadband: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        title="Least change worth a move (fraction of the view)",
        description="A slow glide moves the head only once its target is off by more than this fraction of the "
        "head's field of view (or the zoom by this fraction); a cut moves it at once.",
    )
    min_interval_s: float = Field(1.0, ge=0.0, le=60.0, title="Least time between two moves on a glide (s)")
    home_azimuth_deg: float = Field(
        0.0, ge=-180.0, le=180.0, title="Where the head's home points (azimuth in the wide camera, degrees)"
    )
    home_elevation_deg: float = Field(
        0.0, ge=-90.0, le=90.0, title="Where the head's home points (elevation in the wide camera, degrees)"
    )
    retry_s: float = Field(2.0, ge=0.1, le=600.0, title="Retry a PTZ camera that does not answer after (s)")
    program_timeout_s: float = Field(
        1.0,
        ge=0.1,
        le=30.0,
        title="Back to the wide camera's crop after (s) without a PTZ picture",
        description="When the head's [ptz.NAME] names its camera, that camera's picture is what the meeting "
        "sees; without a picture from it for this long (or while it or the head is lost) the meeting sees "
        "the crop of the wide camera instead, until it is back (appliance/program.py).",
    )


class PanelConfig(Section):
    host: str = Field("127.0.0.1", title="Listen address")
    port: int = Field(8080, ge=1, le=65535, title="Listen port")

    @field_validator("host")
    @classmethod
    def _address(cls, v: str) -> str:
        """An IP address or a host name: anything else would keep the box from starting (it cannot listen)."""
        return host_or_ip(v, "to listen on")


_HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", max_length=253)]
_Origin = Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.:\[\]-]{1,260}$", max_length=270)]


class AccessConfig(Section):
    """Who may reach the panel and the API, and how much any one caller may ask of the box."""

    allowed_hosts: list[_HostName] = Field(
        default_factory=list,
        max_length=32,
        title="Other host names the box answers to",
        description="IP addresses, localhost and this machine's hostname (and NAME.local) are always "
        "answered; any other Host header is refused (DNS rebinding).",
    )
    allowed_origins: list[_Origin] = Field(
        default_factory=list,
        max_length=32,
        title="Other web origins allowed to make offers and open sockets",
        description="The page's own origin is always allowed, e.g. https://rooms.example.com",
    )
    max_body_kb: int = Field(256, ge=16, le=16384, title="Largest request body (KiB)")
    max_viewers: int = Field(8, ge=1, le=64, title="Most WebRTC viewers at once")
    max_sockets: int = Field(64, ge=1, le=1024, title="Most panel sockets at once")
    max_sockets_per_client: int = Field(
        8,
        ge=1,
        le=1024,
        title="Most panel sockets one token or session holds at once",
        description="So that one client cannot take every socket and lock the room's panel out.",
    )
    ice_timeout_s: float = Field(
        15.0,
        ge=2.0,
        le=120.0,
        title="Time for a viewer to connect (s)",
        description="A peer that has not connected by then is dropped.",
    )
    max_media_lines: int = Field(3, ge=1, le=16, title="Most m-lines in a viewer's offer")
    session_hours: float = Field(12.0, gt=0.0, le=720.0, title="Panel session lifetime (hours)")
    pin_minutes: float = Field(15.0, gt=0.0, le=1440.0, title="Admin rights after the PIN (minutes)")
    pin_free_tries: int = Field(3, ge=1, le=20, title="Wrong PINs before the back-off starts")
    pin_max_backoff_s: float = Field(300.0, ge=1.0, le=86400.0, title="Longest wait after wrong PINs (s)")


_LEGACY: dict[Kind, str] = {"camera": "cameras", "mic_array": "mic_arrays"}
_LEGACY_TYPE = {"camera": "file", "mic_array": "wav"}


class Config(Section):
    """The whole config. Devices are named: ``[cameras.main]``, ``[mic_arrays.table]``, each with the
    ``type`` of its driver (:mod:`drivers.registry`) and that driver's keys. The first camera and the first
    mic array are the ones the director frames and listens with."""

    cameras: dict[_Name, CameraSections] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"main": _default("camera")}, min_length=1, max_length=8, title="Cameras"
    )
    mic_arrays: dict[_Name, MicArraySections] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"main": _default("mic_array")}, min_length=1, max_length=8, title="Mic arrays"
    )
    ptz: dict[_Name, PtzSections] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        max_length=8,
        title="PTZ cameras",
        description='[ptz.NAME] type = "visca-ip" | "visca-tcp" | "visca-serial" | "uvc"',
    )
    speakers: dict[_Name, SpeakerSections] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        max_length=4,
        title="Loudspeakers",
        description='[speakers.NAME] type = "sounddevice": the first plays the far end (drivers.audio.speaker)',
    )
    ptz_follow: PtzFollowConfig = Field(default_factory=PtzFollowConfig, title="PTZ camera following the director")
    doa: DoaConfig = Field(default_factory=DoaConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    detector: DetectorSection = Field(default_factory=YuNetConfig)
    director: DirectorConfig = Field(default_factory=DirectorConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig, title="Mic array calibration")
    stream: StreamConfig = Field(default_factory=StreamConfig)
    panel: PanelConfig = Field(default_factory=PanelConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    whip: WhipConfig = Field(default_factory=WhipConfig)
    janus: JanusConfig = Field(default_factory=JanusConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig, title="Fleet control over MQTT")
    log: LogConfig = Field(default_factory=LogConfig, title="Logging")

    @model_validator(mode="before")
    @classmethod
    def _legacy_sections(cls, data: Any) -> Any:
        """``[camera]`` and ``[mic_array]`` (one device each, as written before named devices) still work: they
        are the ``main`` file camera and WAV mic array. Mixed with the named form they are refused.

        A ``[detector]`` without ``type`` (as written before detectors were plugins) is BlazeFace when it has
        BlazeFace's own keys (``model`` or ``tiles``), else YuNet, the default."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in _LEGACY.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(
                    f"[{old}] and [{new}.*] together: write [{new}.main] (with its other keys) instead of [{old}]"
                )
            section = data.pop(old)
            if isinstance(section, dict):
                section = {"type": _LEGACY_TYPE[old], **section}
            data[new] = {"main": section}
        for kind, new in _LEGACY.items():
            sections = data.get(new)
            for name, section in sections.items() if isinstance(sections, dict) else ():
                if isinstance(section, dict) and "type" not in section:
                    raise ValueError(f"[{new}.{name}] has no type: give one of {', '.join(drivers(kind))}")
        for kind, key in (("ptz", "ptz"), ("speaker", "speakers")):
            for name, section in data[key].items() if isinstance(data.get(key), dict) else ():
                if isinstance(section, dict) and "type" not in section:
                    raise ValueError(f"[{key}.{name}] has no type: give one of {', '.join(drivers(kind))}")
        detector = data.get("detector")
        if isinstance(detector, dict) and "type" not in detector:
            data["detector"] = {"type": _detector_type(detector), **detector}
        return data

    @model_validator(mode="after")
    def _band_heard(self) -> Config:
        """``[doa]``'s band lies below half the rate of every mic array (what a sampled signal can carry)."""
        for name, section in self.mic_arrays.items():
            mic: MicArraySection = section
            nyquist = mic.sample_rate / 2.0
            if self.doa.fmax_hz > nyquist:
                raise ValueError(
                    f"[doa] fmax_hz = {self.doa.fmax_hz:g} is above half the sample rate of [mic_arrays.{name}] "
                    f"({mic.sample_rate} Hz): at most {nyquist:g}"
                )
        return self

    @model_validator(mode="after")
    def _ptz_follow(self) -> Config:
        """A head's ``camera`` is one of ``[cameras]``; ``[ptz_follow]`` names a PTZ camera that exists, and not
        one that moves the director's own camera."""
        for name, section in self.ptz.items():  # the camera a head moves is one of [cameras]
            cam = getattr(section, "camera", None)
            if cam is not None and cam not in self.cameras:
                raise ValueError(f"[ptz.{name}] camera = {cam!r}: no [cameras.{cam}] (have: {', '.join(self.cameras)})")
        f = self.ptz_follow
        if not f.enabled:
            return self
        if f.ptz and f.ptz not in self.ptz:
            raise ValueError(f"[ptz_follow] ptz = {f.ptz!r}: no [ptz.{f.ptz}] (have: {', '.join(self.ptz) or 'none'})")
        if not self.ptz:
            raise ValueError("[ptz_follow] enabled = true needs a [ptz.NAME] section")
        head = self.followed_ptz
        if head is not None and getattr(self.ptz[head], "camera", None) == next(iter(self.cameras)):
            raise ValueError(
                f"[ptz.{head}] camera = {next(iter(self.cameras))!r} is the camera the director frames: "
                "following its own shots would move the picture it frames (give the wide camera first in [cameras])"
            )
        return self

    @property
    def camera(self) -> CameraSection:
        """The main camera: the first of ``cameras``."""
        camera: CameraSection = next(iter(self.cameras.values()))
        return camera

    @property
    def followed_ptz(self) -> str | None:
        """The ``[ptz.NAME]`` head ``[ptz_follow]`` moves (when enabled): its ``ptz``, else the first head; None
        without heads."""
        return (self.ptz_follow.ptz or next(iter(self.ptz))) if self.ptz else None

    @property
    def mic_array(self) -> MicArraySection:
        """The main mic array: the first of ``mic_arrays``."""
        mic_array: MicArraySection = next(iter(self.mic_arrays.values()))
        return mic_array


def _detector_type(section: dict[str, Any]) -> str:
    """The detector a ``[detector]`` without ``type`` means: written before detectors were plugins, one with
    BlazeFace's own keys (``model``, ``tiles``) is BlazeFace; any other is the default, YuNet."""
    return "blazeface" if {"model", "tiles"} & section.keys() else "yunet"


def _default(kind: Kind) -> Any:
    model: Any = drivers(kind)[_LEGACY_TYPE[kind]].config
    return model()


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document; raises ConfigError naming each bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_errors(e, source, data)) from None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    doc = read_toml(path, "config", ConfigError)
    if not doc:  # as the config API: an empty file (a write cut short by a power loss) is not "all defaults"
        raise ConfigError(
            f"{path}: is empty, so every key would take its default: write the config in it, or remove the file "
            "to start from the defaults"
        )
    return parse_config(doc, str(path))


def config_to_toml(cfg: Config) -> str:
    """The config as TOML; unset (``None``) values are left out, as TOML has no null."""
    return tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))


__all__ = [
    "BlazeFaceConfig",
    "CalibrationConfig",
    "CameraSection",
    "ConfigError",
    "Config",
    "DetectorConfig",
    "DetectorSection",
    "YuNetConfig",
    "MicArraySection",
    "load_config",
    "parse_config",
    "read_toml",
]
