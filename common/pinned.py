"""Files the box carries or builds from, pinned by sha256 (its models)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def read_pinned(
    path: Path, sha256: str, what: str, error: type[Exception] = ValueError, fix: str = "reinstall roombox"
) -> bytes:
    """The bytes of ``path`` after checking them against ``sha256``. A file that cannot be read or whose
    digest differs is an ``error`` whose message names the file, ``what`` it is, and ``fix``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror}); {fix}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise error(f"{path}: {what} is damaged (sha256 {digest[:12]}..., expected {sha256[:12]}...); {fix}")
    return data
