"""The one config model: validates the TOML file, and later drives the panel's forms and the remote API.

Unknown keys are refused; every field has a title, a unit where it has one, and bounds. A config that
does not validate raises :class:`ConfigError`, which names the key and the reason.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the key and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Section):
    hfov_deg: float = Field(90.0, gt=10.0, lt=180.0, title="Horizontal field of view (degrees)",
                            description="Of the undistorted source picture.")
    width: int = Field(1920, ge=160, le=7680, title="Capture width (px)")
    height: int = Field(1080, ge=120, le=4320, title="Capture height (px)")
    fps: float = Field(15.0, gt=0.0, le=60.0, title="Capture frame rate (frames/s)")


class MicArrayConfig(_Section):
    sample_rate: int = Field(16000, ge=8000, le=96000, title="Sample rate (Hz)")
    positions: list[tuple[float, float, float]] = Field(
        default_factory=lambda: [
            (0.0463 * math.cos(math.radians(a)), -0.1, 0.0463 * math.sin(math.radians(a)))
            for a in range(0, 360, 60)
        ],
        title="Microphone positions (m)",
        description="In the camera's frame: x right, y up, z forward; origin at the camera. "
        "Channel k is microphone k.",
        min_length=2,
        max_length=64,
    )

    @field_validator("positions")
    @classmethod
    def _distinct(cls, v: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
        for i, p in enumerate(v):
            if any(abs(c) > 2.0 for c in p):
                raise ValueError(f"microphone {i} is {p}: more than 2 m from the camera")
            for j in range(i):
                if math.dist(p, v[j]) < 1e-3:
                    raise ValueError(f"microphones {j} and {i} are at the same place")
        return v


class DoaConfig(_Section):
    block_ms: float = Field(64.0, ge=8.0, le=512.0, title="Analysis block (ms)")
    hop_ms: float = Field(32.0, ge=4.0, le=512.0, title="Hop between blocks (ms)")
    fmin_hz: float = Field(300.0, ge=50.0, le=8000.0, title="Lowest frequency used (Hz)")
    fmax_hz: float = Field(4000.0, ge=500.0, le=24000.0, title="Highest frequency used (Hz)")
    grid_deg: float = Field(1.0, gt=0.0, le=10.0, title="Azimuth grid step (degrees)")
    speech_snr_db: float = Field(9.0, ge=0.0, le=60.0, title="Speech gate above the noise floor (dB)")
    min_level_db: float = Field(-65.0, ge=-120.0, le=0.0, title="Quietest block considered (dBFS)")
    min_confidence: float = Field(0.1, ge=0.0, le=1.0, title="Least DOA confidence reported",
                                  description="Speech blocks whose SRP-PHAT peak stands out less than "
                                  "this (0..1) get no azimuth.")


_TileCount = Annotated[int, Field(ge=1, le=16)]


class DetectorConfig(_Section):
    model: str = Field("full_range", pattern="^(full_range|short_range)$", title="BlazeFace model")
    min_score: float = Field(0.5, ge=0.05, le=1.0, title="Least detection score")
    tiles: tuple[_TileCount, _TileCount] = Field((5, 3), title="Tiles (columns, rows)",
                                                 description="The picture is also searched in overlapping "
                                                 "tiles so that small, far faces are found.")
    interval_s: float = Field(0.4, ge=0.03, le=10.0, title="Time between detections (s)")


class DirectorConfig(_Section):
    min_hold_s: float = Field(1.5, ge=0.0, le=60.0, title="Least time on a shot before a cut (s)")
    switch_after_s: float = Field(0.25, ge=0.0, le=10.0, title="Localized speech needed to cut to a new talker (s)")
    silence_to_group_s: float = Field(5.0, ge=0.5, le=600.0, title="Silence before the group shot (s)")
    match_deg: float = Field(10.0, ge=1.0, le=45.0, title="Largest DOA-to-face distance (degrees)")
    evidence_tau_s: float = Field(0.5, gt=0.0, le=10.0, title="Memory of speech evidence (s)")
    face_widths: float = Field(5.5, ge=2.0, le=20.0, title="Speaker shot width in face widths")
    group_margin: float = Field(0.6, ge=0.0, le=5.0, title="Group shot margin in face widths")
    smooth_tau_s: float = Field(0.5, ge=0.0, le=10.0, title="Framing smoothing time constant (s)")
    min_crop_frac: float = Field(0.25, gt=0.05, le=1.0, title="Narrowest crop (fraction of width)")


class StreamConfig(_Section):
    width: int = Field(1280, ge=160, le=3840, multiple_of=2, title="Output width (px)")
    height: int = Field(720, ge=90, le=2160, multiple_of=2, title="Output height (px)")
    fps: float = Field(15.0, gt=0.0, le=60.0, title="Output frame rate (frames/s)")
    ice_loopback: bool = Field(True, title="Offer a loopback candidate",
                               description="So that a browser on the box itself (the kiosk panel, the demo "
                               "page) connects over 127.0.0.1.")


class PanelConfig(_Section):
    host: str = Field("127.0.0.1", title="Listen address")
    port: int = Field(8080, ge=1, le=65535, title="Listen port")


class Config(_Section):
    camera: CameraConfig = Field(default_factory=CameraConfig)
    mic_array: MicArrayConfig = Field(default_factory=MicArrayConfig)
    doa: DoaConfig = Field(default_factory=DoaConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    director: DirectorConfig = Field(default_factory=DirectorConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    panel: PanelConfig = Field(default_factory=PanelConfig)


def describe_errors(err: ValidationError, source: str) -> str:
    """One line per error: the source, the key in brackets, and the reason."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{source}: [{key}] {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document; raises ConfigError naming each bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_errors(e, source)) from None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    return parse_config(read_toml(path, "config", ConfigError), str(path))


def read_toml(path: str | os.PathLike[str], what: str, error: type[ValueError]) -> dict[str, Any]:
    """The parsed TOML file at ``path``; a missing or malformed file raises ``error`` naming it."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{p}: no such {what} file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{p}: not valid TOML: {e}") from None


def config_to_toml(cfg: Config) -> str:
    return tomli_w.dumps(cfg.model_dump(mode="json"))


