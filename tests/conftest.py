"""Shared fixtures: a real headless Chromium (Debian's) driven by Playwright, and the artifacts folder."""

from __future__ import annotations

import os
import shutil
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
