"""Where the box keeps its files.

``ROOMBOX_DATA`` holds provisioned read-only assets (face-detection models, speech clips); by default
``<prefix>/share/roombox`` of the Python environment that runs the box, so each install carries its own.
``ROOMBOX_HOME`` holds state (config, recordings); by default ``~/.local/state/roombox``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def data_dir() -> Path:
    env = os.environ.get("ROOMBOX_DATA")
    return Path(env) if env else Path(sys.prefix) / "share" / "roombox"


def home_dir() -> Path:
    env = os.environ.get("ROOMBOX_HOME")
    return Path(env) if env else Path.home() / ".local" / "state" / "roombox"
