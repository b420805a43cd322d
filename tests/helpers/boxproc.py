"""``roombox run`` or ``roombox demo`` as a process of its own, for the tests that drive a whole box (a
restart, a browser, the command line's start): started and waited for until it serves its panel, its output
kept for the failure message, stopped by its PID."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


class BoxProcess:
    """``python -m appliance.cli ARGS`` with ``ROOMBOX_HOME=home``; ``start()`` waits until it says where its
    panel is; ``out`` holds every line it printed, ``kiosk`` the kiosk links it gave (``roombox demo``)."""

    def __init__(self, args: list[str], home: Path) -> None:
        self.args, self.home = args, home
        self.out: list[str] = []
        self.kiosk: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 180.0) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "ROOMBOX_HOME": str(self.home)},
        )
        self.proc = proc
        ready, serving = threading.Event(), threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.out.append(line)
                if "kiosk link" in line:
                    self.kiosk.append(line.split()[-1])
                if "panel at" in line:
                    serving.set()
                    ready.set()
            ready.set()  # it ended: start() says so rather than waiting out its bound

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(timeout_s)
        if not serving.is_set():
            code = self.stop()
            raise AssertionError(f"roombox {self.args[0]} did not start (exit {code}):\n" + self.tail())

    def tail(self, lines: int = 40) -> str:
        return "".join(self.out[-lines:])

    def stop(self) -> int:
        """SIGTERM, then its exit code (-1: it had to be killed)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.terminate()
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -1
        if proc.stdout is not None:
            proc.stdout.close()
        return code
