"""The simulated room as registered devices: ``[cameras.X] type = "simroom"`` and
``[mic_arrays.X] type = "simroom"``.

A camera and a mic array naming the same scenario share one :class:`drivers.simroom.room.SimulatedRoom`
(one epoch, one rendering). Their geometry keys default to the scenario's and must agree with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from drivers.base import CameraSection, MicArraySection
from drivers.registry import DriverContext, register
from drivers.simroom.scenario import (
    Scenario,
    ScenarioError,
    builtin_scenario,
    camera_geometry,
    load_scenario,
    mic_array_geometry,
)


def _with_scenario_geometry(data: Any, geometry: Any) -> Any:
    if not isinstance(data, dict):
        return data
    scn = load_scenario(scenario_path(str(data.get("scenario", "default"))))
    return {**geometry(scn), **data}


class SimroomCameraConfig(CameraSection):
    """The simulated room's camera."""

    type: Literal["simroom"] = "simroom"
    scenario: str = Field(
        "default",
        min_length=1,
        title="Scenario",
        description="A built-in scenario's name (default, short, farend) or a scenario file.",
    )

    @model_validator(mode="before")
    @classmethod
    def _geometry(cls, data: Any) -> Any:
        return _with_scenario_geometry(data, camera_geometry)


class SimroomMicArrayConfig(MicArraySection):
    """The simulated room's mic array."""

    type: Literal["simroom"] = "simroom"
    scenario: str = Field(
        "default",
        min_length=1,
        title="Scenario",
        description="A built-in scenario's name (default, short, farend) or a scenario file.",
    )
    block_ms: float = Field(20.0, ge=1.0, le=500.0, title="Block delivered per read (ms)")

    @model_validator(mode="before")
    @classmethod
    def _geometry(cls, data: Any) -> Any:
        return _with_scenario_geometry(data, mic_array_geometry)


def scenario_path(scenario: str) -> Path:
    """The built-in scenario of that name (a name without ``/`` or ``.toml``), else a scenario file."""
    try:
        exists = Path(scenario).exists()
    except OSError as e:  # e.g. a name longer than the file system takes
        raise ValueError(f"scenario {scenario[:60]!r}{'...' if len(scenario) > 60 else ''}: {e.strerror}") from None
    if "/" not in scenario and not scenario.endswith(".toml"):
        try:
            return builtin_scenario(scenario)
        except ScenarioError:
            if not exists:  # neither a built-in nor a file: say which there are
                raise
    return Path(scenario)


def sections_for(scenario: str) -> tuple[SimroomCameraConfig, SimroomMicArrayConfig]:
    """The camera and mic-array sections of a scenario, with the scenario's geometry."""
    return SimroomCameraConfig(scenario=scenario), SimroomMicArrayConfig(scenario=scenario)


def _room(ctx: DriverContext, scenario: str) -> Any:
    from drivers.simroom.room import SimulatedRoom

    key = f"simroom:{scenario_path(scenario).resolve()}"
    if key not in ctx.shared:
        ctx.shared[key] = SimulatedRoom(scenario_path(scenario), lazy=True, clock=ctx.clock)
    return ctx.shared[key]


def _check(kind: str, name: str, section: dict[str, Any], scenario: dict[str, Any]) -> None:
    for key, want in scenario.items():
        if section[key] != want:
            raise ValueError(f"[{kind}.{name}] {key} is {section[key]} but the scenario's is {want}")


@register("camera", "simroom", SimroomCameraConfig)
def open_sim_camera(name: str, cfg: SimroomCameraConfig, ctx: DriverContext) -> Any:
    room = _room(ctx, cfg.scenario)
    scn: Scenario = room.scenario
    _check("cameras", name, cfg.model_dump(mode="json"), camera_geometry(scn))
    return room.camera(name)


@register("mic_array", "simroom", SimroomMicArrayConfig)
def open_sim_mic_array(name: str, cfg: SimroomMicArrayConfig, ctx: DriverContext) -> Any:
    room = _room(ctx, cfg.scenario)
    scn: Scenario = room.scenario
    _check("mic_arrays", name, cfg.model_dump(mode="json"), mic_array_geometry(scn))
    return room.mic_array(cfg.block_ms / 1000.0, name)
