"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """The temporaries :func:`write_atomic` left beside ``path`` when it was killed before its rename
    (``.NAME.XXXXXXXX.tmp``), and nothing else: an editor's ``.NAME.swp`` or an admin's ``.NAME.bak`` stay."""
    p = Path(path)
    pattern = re.compile(rf"\.{re.escape(p.name)}\.[A-Za-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}")
    try:
        return [q for q in p.parent.iterdir() if pattern.fullmatch(q.name)]
    except OSError:
        return []


def write_atomic(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a synced temporary file and a rename."""
    p = Path(path)
    check_writable(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=TEMP_SUFFIX, dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it owner-only; the box may run as another user
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, a ``path`` a file cannot be written to by a rename: an existing directory or
    device (``/dev/stdout`` would be replaced by a file), or one below a file. Raises ValueError naming it."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a directory: give a file name to write")
    if p.exists() and not p.is_file():
        raise ValueError(f"{p}: is not a regular file (a device or pipe): give a file name to write")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{p}: cannot be written: {parent} is a file, not a directory")
            break
