"""The simulated room as live sources: ``SimulatedRoom(scenario).camera()`` and ``.mic_array()``.

Both sources are paced in real time by the event loop's clock and share one epoch, so their timestamps
(seconds since the first source started) agree. The scenario loops; timestamps keep increasing.
The camera delivers the newest frame (a late reader skips frames, counted in ``dropped``); the mic array
delivers every block, as a sound card's buffer would.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import numpy as np

from drivers.base import AudioBlock, Frame
from drivers.simroom.audio import RenderedAudio, render_audio
from drivers.simroom.scenario import Scenario, load_scenario
from drivers.simroom.video import RoomRenderer


class SimulatedRoom:
    """A scenario made live: renders its sound once and its pictures on demand.

    Construction renders the sound (a few seconds for a minute of scenario; call it in a thread from
    async code) unless ``lazy``, when the first mic-array start does.
    """

    def __init__(self, scenario: Scenario | str | Path, speech_root: Path | None = None,
                 lazy: bool = False) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self._speech_root = speech_root
        self._renderer: RoomRenderer | None = None
        self._audio: RenderedAudio | None = None
        self._lock = threading.Lock()
        self._epoch: float | None = None
        if not lazy:
            _ = self.renderer
            self.audio()

    @property
    def renderer(self) -> RoomRenderer:
        with self._lock:
            if self._renderer is None:
                self._renderer = RoomRenderer(self.scenario)
            return self._renderer

    def audio(self) -> RenderedAudio:
        """The whole scenario at the mic array (rendered on the first call, a few seconds)."""
        with self._lock:
            if self._audio is None:
                self._audio = render_audio(self.scenario, self._speech_root)
            return self._audio

    def epoch(self, now: float) -> float:
        """The loop time of t = 0, fixed by the first source that starts."""
        if self._epoch is None:
            self._epoch = now
        return self._epoch

    def camera(self, name: str = "simroom-camera") -> SimCamera:
        return SimCamera(self, name)

    def mic_array(self, block_s: float = 0.02, name: str = "simroom-mics") -> SimMicArray:
        return SimMicArray(self, block_s, name)


class SimCamera:
    """A VideoSource of the simulated room at the scenario's frame rate, in real time."""

    def __init__(self, room: SimulatedRoom, name: str = "simroom-camera") -> None:
        self.name = name
        self.room = room
        self.fps = room.scenario.camera.fps
        self.dropped = 0
        self._next = 0
        self._epoch: float | None = None

    async def start(self) -> None:
        await asyncio.to_thread(lambda: self.room.renderer)
        now = asyncio.get_running_loop().time()
        self._epoch = self.room.epoch(now)
        self._next = math.ceil((now - self._epoch) * self.fps - 1e-9)

    async def recv(self) -> Frame:
        if self._epoch is None:
            raise RuntimeError(f"{self.name}: recv() before start()")
        loop = asyncio.get_running_loop()
        # the newest frame that is due; frames a slow reader missed are skipped and counted
        due_now = math.floor((loop.time() - self._epoch) * self.fps + 1e-9)
        k = max(self._next, due_now)
        self.dropped += k - self._next
        self._next = k + 1
        wait = self._epoch + k / self.fps - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = k / self.fps
        scene_t = t % self.room.scenario.duration_s
        image = await asyncio.to_thread(self.room.renderer.render_frame, scene_t)
        return Frame(t=t, image=image)

    async def stop(self) -> None:
        self._epoch = None


class SimMicArray:
    """An AudioSource of the simulated room in blocks of ``block_s``, in real time, looping."""

    def __init__(self, room: SimulatedRoom, block_s: float = 0.02, name: str = "simroom-mics") -> None:
        self.name = name
        self.room = room
        self.sample_rate = room.scenario.mic_array.sample_rate
        self.block = max(1, round(block_s * self.sample_rate))
        self._pos = 0  # samples delivered since start
        self._epoch: float | None = None
        self._samples: np.ndarray | None = None

    async def start(self) -> None:
        self._samples = (await asyncio.to_thread(self.room.audio)).samples
        now = asyncio.get_running_loop().time()
        self._epoch = self.room.epoch(now)
        self._pos = math.ceil((now - self._epoch) * self.sample_rate)  # on the room's shared clock

    async def recv(self) -> AudioBlock:
        if self._epoch is None or self._samples is None:
            raise RuntimeError(f"{self.name}: recv() before start()")
        loop = asyncio.get_running_loop()
        start = self._pos
        self._pos += self.block
        wait = self._epoch + self._pos / self.sample_rate - loop.time()  # a block is ready once recorded
        if wait > 0:
            await asyncio.sleep(wait)
        n = len(self._samples)
        idx = np.arange(start, start + self.block) % n
        return AudioBlock(t=start / self.sample_rate, samples=self._samples[idx], sample_rate=self.sample_rate)

    async def stop(self) -> None:
        self._epoch = None
