"""A live camera read on a thread of its own, delivering the newest frame: the machinery the V4L2 and RTSP
drivers share.

A :class:`Grabber` runs entirely on the reader thread: ``open()``, then ``grab()`` (dequeue one picture from
the device, as fast as it comes, so the device never backs up) and ``retrieve()`` (convert the last grabbed
picture to RGB), then ``close()``. :class:`LatestFrameCamera` stamps each grab with ``clock.now()`` at
dequeue and converts only the pictures a consumer is waiting for; every other grabbed picture is counted in
``dropped``. So a slow consumer gets the freshest picture and never a queue of stale ones.

The device going away (``grab()`` returns False or raises :class:`SourceLost`), or no picture for
``stall_s`` seconds, makes ``recv()`` raise :class:`SourceLost` (the supervisor retries). A device that
refuses the configured format raises :class:`CameraFormatError` from ``start()``, which is not retried
usefully: the message says what to change.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol

import numpy as np

from common.clock import SYSTEM_CLOCK, Clock
from common.errors import RoomboxError
from drivers.base import Frame, SourceLost
from drivers.hotplug import Watch, watches_of


class CameraFormatError(RoomboxError, ValueError):
    """The device refuses the configured format, size or rate; the message names the device, what was asked
    and what it offers."""


class Grabber(Protocol):
    """One device, used only from the reader thread."""

    def open(self) -> None: ...

    def grab(self) -> bool: ...

    def retrieve(self) -> np.ndarray: ...

    def close(self) -> None: ...


class LatestFrameCamera:
    """A :class:`drivers.base.VideoSource` over a :class:`Grabber` read on its own thread."""

    def __init__(
        self,
        name: str,
        grabber: Grabber,
        clock: Clock = SYSTEM_CLOCK,
        stall_s: float = 5.0,
        open_timeout_s: float = 15.0,
    ) -> None:
        self.name = name
        self.clock = clock
        self.stall_s = stall_s
        self.open_timeout_s = open_timeout_s
        self.grabbed = 0
        self.dropped = 0
        self._grabber = grabber
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._error: BaseException | None = None
        self._opened = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._stuck: threading.Thread | None = None

    # --- the reader thread ---
    def _post(self, frame: Frame | None, error: BaseException | None = None) -> None:
        with self._lock:
            if frame is not None:
                self._frame = frame
            if error is not None and self._error is None:
                self._error = error
        loop, ready = self._loop, self._ready
        if loop is not None and ready is not None:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # the loop has closed
                pass

    def _run(self) -> None:
        g, stopping, wanted, opened = self._grabber, self._stopping, self._wanted, self._opened
        try:
            g.open()
            opened.set()
            while not stopping.is_set():
                if not g.grab():
                    raise SourceLost(f"{self.name}: the device stopped delivering pictures")
                t = self.clock.now()
                self.grabbed += 1
                if wanted.is_set():
                    wanted.clear()
                    self._post(Frame(t=t, image=g.retrieve()))
                else:
                    self.dropped += 1
        except BaseException as e:
            if not stopping.is_set():
                self._post(
                    None,
                    e
                    if isinstance(e, SourceLost | CameraFormatError)
                    else SourceLost(f"{self.name}: {type(e).__name__}: {e}"),
                )
        finally:
            opened.set()  # after the error is posted: start() reports it
            try:
                g.close()
            except Exception:
                pass

    # --- the event loop side ---
    def watches(self) -> list[Watch]:
        return watches_of(self._grabber)

    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: started twice")
        if self._stuck is not None and self._stuck.is_alive():
            raise SourceLost(f"{self.name}: the previous reader is still stuck in the device")
        # a fresh run (the supervisor starts the same source again after a loss)
        self._stuck = None
        self._stopping, self._wanted, self._opened = threading.Event(), threading.Event(), threading.Event()
        self._frame, self._error = None, None
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera:{self.name}", daemon=True)
        self._thread.start()
        opened = await asyncio.to_thread(self._opened.wait, self.open_timeout_s)
        if not opened:
            await self.stop()
            raise SourceLost(f"{self.name}: the device did not open within {self.open_timeout_s:g} s")
        with self._lock:
            error = self._error
        if error is not None:
            await self.stop()
            raise error

    async def recv(self) -> Frame:
        if self._thread is None or self._ready is None:
            raise RuntimeError(f"{self.name}: recv() before start()")
        with self._lock:
            self._frame = None
        self._ready.clear()
        self._wanted.set()
        deadline = asyncio.get_running_loop().time() + self.stall_s
        while True:
            with self._lock:
                frame, error = self._frame, self._error
                self._frame = None
            if error is not None:
                raise error
            if frame is not None:
                return frame
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise SourceLost(f"{self.name}: no picture for {self.stall_s:g} s")
            try:  # not wait_for: on Python 3.11 it swallows a cancel that comes with the frame (stop() lost)
                async with asyncio.timeout(left):
                    await self._ready.wait()
            except TimeoutError:
                continue
            self._ready.clear()

    async def stop(self) -> None:
        """Stop reading; waits for the reader thread to leave the device (a read in flight ends within the
        driver's own timeout) and closes it."""
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None:
            await asyncio.to_thread(thread.join, self.stall_s + 5.0)
            if thread.is_alive():
                self._stuck = thread
