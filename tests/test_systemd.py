"""The systemd unit is one systemd accepts, and it starts the installed roombox command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_service_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/setup installs systemd"
    unit = (ROOT / "systemd" / "roombox.service").read_text()
    assert "ExecStart=/opt/roombox/.venv/bin/roombox demo" in unit
    # verify against this checkout's own command (systemd checks that the executable exists)
    here = Path(sys.prefix) / "bin" / "roombox"
    (tmp_path / "roombox.service").write_text(unit.replace("/opt/roombox/.venv/bin/roombox", str(here)))
    p = subprocess.run([analyze, "verify", str(tmp_path / "roombox.service")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "roombox.service" not in p.stderr, p.stderr  # no warnings about our unit either
