"""What a device's coming and going changes on this machine, so that a device plugged in is tried at once.

A supervised device that was lost waits out its back-off (up to 30 s) before it is tried again. A driver names
the places whose change may bring its device back (:class:`Watch`: a file, or the names in a directory that
start with a prefix); the box looks at them every second (a few ``stat`` and ``listdir`` calls) and, when one
changed, ends the lost device's pause. Nothing here opens a device.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Watch:
    """A file (``prefix`` None: whether it is there, its size and time) or the entries of a directory whose
    names start with ``prefix`` ("" for all of them)."""

    path: Path
    prefix: str | None = None


def sound_watches() -> list[Watch]:
    """Where a sound device's coming shows: the kernel's sound nodes (a USB array plugged in), and ALSA's
    own configuration, which defines devices too (PulseAudio's and PipeWire's, or a test's)."""
    return [
        Watch(Path("/dev/snd"), ""),
        Watch(Path.home() / ".asoundrc"),
        Watch(Path("/etc/asound.conf")),
    ]


def video_watches() -> list[Watch]:
    """Where a UVC camera's coming shows: its ``/dev/video*`` nodes."""
    return [Watch(Path("/dev"), "video")]


def watches_of(source: Any) -> list[Watch]:
    """What a source (a camera, a mic array, a speaker) asks to be watched, if anything."""
    get = getattr(source, "watches", None)
    return list(get()) if callable(get) else []


def _look(w: Watch) -> object:
    try:
        if w.prefix is None:
            st = w.path.stat()
            return (st.st_size, st.st_mtime_ns)
        return tuple(sorted(n for n in os.listdir(w.path) if n.startswith(w.prefix)))
    except OSError:  # not there (yet), or not readable: that too is a state, and its end a change
        return None


def signature(watches: Iterable[Watch]) -> tuple[tuple[Watch, object], ...]:
    """The state of ``watches`` now; two signatures differ when a device may have come or gone."""
    return tuple((w, _look(w)) for w in dict.fromkeys(watches))
