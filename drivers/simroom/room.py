"""The simulated room as live sources: ``SimulatedRoom(scenario).camera()`` and ``.mic_array()``.

Both sources are paced on the capture clock they are given (:mod:`common.clock`) and share one epoch (the
clock's time when the first of them started), so their timestamps agree: a frame or block of scene time
``s`` is stamped ``epoch + s``. The scenario loops; timestamps keep increasing.
The camera delivers the newest frame (a late reader skips frames, counted in ``dropped``); the mic array
delivers every block, as a sound card's buffer would, and, when the scenario has a loudspeaker, the
matching samples of what was sent to it (``AudioBlock.reference``).
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import numpy as np

from common.clock import SYSTEM_CLOCK, Clock
from drivers.base import AudioBlock, Frame
from drivers.simroom.audio import RenderedAudio, render_audio
from drivers.simroom.scenario import Scenario, load_scenario
from drivers.simroom.video import RoomRenderer


class SimulatedRoom:
    """A scenario made live: renders its sound once and its pictures on demand.

    Construction renders the sound (a few seconds for a minute of scenario; call it in a thread from
    async code) unless ``lazy``, when the first mic-array start does.
    """

    def __init__(
        self,
        scenario: Scenario | str | Path,
        speech_root: Path | None = None,
        lazy: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.clock = clock
        self._speech_root = speech_root
        self._renderer: RoomRenderer | None = None
        self._audio: RenderedAudio | None = None
        # one lock each: the picture must not wait while the sound renders (seconds), and neither lock is
        # ever taken on the event loop (a camera that did froze the whole box for the sound's render)
        self._renderer_lock = threading.Lock()
        self._audio_lock = threading.Lock()
        self._epoch: float | None = None
        if not lazy:
            _ = self.renderer
            self.audio()

    @property
    def renderer(self) -> RoomRenderer:
        with self._renderer_lock:
            if self._renderer is None:
                self._renderer = RoomRenderer(self.scenario)
            return self._renderer

    def audio(self) -> RenderedAudio:
        """The whole scenario at the mic array (rendered on the first call, a few seconds)."""
        with self._audio_lock:
            if self._audio is None:
                self._audio = render_audio(self.scenario, self._speech_root)
            return self._audio

    def epoch(self) -> float:
        """The capture-clock time of scene time 0, fixed by the first source that starts."""
        if self._epoch is None:
            self._epoch = self.clock.now()
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
        self._epoch = self.room.epoch()
        self._next = math.ceil((self.room.clock.now() - self._epoch) * self.fps - 1e-9)

    async def recv(self) -> Frame:
        if self._epoch is None:
            raise RuntimeError(f"{self.name}: recv() before start()")
        clock = self.room.clock
        # the newest frame that is due; frames a slow reader missed are skipped and counted
        due_now = math.floor((clock.now() - self._epoch) * self.fps + 1e-9)
        k = max(self._next, due_now)
        self.dropped += k - self._next
        self._next = k + 1
        await clock.sleep_until(self._epoch + k / self.fps)
        scene_t = (k / self.fps) % self.room.scenario.duration_s
        image = await asyncio.to_thread(lambda: self.room.renderer.render_frame(scene_t))  # the lock too
        return Frame(t=self._epoch + k / self.fps, image=image)

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
        self._reference: np.ndarray | None = None

    async def start(self) -> None:
        audio = await asyncio.to_thread(self.room.audio)
        self._samples, self._reference = audio.samples, audio.reference
        self._epoch = self.room.epoch()
        self._pos = math.ceil((self.room.clock.now() - self._epoch) * self.sample_rate)  # on the shared clock

    async def recv(self) -> AudioBlock:
        if self._epoch is None or self._samples is None:
            raise RuntimeError(f"{self.name}: recv() before start()")
        start = self._pos
        self._pos += self.block
        await self.room.clock.sleep_until(self._epoch + self._pos / self.sample_rate)  # ready once recorded
        n = len(self._samples)
        idx = np.arange(start, start + self.block) % n
        return AudioBlock(
            t=self._epoch + start / self.sample_rate,
            samples=self._samples[idx],
            sample_rate=self.sample_rate,
            reference=None if self._reference is None else self._reference[idx],
        )

    async def stop(self) -> None:
        self._epoch = None
