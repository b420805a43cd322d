"""The capture clock: one monotonic time base for every frame, audio block and playback reference.

Every source is handed a :class:`Clock` and stamps what it captures with ``clock.now()`` (seconds). Sources
that pace themselves (the simulated room, files played "live") wait with ``await clock.sleep_until(t)``.

- :class:`MonotonicClock` is the box's clock: ``time.monotonic()``; ``now()`` may be read from any thread.
- :class:`VirtualClock` is for tests and offline runs: time moves only when something sleeps until a later
  time (it jumps there at once) or when ``advance()`` is called, so a test never waits on the wall clock.
"""

from __future__ import annotations

import asyncio
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
    """A clock that only moves when told: ``sleep_until(t)`` jumps to ``t`` (after yielding to the loop once),
    ``advance(dt)`` moves it by hand. Several sources sharing one keep their timestamps consistent."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError(f"a clock cannot go back ({dt} s)")
        self._now += dt
        return self._now

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(0)
        self._now = max(self._now, float(t))


SYSTEM_CLOCK = MonotonicClock()
