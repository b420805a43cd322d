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


def cache_dir(name: str, env_var: str | None = None) -> Path:
    """A cache folder: ``$env_var`` when set, else ``<data dir>/cache/<name>`` when that can be written, else
    ``~/.cache/roombox/<name>`` (an installed data dir may be read-only)."""
    env = os.environ.get(env_var) if env_var else None
    if env:
        return Path(env)
    preferred = data_dir() / "cache" / name
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    return Path.home() / ".cache" / "roombox" / name
