"""The one config model: validates the TOML file, and later drives the panel's forms and the remote API.

Unknown keys are refused; every field has a title, a unit where it has one, and bounds. A config that
does not validate raises :class:`ConfigError`, which names the key and the reason.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import Field, ValidationError, model_validator

from appliance.control.settings import MqttConfig
from appliance.logs import LogConfig
from common.settings import ConfigError, Section, describe_errors, read_toml
from drivers.base import CameraSection, MicArraySection
from drivers.registry import Kind, drivers, section_union

CameraSections = section_union("camera")
MicArraySections = section_union("mic_array")
_Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")]


class DoaConfig(Section):
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


class DetectorConfig(Section):
    model: Literal["full_range", "short_range"] = Field("full_range", title="BlazeFace model")
    min_score: float = Field(0.5, ge=0.05, le=1.0, title="Least detection score")
    tiles: tuple[_TileCount, _TileCount] = Field((5, 3), title="Tiles (columns, rows)",
                                                 description="The picture is also searched in overlapping "
                                                 "tiles so that small, far faces are found.")
    interval_s: float = Field(0.4, ge=0.03, le=10.0, title="Time between detections (s)")


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


class StreamConfig(Section):
    width: int = Field(1280, ge=160, le=3840, multiple_of=2, title="Output width (px)")
    height: int = Field(720, ge=90, le=2160, multiple_of=2, title="Output height (px)")
    fps: float = Field(15.0, gt=0.0, le=60.0, title="Output frame rate (frames/s)")
    ice_loopback: bool = Field(True, title="Offer a loopback candidate",
                               description="So that a browser on the box itself (the kiosk panel, the demo "
                               "page) connects over 127.0.0.1.")


class PanelConfig(Section):
    host: str = Field("127.0.0.1", title="Listen address")
    port: int = Field(8080, ge=1, le=65535, title="Listen port")


_LEGACY: dict[Kind, str] = {"camera": "cameras", "mic_array": "mic_arrays"}
_LEGACY_TYPE = {"camera": "file", "mic_array": "wav"}


class Config(Section):
    """The whole config. Devices are named: ``[cameras.main]``, ``[mic_arrays.table]``, each with the
    ``type`` of its driver (:mod:`drivers.registry`) and that driver's keys. The first camera and the first
    mic array are the ones the director frames and listens with."""

    cameras: dict[_Name, CameraSections] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"main": _default("camera")}, min_length=1, max_length=8, title="Cameras")
    mic_arrays: dict[_Name, MicArraySections] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"main": _default("mic_array")}, min_length=1, max_length=8,
        title="Mic arrays")
    doa: DoaConfig = Field(default_factory=DoaConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    director: DirectorConfig = Field(default_factory=DirectorConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    panel: PanelConfig = Field(default_factory=PanelConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig, title="Fleet control over MQTT")
    log: LogConfig = Field(default_factory=LogConfig, title="Logging")

    @model_validator(mode="before")
    @classmethod
    def _legacy_sections(cls, data: Any) -> Any:
        """``[camera]`` and ``[mic_array]`` (one device each, as written before named devices) still work: they
        are the ``main`` file camera and WAV mic array. Mixed with the named form they are refused."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in _LEGACY.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(f"[{old}] and [{new}.*] together: write [{new}.main] (with its other keys) "
                                 f"instead of [{old}]")
            section = data.pop(old)
            if isinstance(section, dict):
                section = {"type": _LEGACY_TYPE[old], **section}
            data[new] = {"main": section}
        for kind, new in _LEGACY.items():
            sections = data.get(new)
            for name, section in (sections.items() if isinstance(sections, dict) else ()):
                if isinstance(section, dict) and "type" not in section:
                    raise ValueError(f"[{new}.{name}] has no type: give one of {', '.join(drivers(kind))}")
        return data

    @property
    def camera(self) -> CameraSection:
        """The main camera: the first of ``cameras``."""
        camera: CameraSection = next(iter(self.cameras.values()))
        return camera

    @property
    def mic_array(self) -> MicArraySection:
        """The main mic array: the first of ``mic_arrays``."""
        mic_array: MicArraySection = next(iter(self.mic_arrays.values()))
        return mic_array


def _default(kind: Kind) -> Any:
    model: Any = drivers(kind)[_LEGACY_TYPE[kind]].config
    return model()


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


def config_to_toml(cfg: Config) -> str:
    return tomli_w.dumps(cfg.model_dump(mode="json"))


__all__ = ["CameraSection", "ConfigError", "Config", "MicArraySection", "load_config", "parse_config", "read_toml"]
