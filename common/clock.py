"""The capture clock: one monotonic time base for every frame, audio block and playback reference.

Every source is handed a :class:`Clock` and stamps what it captures with ``clock.now()`` (seconds). Sources
that pace themselves (the simulated room, files played "live") wait with ``await clock.sleep_until(t)``.

- :class:`MonotonicClock` is the box's clock: ``time.monotonic()``; ``now()`` may be read from any thread.
- :class:`VirtualClock` is for tests and simulations: time moves from one sleeper's wake-up time to the next
  (or by ``advance()``), so a test never waits on the wall clock and its timestamps are exact.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Seconds on a monotonic time base shared by every source of one box."""

    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...


class MonotonicClock:
    """The box's capture clock: ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock as ALSA/V4L2 stamps)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t: float) -> None:
        wait = t - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


class VirtualClock:
    """A clock for tests and simulations that never waits on the wall clock.

    ``sleep_until(t)`` parks the caller; the clock then moves to the earliest parked time and wakes whoever
    waits for it (one event at a time, after the loop has had ``tick_s`` of real time to run what is
    ready), so sources sharing the clock are woken in time order and run as fast as the machine allows.
    ``advance(dt)`` moves it by hand (a slow reader, a pause) and wakes everyone it passes.
    """

    def __init__(self, start: float = 0.0, tick_s: float = 0.0005) -> None:
        self._now = float(start)
        self.tick_s = tick_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._tick: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self._now

    def advance(self, dt: float) -> float:
        """Move the clock ``dt`` seconds on and wake every sleeper it passes; returns the new time."""
        if dt < 0:
            raise ValueError(f"a clock cannot go back ({dt} s)")
        self._now += dt
        self._wake()
        return self._now

    async def sleep_until(self, t: float) -> None:
        if t <= self._now:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (float(t), self._seq, fut))
        if self._tick is None:
            self._tick = loop.call_later(self.tick_s, self._on_tick)
        await fut

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def _on_tick(self) -> None:
        self._tick = None
        while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
            heapq.heappop(self._sleepers)
        if not self._sleepers:
            return
        self._now = max(self._now, self._sleepers[0][0])
        self._wake()
        if self._sleepers:
            self._tick = asyncio.get_running_loop().call_later(self.tick_s, self._on_tick)


SYSTEM_CLOCK = MonotonicClock()
