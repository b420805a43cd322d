"""The device supervisor's back-off, on a virtual clock: it counts whether a device delivered, not how long
its attempt took, and its reports say why the device was lost until it runs again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from appliance.messages import DeviceStatus
from appliance.supervisor import supervise
from common.clock import VirtualClock


def _run(device: Callable[[Callable[[], None], VirtualClock], object], until: int) -> list[DeviceStatus]:
    """Supervise ``device`` (retry 2 s, at most 30 s) until it was lost ``until`` times (or a few more: the
    virtual clock runs on while the test looks)."""
    clock = VirtualClock(0.0, tick_s=0.001)
    events: list[DeviceStatus] = []

    async def main() -> None:
        async def run(started: Callable[[], None]) -> None:
            await device(started, clock)  # type: ignore[misc]

        task = asyncio.create_task(supervise("camera", run, events.append, clock, retry_s=2.0, max_retry_s=30.0))
        while sum(e.state == "lost" for e in events) < until:
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    return events


def _pauses(events: list[DeviceStatus]) -> list[float]:
    return [float(e.detail.split()[1]) for e in events if e.state == "retrying"]


def test_a_device_that_fails_slowly_without_delivering_backs_off() -> None:
    """A sweep's camera took 5-7 s to fail each open (a 2 fps RTSP stream); the supervisor counted that as
    a run longer than its 2 s pause and started the back-off over: tried every 7 s for ever."""

    async def slow_open(started: Callable[[], None], clock: VirtualClock) -> None:
        await clock.sleep_until(clock.now() + 7.0)
        raise OSError("no picture within 7 s")

    events = _run(slow_open, 6)
    assert _pauses(events)[:5] == [2.0, 4.0, 8.0, 16.0, 30.0], _pauses(events)
    retry = next(e for e in events if e.state == "retrying")
    assert retry.detail == "after 2.0 s; it was lost: OSError: no picture within 7 s"  # why, not only when
    again = [e for e in events if e.state == "starting"][1]
    assert again.detail == "again; it was lost: OSError: no picture within 7 s"


def test_a_device_that_delivered_a_while_starts_its_back_off_over() -> None:
    """After a long outage the pause is 30 s; a device that then delivers for 12 s and fails again is
    mended enough to be tried after 2 s. One that delivers for 1 s only is not."""
    runs = iter([0.0, 0.0, 0.0, 0.0, 12.0, 1.0, 1.0] + [0.0] * 100)

    async def flaky(started: Callable[[], None], clock: VirtualClock) -> None:
        ran = next(runs)
        if ran:
            started()
            await clock.sleep_until(clock.now() + ran)
        raise OSError("unplugged")

    events = _run(flaky, 7)
    assert _pauses(events)[:6] == [2.0, 4.0, 8.0, 16.0, 2.0, 4.0], _pauses(events)
