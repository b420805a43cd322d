"""Each device is a supervised task: it reports, waits and reconnects; the box never dies because a cable moved."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.messages import DeviceState, DeviceStatus
from common.clock import Clock

log = logging.getLogger(__name__)

Report = Callable[[DeviceStatus], None]
MENDED_S = 10.0  # a device that delivered this long before it failed again starts its back-off over


class Wake(asyncio.Event):
    """Ends a supervisor's pause after a failure, and says why (the retry's detail)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = "another device was chosen"

    def set_for(self, reason: str) -> None:
        self.reason = reason
        self.set()


async def supervise(
    name: str,
    run: Callable[[Callable[[], None]], Awaitable[None]],
    report: Report,
    clock: Clock,
    retry_s: float = 2.0,
    max_retry_s: float = 30.0,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``run(started)`` until cancelled; when it raises or returns, report the loss, wait and start it
    again. ``run`` calls ``started()`` once its device delivers, which reports the device as running.

    The pause doubles after each failure, up to ``max_retry_s``, and starts over after a run that delivered
    for ``MENDED_S``. Setting ``wake`` during a pause ends it at once, and the back-off starts
    over (another device was put in place of the failed one, or a device was plugged in: a :class:`Wake`
    says which).
    """
    pause = retry_s
    failures = 0
    lost = ""  # why it was last lost: kept in the details of its retry and of its next start
    delivered: float | None = None  # when this start's device reported running

    def started() -> None:
        nonlocal delivered
        delivered = clock.now()
        say("running")

    def say(state: DeviceState, detail: str = "", t: float | None = None) -> None:
        at = clock.now() if t is None else t
        report(DeviceStatus(name=name, state=state, detail=detail, t=at, counters={"failures": failures}))

    while True:
        say("starting", f"again; it was lost: {lost}" if lost else "")
        delivered = None
        try:
            await run(started)
            detail = "ended"
        except asyncio.CancelledError:
            say("stopped")
            raise
        except Exception as e:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a device that fails while being stopped
                say("stopped", f"while stopping: {type(e).__name__}: {e}")
                raise asyncio.CancelledError from e
            detail = f"{type(e).__name__}: {e}"
            log.warning("%s lost: %s", name, detail)
        lost = detail
        # failures in a row wait longer each time: a device that never delivered (however long its opening
        # took: a camera that fails after 7 s of trying did not start the back-off over), or delivered for less
        # than MENDED_S; one that delivered that long starts over
        quick = delivered is None or clock.now() - delivered < MENDED_S
        pause = min(pause * 2, max_retry_s) if quick and failures else retry_s
        failures += 1
        say("lost", detail)
        if wake is not None:
            wake.clear()  # a wake-up during the run was for the run (a device swapped while it ran)
        due = clock.now() + pause
        try:
            woken = await _pause(clock, pause, wake)
        except asyncio.CancelledError:
            say("stopped")
            raise
        if woken:
            pause, failures = retry_s, 0
            say("retrying", getattr(wake, "reason", "another device was chosen"))
        else:  # stamped when it was due: the task may run a little later on a busy machine
            say("retrying", f"after {pause:.1f} s; it was lost: {lost}", t=min(due, clock.now()))


async def stop_task(task: asyncio.Future[Any], again_s: float = 0.1) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every ``again_s`` while it runs on:
    on Python 3.11 ``asyncio.wait_for`` swallows a cancel that comes just as what it waits for arrives (a
    frame, a block), and a device's pump then read on (a camera switched away from ran on until it failed).
    An error the task ended with, other than the cancel, is raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=again_s)
    if not task.cancelled():
        task.result()


async def _pause(clock: Clock, seconds: float, wake: asyncio.Event | None) -> bool:
    """Wait ``seconds`` on ``clock``, or until ``wake`` is set (then True)."""
    if wake is None:
        await clock.sleep_until(clock.now() + seconds)
        return False
    sleeping = asyncio.ensure_future(clock.sleep_until(clock.now() + seconds))
    waking = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeping, waking}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in (sleeping, waking):
            if not f.done():
                f.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await f
    return wake.is_set()
