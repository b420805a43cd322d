"""The systemd notify protocol against a real datagram socket, as systemd's own listens."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.control import sdnotify


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(10.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield s


def _pending(s: socket.socket) -> list[bytes]:
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(s.recv(4096))
    except BlockingIOError:
        return out
    finally:
        s.settimeout(10.0)


def test_ready_status_and_stopping_reach_the_socket(notify_socket: socket.socket) -> None:
    assert sdnotify.notify_ready("serving on :8080")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=serving on :8080"
    assert sdnotify.notify_status("camera lost")
    assert notify_socket.recv(4096) == b"STATUS=camera lost"
    assert sdnotify.notify_stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"roombox-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(10.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify_ready()
        assert s.recv(4096) == b"READY=1"


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify_ready()
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not sdnotify.notify("READY=1")  # a stale socket path is logged, not raised
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    asyncio.run(asyncio.wait_for(sdnotify.watchdog_loop(), 5.0))  # returns at once: no watchdog


def test_watchdog_interval_is_ours_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert sdnotify.watchdog_interval() is None


def test_watchdog_pings_while_alive_and_withholds_when_not(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # pings every 20 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    verdicts = [True, True, True, False, False, False, True]
    calls: list[bool] = []

    def alive() -> bool:
        v = verdicts[len(calls)] if len(calls) < len(verdicts) else False
        calls.append(v)
        return v

    async def run() -> None:
        task = asyncio.create_task(sdnotify.watchdog_loop(alive))
        while len(calls) < len(verdicts) + 2:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(run(), 20.0))
    got = _pending(notify_socket)
    assert got and set(got) == {b"WATCHDOG=1"}
    assert len(got) == sum(calls)  # one ping per "alive" verdict, none while not alive


def test_the_status_follows_what_the_box_says_of_itself(notify_socket: socket.socket) -> None:
    """A sweep: ``systemctl status`` kept the STATUS= of the start ("panel at ...") while the camera was lost.
    Now each change of the health's line is sent, once, on one line."""
    said = ["ok; panel at http://127.0.0.1:8080/"] * 3 + ["degraded: camera 'main' is lost:\n  no data"] * 3

    def describe() -> str:
        return said.pop(0) if len(said) > 1 else said[0]

    async def run() -> None:
        task = asyncio.create_task(sdnotify.status_loop(describe, period_s=0.01))
        while len(said) > 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert _pending(notify_socket) == [
        b"STATUS=ok; panel at http://127.0.0.1:8080/",
        b"STATUS=degraded: camera 'main' is lost: no data",
    ]
