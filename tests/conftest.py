"""Shared fixtures: a real headless Chromium (Debian's) driven by Playwright, and the artifacts folder; and a
check, after each test, that it left no UDP socket open for good."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import traceback
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # the tests run in a network namespace with loopback only: WebRTC candidates must be 127.0.0.1
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` (sync API) on Debian's Chromium, headless.

    Module-scoped on purpose: while Playwright's sync API is alive, its event loop counts as running in
    the main thread, so ``asyncio.run()`` fails there; a session-wide browser would break every later
    test module that uses ``asyncio.run``. Launching costs about half a second.

    Playwright's ``launch`` gives the browser a fresh temporary user-data-dir and removes it on close.
    Fails when Chromium or Playwright is missing (scripts/setup installs both). Checks that no child
    process outlives it.
    """
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is not installed: run scripts/setup")
    import playwright.sync_api as sync_api

    pw = sync_api.sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()
    left = _children()
    assert not left, f"processes left behind: {left}"


def _children() -> list[str]:
    """This process's live children, as "pid name" (Linux /proc)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            name, fields = rest.rsplit(") ", 1)
        except (OSError, ValueError):
            continue
        state, ppid = fields.split()[:2]
        if int(ppid) == me and state != "Z":
            found.append(f"{pid} {name}")
    return found


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """``artifacts/`` at the repo root (gitignored): screenshots and other things to look at after a run."""
    path = REPO / "artifacts"
    path.mkdir(exist_ok=True)
    return path


# ---------- UDP sockets left open for good ----------
# An asyncio datagram transport (aiortc/aioice's ICE sockets, a VISCA client) still open when its event loop is
# closed can never be closed: the garbage collector finds it whenever it runs next, often after the last test,
# and pytest then fails the whole run with an unclosed-transport ResourceWarning that names no test. So every
# datagram transport's birthplace is noted, and the test that leaves one open fails, saying where it was made.
_DATAGRAMS: weakref.WeakSet[Any] = weakref.WeakSet()
_SELECTOR_LOOP: Any = asyncio.selector_events.BaseSelectorEventLoop
_make_datagram_transport = _SELECTOR_LOOP._make_datagram_transport
_PLUMBING = (os.path.dirname(asyncio.__file__), os.path.dirname(threading.__file__) + "/threading.py")


def _noting_datagram_transport(self: Any, *args: Any, **kwargs: Any) -> Any:
    transport = _make_datagram_transport(self, *args, **kwargs)
    frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith(_PLUMBING)]
    task = asyncio.current_task(self)
    coro = getattr(task.get_coro(), "__qualname__", "?") if task is not None else "none"
    transport._made_at = "".join(traceback.format_list(frames[-10:])) + f"  in the task running {coro}\n"
    _DATAGRAMS.add(transport)
    return transport


_SELECTOR_LOOP._make_datagram_transport = _noting_datagram_transport


def _left_open() -> list[str]:
    found = []
    for transport in list(_DATAGRAMS):
        sock = transport._sock
        if sock is not None and transport._loop.is_closed():
            found.append(f"{sock!r}, made at:\n{transport._made_at}")
            transport._sock = None  # reported here: not again by the garbage collector, in another test
            sock.close()
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    result = yield
    left = _left_open()
    if left:
        pytest.fail(f"{len(left)} UDP socket(s) left open after their event loop closed: " + "\n".join(left))
    return result
