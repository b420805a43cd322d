"""systemd's notify protocol without a dependency: one datagram per message to ``$NOTIFY_SOCKET``.

The lead's wiring: ``notify_ready()`` once the panel serves and the devices are started, then
``asyncio.create_task(watchdog_loop())`` (a no-op when systemd asked for no watchdog) and
``status_loop(describe)`` (STATUS= as the box's health changes), and
``notify_stopping()`` on shutdown. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing and
returns False.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

STATUS_MAX = 400  # characters of STATUS= (systemctl shows one line)


def _address(raw: str) -> str | bytes:
    # "@name" is a Linux abstract socket: a leading NUL byte instead of "@"
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def notify(state: str, socket_path: str | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"WATCHDOG=1"``, ``"STATUS=..."``; several joined with newlines) to
    systemd. Returns True when sent, False when there is no notify socket or sending failed."""
    raw = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not raw or not (raw.startswith("/") or raw.startswith("@")):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(_address(raw))
            s.sendall(state.encode())
        return True
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", raw, e)
        return False


def notify_ready(status: str = "") -> bool:
    """READY=1 (and a STATUS line): systemd then considers a ``Type=notify`` service started."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def notify_status(status: str) -> bool:
    """A one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={status}")


async def status_loop(describe: Callable[[], str], period_s: float = 5.0) -> None:
    """Send ``STATUS=describe()`` each time it changes (looked at every ``period_s``) until cancelled, so that
    ``systemctl status`` says what the box does now (``degraded: camera 'main' is lost: ...``), not what it
    said at start. Returns at once outside systemd (no ``$NOTIFY_SOCKET``)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    said = None
    while True:
        try:
            text = " ".join(describe().split())[:STATUS_MAX]  # one line
        except Exception:
            log.exception("the status for systemd failed")
            text = None
        if text is not None and text != said and notify_status(text):
            said = text
        await asyncio.sleep(period_s)


def notify_stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd expects (WatchdogSec=), or None when no watchdog applies
    to this process (``$WATCHDOG_USEC`` unset, or ``$WATCHDOG_PID`` names another process)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


async def watchdog_loop(alive: Callable[[], bool] | None = None, interval_s: float | None = None) -> None:
    """Ping WATCHDOG=1 at half of systemd's watchdog interval until cancelled.

    That this coroutine runs at all shows the event loop is not stuck. ``alive()``, if given, can withhold
    the ping (return False) when the box is alive but useless, so that systemd restarts it. Returns at
    once when there is no watchdog (``interval_s`` overrides ``$WATCHDOG_USEC``).
    """
    interval = interval_s if interval_s is not None else watchdog_interval()
    if interval is None:
        return
    period = max(interval / 2.0, 0.01)
    withheld = False
    while True:
        ok = True
        if alive is not None:
            try:
                ok = bool(alive())
            except Exception:
                log.exception("watchdog check failed")
                ok = False
        if ok:
            notify("WATCHDOG=1")
            if withheld:
                log.info("watchdog: alive again")
            withheld = False
        elif not withheld:
            log.error("watchdog: the box is not alive; withholding the ping (systemd will restart it)")
            withheld = True
        await asyncio.sleep(period)
