"""The sound-card mic-array drivers: ``type = "sounddevice"`` (the default) and ``type = "pyaudio"``.

```toml
[mic_arrays.table]
type = "sounddevice"            # or "pyaudio" (pip install pyaudio)
device = "ReSpeaker"            # part of the name, or the index, as `roombox mics` lists them; none: default
preset = "respeaker-usb-4mic"   # geometry + channel map + playback channel of a known array
array_position = [0.0, -0.25, 0.1]   # the array's centre in the camera frame (m)
rotation_deg = [30.0, 0.0, 0.0]      # yaw, pitch, roll of the array (see drivers.audio.presets)
sample_rate = 16000             # what the box analyses; the device is resampled when it runs at another rate
```

Instead of a preset: ``geometry`` (the microphones in the array's own frame, placed by ``array_position`` and
``rotation_deg``) or ``positions`` (already in the camera frame), with ``channel_map`` (device channel of
each microphone), ``channels`` (how many the device is opened with) and ``playback_channel``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.audio.capture import (
    PORTAUDIO_LOCK,
    PORTAUDIO_RESTART,
    Backend,
    InputDevice,
    MicDeviceError,
    OnBlock,
    PortAudioMicArray,
    Stream,
)
from drivers.audio.presets import PRESETS, place
from drivers.base import MicArraySection, Vec3
from drivers.registry import DriverContext, register

log = logging.getLogger(__name__)

PresetKey = Literal["respeaker-usb-4mic", "respeaker-6mic", "uma8", "respeaker-lite", "linear-4"]
_Angle = float
_Channel = Annotated[int, Field(ge=0, le=63)]


def check_device(v: str | int | None) -> str | int | None:
    """A device as config gives it: an index (0 or more) or a part of its name (not empty), or None (the
    default device). Anything else would load, then fail at every start."""
    if isinstance(v, int) and v < 0:
        raise ValueError(f"a device index is 0 or more (roombox mics lists them), not {v}")
    if isinstance(v, str) and not v.strip():
        raise ValueError("an empty device name: give a part of its name or its index, or leave device out")
    return v


PLACED_AT: Vec3 = (0.0, -0.1, 0.0)  # the array's centre when array_position is left out: 10 cm below the camera


class PortAudioMicSection(MicArraySection):
    """A sound card through PortAudio; see :mod:`drivers.audio.devices` for an example."""

    device: str | int | None = Field(
        None,
        title="Input device",
        description="Its index or a part of its name, as `roombox mics` lists "
        "them; left out: the default input device.",
    )
    _device = field_validator("device")(check_device)

    preset: PresetKey | None = Field(
        None,
        title="Array model",
        description="Geometry, channel map and playback channel of an array people buy (drivers.audio.presets).",
    )
    geometry: list[Vec3] | None = Field(
        None,
        min_length=1,
        max_length=64,
        title="Microphones in the array's own frame (m)",
        description="For an array that has no preset; placed by array_position and rotation_deg.",
    )
    array_position: Vec3 = Field(PLACED_AT, title="Array centre in the camera frame (m)")
    rotation_deg: tuple[_Angle, _Angle, _Angle] = Field((0.0, 0.0, 0.0), title="Array yaw, pitch, roll (degrees)")
    channels: int | None = Field(None, ge=1, le=64, title="Channels the device is opened with")
    channel_map: list[_Channel] | None = Field(
        None, min_length=1, max_length=64, title="Device channel of each microphone"
    )
    playback_channel: int | None = Field(None, ge=0, le=63, title="Device channel of the playback reference")
    device_rate: int | None = Field(
        None,
        ge=8000,
        le=768000,
        title="Rate the device is opened at (Hz)",
        description="Left out: sample_rate if the device takes it, else its default rate, resampled to sample_rate.",
    )
    block_ms: float = Field(20.0, ge=2.0, le=200.0, title="PortAudio block (ms)")
    queue_blocks: int = Field(50, ge=2, le=1000, title="Blocks queued before the oldest is dropped")
    stall_s: float = Field(2.0, ge=0.2, le=60.0, title="Silence from the device taken as lost (s)")

    @model_validator(mode="after")
    def _resolve(self) -> PortAudioMicSection:
        preset = PRESETS[self.preset] if self.preset is not None else None
        given = self.model_fields_set
        if preset is not None and self.geometry is not None:
            raise ValueError("preset and geometry together: give one")
        geometry = preset.geometry if preset is not None else self.geometry
        if geometry is not None:
            if any(not math.isfinite(c) for p in geometry for c in p):
                raise ValueError("geometry: not a finite position")
            if any(not math.isfinite(a) or abs(a) > 360.0 for a in self.rotation_deg):
                raise ValueError(f"rotation_deg {list(self.rotation_deg)}: each angle within -360..360")
            positions = place(geometry, self.array_position, self.rotation_deg)
            if "positions" in given and (
                len(positions) != len(self.positions) or not np.allclose(positions, self.positions, atol=1e-6)
            ):
                raise ValueError("positions (camera frame) and preset/geometry together: give one")
            try:
                MicArraySection(positions=positions)
            except ValidationError as e:
                reason = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
                raise ValueError(f"the placed array: {reason}") from None
            object.__setattr__(self, "positions", positions)
        elif tuple(self.array_position) != PLACED_AT or any(self.rotation_deg):
            # (their defaults place nothing: a whole section written back, positions and all, still loads)
            raise ValueError(
                "array_position and rotation_deg place a preset or geometry; positions are already in the camera frame"
            )
        n_mics = len(self.positions)
        channel_map = self.channel_map
        if channel_map is None:
            channel_map = list(preset.channel_map) if preset is not None else list(range(n_mics))
        if len(channel_map) != n_mics:
            raise ValueError(f"channel_map has {len(channel_map)} channels for {n_mics} microphones")
        if len(set(channel_map)) != len(channel_map):
            raise ValueError(f"channel_map {channel_map} names a channel twice")
        playback = self.playback_channel
        if playback is None and preset is not None and "playback_channel" not in given:
            playback = preset.playback_channel
        used = [*channel_map, *([] if playback is None else [playback])]
        channels = self.channels
        if channels is None:
            channels = preset.channels if preset is not None else max(used) + 1
        if any(c < 0 or c >= channels for c in used):
            raise ValueError(
                f"channel_map {channel_map} / playback_channel {playback}: a channel outside the "
                f"device's {channels} channels (0..{channels - 1})"
            )
        if playback is not None and playback in channel_map:
            raise ValueError(f"playback_channel {playback} is also a microphone in channel_map")
        object.__setattr__(self, "channel_map", channel_map)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "playback_channel", playback)
        return self


class SoundDeviceMicConfig(PortAudioMicSection):
    type: Literal["sounddevice"] = "sounddevice"


class PyAudioMicConfig(PortAudioMicSection):
    type: Literal["pyaudio"] = "pyaudio"


# -- python-sounddevice --------------------------------------------------------------------------------

_sd_open_streams = 0  # streams of ours open: PortAudio is re-initialised (to see new devices) only with none


def _refresh_portaudio(wanted: str | int | None = None, direction: Literal["input", "output"] = "input") -> None:
    """Make PortAudio list the devices afresh. PortAudio lists them once, when first initialised in the
    process, and python-sounddevice initialises it on import (pyroomacoustics imports it): while that
    holds, a new PyAudio instance sees the old list too. So sounddevice's hold is released and taken
    again, when none of our sounddevice streams is open (it would end them).

    With streams open and a ``wanted`` device (an index or a part of its name) that a PortAudio started now
    lists (asked of a new process), :data:`PORTAUDIO_RESTART` is set: our streams end, and the first to open
    again lists afresh. (Before, a mic array plugged in while the speaker played was never found.)"""
    sd = sys.modules.get("sounddevice")
    if sd is None:
        return
    with PORTAUDIO_LOCK:
        if _sd_open_streams == 0:
            sd._terminate()
            sd._initialize()
            PORTAUDIO_RESTART.clear()
            return
    if wanted is not None and not PORTAUDIO_RESTART.is_set() and listed_afresh(wanted, direction):
        log.warning("sound device %r plugged in: the open streams close so that PortAudio can list it", wanted)
        PORTAUDIO_RESTART.set()


_LIST_AFRESH = (
    "import json, sounddevice as sd; print(json.dumps([[d['name'], d['max_input_channels'], "
    "d['max_output_channels']] for d in sd.query_devices()]))"
)


def listed_afresh(wanted: str | int, direction: Literal["input", "output"]) -> bool:
    """Whether a PortAudio started now, in a new process, lists a device ``wanted`` names (an index, or a
    part of its name, case-insensitive) with channels in ``direction``."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LIST_AFRESH], capture_output=True, text=True, timeout=30.0, check=True
        )
        listing = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return False
    column = 1 if direction == "input" else 2
    if isinstance(wanted, int):
        return 0 <= wanted < len(listing) and listing[wanted][column] > 0
    return any(wanted.lower() in str(d[0]).lower() and d[column] > 0 for d in listing)


IMPORT_WAIT_S = 8.0  # how long a caller waits for PortAudio's set-up (sounddevice's import) before saying so
OPEN_WAIT_S = 2.0  # ... and the driver's open at start, which leaves a longer wait to the device's start


class SoundSystemSilent(MicDeviceError):
    """PortAudio's set-up waits on a sound server that does not answer (it goes on in the background)."""


class _Import:
    """One import of a module on a daemon thread of its own. Importing sounddevice sets PortAudio up, which
    asks the sound server (through ALSA's pulse plugin): a hung PulseAudio or PipeWire blocks it until the
    server answers, and on the event loop that would hang the whole box, panel and all."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = threading.Event()
        self.module: Any = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, daemon=True, name=f"import {name}").start()

    def _run(self) -> None:
        try:
            self.module = importlib.import_module(self.name)
        except BaseException as e:  # kept for the callers, who say it
            self.error = e
        finally:
            self.done.set()


_IMPORTS: dict[str, _Import] = {}
_IMPORTS_LOCK = threading.Lock()


def _import_soon(name: str) -> _Import:
    """The import of ``name`` under way or done (a failed one is started again)."""
    with _IMPORTS_LOCK:
        entry = _IMPORTS.get(name)
        if entry is None or (entry.done.is_set() and entry.error is not None):
            entry = _IMPORTS[name] = _Import(name)
        return entry


def _import_sounddevice(wait_s: float = IMPORT_WAIT_S) -> Any:
    """The sounddevice module, once PortAudio is set up; MicDeviceError when it is missing, or when the sound
    system has not answered within ``wait_s`` (the set-up goes on: a later call takes it when it is done)."""
    entry = _import_soon("sounddevice")
    if not entry.done.wait(wait_s):
        raise SoundSystemSilent(
            f"the sound system does not answer: setting PortAudio up has waited {wait_s:g} s for it (a hung "
            "PulseAudio or PipeWire server?); it is tried again"
        )
    if isinstance(entry.error, ImportError | OSError):
        raise MicDeviceError(
            f"the sounddevice driver needs the Python package sounddevice and the PortAudio "
            f"library (pip install sounddevice; apt-get install libportaudio2): {entry.error}"
        ) from None
    if entry.error is not None:
        raise entry.error
    return entry.module


def wait_for_sound_system(say: Callable[[str], object], every_s: float = 10.0) -> None:
    """Set PortAudio up (sounddevice's import, on a thread of its own) and wait until it is, saying so every
    ``every_s`` while it waits. The box calls it first at its start: mediapipe and pyroomacoustics import
    sounddevice too, and a sound server that is hung (a stopped or deadlocked PulseAudio or PipeWire) would
    otherwise hold the start without a word."""
    entry = _import_soon("sounddevice")
    waited = 0.0
    while not entry.done.wait(every_s):
        waited += every_s
        say(
            f"waiting for the sound system: setting PortAudio up has waited {waited:.0f} s for it (is the "
            "PulseAudio or PipeWire server hung?)"
        )


def _check_sounddevice() -> None:
    """At a driver's open: a missing package or library refused at once; a sound system that is slow to answer
    left to the device's start (on a thread, bounded, reported and retried), never waited for on the loop."""
    with contextlib.suppress(SoundSystemSilent):
        _import_sounddevice(OPEN_WAIT_S)


class _SdStream:
    def __init__(self, stream: Any) -> None:
        self._s = stream

    def start(self) -> None:
        self._s.start()

    def active(self) -> bool:
        return bool(self._s.active)

    def close(self) -> None:
        global _sd_open_streams
        if self._s is None:
            return
        try:
            self._s.abort(ignore_errors=True)
            self._s.close(ignore_errors=True)
        finally:
            self._s = None
            with PORTAUDIO_LOCK:
                _sd_open_streams -= 1


class SoundDeviceBackend:
    package = "sounddevice"

    def devices(self) -> list[InputDevice]:
        sd = _import_sounddevice()
        apis = sd.query_hostapis()
        default = sd.default.device[0]
        if default is None or default < 0:
            try:
                default = sd.query_devices(kind="input")["index"]
            except sd.PortAudioError:
                default = -1
        return [
            InputDevice(
                index=int(d["index"]),
                name=str(d["name"]),
                channels=int(d["max_input_channels"]),
                default_rate=float(d["default_samplerate"]),
                host_api=str(apis[d["hostapi"]]["name"]),
                is_default=int(d["index"]) == default,
            )
            for d in sd.query_devices()
        ]

    def refresh(self, wanted: str | int | None = None) -> None:
        _import_sounddevice()
        _refresh_portaudio(wanted)

    def check(self, index: int, channels: int, rate: int) -> str | None:
        sd = _import_sounddevice()
        try:
            sd.check_input_settings(device=index, channels=channels, samplerate=rate, dtype="float32")
        except (sd.PortAudioError, ValueError) as e:
            return str(e)
        return None

    def open(
        self, index: int, channels: int, rate: int, blocksize: int, on_block: OnBlock, on_finished: Callable[[], None]
    ) -> Stream:
        global _sd_open_streams
        sd = _import_sounddevice()

        def callback(indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
            adc, now = float(time.inputBufferAdcTime), float(time.currentTime)
            on_block(indata.copy(), now - adc if adc > 0.0 and now > 0.0 else None, bool(status.input_overflow))

        stream = sd.InputStream(
            device=index,
            channels=channels,
            samplerate=rate,
            dtype="float32",
            blocksize=blocksize,
            callback=callback,
            finished_callback=on_finished,
        )
        _sd_open_streams += 1
        return _SdStream(stream)


# -- PyAudio -------------------------------------------------------------------------------------------


def _import_pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as e:
        raise MicDeviceError(
            f"the pyaudio driver needs the Python package PyAudio (pip install pyaudio, which "
            f'builds against apt-get install portaudio19-dev), or use type = "sounddevice": '
            f"{e}"
        ) from None
    return pyaudio


class _PaStream:
    def __init__(self, pa: Any, stream: Any) -> None:
        self._pa, self._s = pa, stream

    def start(self) -> None:
        self._s.start_stream()

    def active(self) -> bool:
        return bool(self._s.is_active())

    def close(self) -> None:
        if self._s is None:
            return
        try:
            self._s.close()
        finally:
            self._s = None
            self._pa.terminate()


class PyAudioBackend:
    package = "pyaudio"

    def devices(self) -> list[InputDevice]:
        pyaudio = _import_pyaudio()
        pa = pyaudio.PyAudio()
        try:
            try:
                default = int(pa.get_default_input_device_info()["index"])
            except OSError:
                default = -1
            out = []
            for i in range(pa.get_device_count()):
                d = pa.get_device_info_by_index(i)
                api = pa.get_host_api_info_by_index(d["hostApi"])["name"]
                out.append(
                    InputDevice(
                        index=i,
                        name=str(d["name"]),
                        channels=int(d["maxInputChannels"]),
                        default_rate=float(d["defaultSampleRate"]),
                        host_api=str(api),
                        is_default=i == default,
                    )
                )
            return out
        finally:
            pa.terminate()

    def refresh(self, wanted: str | int | None = None) -> None:
        _refresh_portaudio()  # its own streams are PyAudio's: they are not ended for another device

    def check(self, index: int, channels: int, rate: int) -> str | None:
        pyaudio = _import_pyaudio()
        pa = pyaudio.PyAudio()
        try:
            pa.is_format_supported(rate, input_device=index, input_channels=channels, input_format=pyaudio.paFloat32)
        except ValueError as e:
            return str(e.args[0] if e.args else e)
        finally:
            pa.terminate()
        return None

    def open(
        self, index: int, channels: int, rate: int, blocksize: int, on_block: OnBlock, on_finished: Callable[[], None]
    ) -> Stream:
        pyaudio = _import_pyaudio()
        pa = pyaudio.PyAudio()

        def callback(
            in_data: bytes | None, frame_count: int, time_info: dict[str, float], status: int
        ) -> tuple[None, int]:
            if in_data:
                x = np.frombuffer(in_data, dtype=np.float32).reshape(-1, channels).copy()
                adc, now = time_info.get("input_buffer_adc_time", 0.0), time_info.get("current_time", 0.0)
                on_block(x, now - adc if adc > 0.0 and now > 0.0 else None, bool(status & pyaudio.paInputOverflow))
            return None, pyaudio.paContinue

        try:
            stream = pa.open(
                format=pyaudio.paFloat32,
                channels=channels,
                rate=rate,
                input=True,
                input_device_index=index,
                frames_per_buffer=blocksize,
                stream_callback=callback,
                start=False,
            )
        except BaseException:
            pa.terminate()
            raise
        return _PaStream(pa, stream)


BACKENDS: dict[str, Callable[[], Backend]] = {"sounddevice": SoundDeviceBackend, "pyaudio": PyAudioBackend}


def list_input_devices(backend: str = "sounddevice") -> list[InputDevice]:
    """The input devices PortAudio sees through ``backend`` ("sounddevice" or "pyaudio")."""
    if backend not in BACKENDS:
        raise MicDeviceError(f"unknown audio backend {backend!r}: one of {', '.join(BACKENDS)}")
    return [d for d in BACKENDS[backend]().devices() if d.channels > 0]


def open_portaudio(name: str, cfg: PortAudioMicSection, backend: Backend, ctx: DriverContext) -> PortAudioMicArray:
    assert cfg.channels is not None and cfg.channel_map is not None  # resolved by the section's validator
    return PortAudioMicArray(
        backend,
        name,
        cfg.device,
        channels=cfg.channels,
        channel_map=cfg.channel_map,
        sample_rate=cfg.sample_rate,
        playback_channel=cfg.playback_channel,
        device_rate=cfg.device_rate,
        block_ms=cfg.block_ms,
        queue_blocks=cfg.queue_blocks,
        stall_s=cfg.stall_s,
        clock=ctx.clock,
    )


@register("mic_array", "sounddevice", SoundDeviceMicConfig)
def open_sounddevice(name: str, cfg: SoundDeviceMicConfig, ctx: DriverContext) -> PortAudioMicArray:
    _check_sounddevice()
    return open_portaudio(name, cfg, SoundDeviceBackend(), ctx)


@register("mic_array", "pyaudio", PyAudioMicConfig)
def open_pyaudio(name: str, cfg: PyAudioMicConfig, ctx: DriverContext) -> PortAudioMicArray:
    _import_pyaudio()
    return open_portaudio(name, cfg, PyAudioBackend(), ctx)
