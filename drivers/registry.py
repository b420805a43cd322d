"""The driver registry: every camera and mic-array driver, found by its ``type``.

A driver module registers itself with :func:`register`, naming its kind, its ``type`` key and its own config
section (a :class:`drivers.base.CameraSection` or :class:`drivers.base.MicArraySection` subclass with
``type: Literal["..."]``). The application's config joins the sections of each kind in a discriminated
union (:func:`section_union`), so ``[cameras.main] type = "v4l2"`` is validated by the V4L2 driver's own
model, and the box opens each configured device with :func:`open_device`.

Driver modules import only what their config needs at module level; device libraries are imported when a
device is opened, so loading the registry stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from common.clock import SYSTEM_CLOCK, Clock
from common.settings import Section

Kind = Literal["camera", "mic_array", "ptz", "speaker"]

# The modules that register the drivers shipped with roombox; each registers on import.
BUILTIN_MODULES = (
    "drivers.files",
    "drivers.simroom.devices",
    "drivers.v4l2",
    "drivers.rtsp",
    "drivers.ptz.visca_client",
    "drivers.ptz.uvc",
    "drivers.audio.devices",
    "drivers.audio.speaker",
)


@dataclass
class DriverContext:
    """What opening a device may use: the box's capture clock, and objects shared between devices
    (the simulated room's camera and mic array share one room, keyed by scenario)."""

    clock: Clock = SYSTEM_CLOCK
    shared: dict[str, Any] = field(default_factory=dict)


Opener = Callable[[str, Any, DriverContext], Any]


@dataclass(frozen=True)
class Driver:
    kind: Kind
    type_key: str
    config: type[Section]
    open: Opener


_DRIVERS: dict[Kind, dict[str, Driver]] = {"camera": {}, "mic_array": {}, "ptz": {}, "speaker": {}}
_loaded = False


def register(kind: Kind, type_key: str, config: type[Section]) -> Callable[[Opener], Opener]:
    """Decorate the function that opens a device of this driver: ``open(name, section, context)`` returns
    a source (:class:`drivers.base.VideoSource` or :class:`drivers.base.AudioSource`)."""

    def add(opener: Opener) -> Opener:
        known = _DRIVERS[kind].get(type_key)
        if known is not None and known.config is not config:
            raise ValueError(f"two {kind} drivers registered as type {type_key!r}")
        _DRIVERS[kind][type_key] = Driver(kind, type_key, config, opener)
        return opener

    return add


def load_builtin() -> None:
    """Import the built-in driver modules (once)."""
    global _loaded
    if not _loaded:
        for name in BUILTIN_MODULES:
            importlib.import_module(name)
        _loaded = True


def drivers(kind: Kind) -> dict[str, Driver]:
    """The registered drivers of one kind, by type."""
    load_builtin()
    return dict(_DRIVERS[kind])


def section_union(kind: Kind) -> Any:
    """The config sections of every driver of ``kind``, as a union discriminated by ``type``."""
    models = tuple(d.config for d in drivers(kind).values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - a runtime tuple of types


def open_device(kind: Kind, name: str, section: Section, context: DriverContext | None = None) -> Any:
    """Open the device described by ``section`` (its driver is found by ``section.type``)."""
    type_key = getattr(section, "type", None)
    driver = drivers(kind).get(str(type_key))
    if driver is None:
        raise ValueError(f"[{kind}s.{name}] no {kind} driver of type {type_key!r}")
    return driver.open(name, section, context or DriverContext())
