"""Each device is a supervised task: it reports, waits and reconnects; the box never dies because a cable moved."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from appliance.messages import DeviceState, DeviceStatus
from common.clock import Clock

log = logging.getLogger(__name__)

Report = Callable[[DeviceStatus], None]


async def supervise(
    name: str,
    run: Callable[[Callable[[], None]], Awaitable[None]],
    report: Report,
    clock: Clock,
    retry_s: float = 2.0,
    max_retry_s: float = 30.0,
) -> None:
    """Run ``run(started)`` until cancelled; when it raises or returns, report the loss, wait and start it
    again. ``run`` calls ``started()`` once its device delivers, which reports the device as running.

    The pause doubles after each quick failure, up to ``max_retry_s``, and starts over after a run that
    lasted longer than the pause.
    """
    pause = retry_s
    failures = 0

    def say(state: DeviceState, detail: str = "") -> None:
        report(DeviceStatus(name=name, state=state, detail=detail, t=clock.now(), counters={"failures": failures}))

    while True:
        say("starting")
        began = clock.now()
        try:
            await run(lambda: say("running"))
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
        # quick failures in a row wait longer each time; a device that ran a while starts over
        quick = clock.now() - began <= pause
        pause = min(pause * 2, max_retry_s) if quick and failures else retry_s
        failures += 1
        say("lost", detail)
        try:
            await clock.sleep_until(clock.now() + pause)
        except asyncio.CancelledError:
            say("stopped")
            raise
        say("retrying", f"after {pause:.1f} s")
