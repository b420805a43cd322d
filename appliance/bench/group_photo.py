"""A real group photo for ``roombox bench faces``: six people round a card table, and its face boxes.

The photo is ``insightface/data/images/t1.jpg`` (1280x886) of the PyPI sdist of ``insightface`` 2.1. Its
copyright is its photographer's, so the repository does not carry it: :func:`ensure_group_photo` (run by
``scripts/setup`` through ``python -m appliance.provision``) downloads the sdist from PyPI into
``<data dir>/cache``, checks its sha256, takes out the photo alone, checks that too and writes it to
``<data dir>/bench/``. Idempotent; with the sdist already in the cache it needs no network. At run time
:func:`group_photo` only reads the provisioned file.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np

from appliance.perception.facemodel import sha256_of
from common.atomic import write_atomic
from common.paths import data_dir
from drivers.simroom.assets import AssetError, member_from_archive

Box = tuple[float, float, float, float]

SDIST_URL = (
    "https://files.pythonhosted.org/packages/11/c7/7064625547238052effa5422b7d3e5512fa921dc0445737096861986e580/"
    "insightface-2.1.tar.gz"
)
SDIST_NAME = "insightface-2.1.tar.gz"
SDIST_SHA256 = "776cbd36b70f5f2ae1a026101cfb80387f0b2280a0dbaf073f8d3ed69f554e01"
MEMBER = "insightface-2.1/insightface/data/images/t1.jpg"
PHOTO_NAME = "insightface-t1.jpg"
PHOTO_SHA256 = "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"
PHOTO_SIZE = (1280, 886)

# The six faces, (x, y, w, h) in the photo's pixels, brows to chin and cheek to cheek (the convention of
# drivers.simroom.faces' face boxes). Made by hand: each face cropped from the photo, enlarged 3x under a
# 10 px grid, and the box drawn over it and corrected until it sat on the brows, the chin and the cheeks;
# no detector was run to make them. ``turned``: a three-quarter view, the far cheek hidden.
GROUP_FACES: tuple[tuple[str, Box, bool], ...] = (
    ("left, head tilted, eyes down", (64, 296, 88, 100), False),
    ("standing behind, turned to her right, looking down", (276, 180, 86, 86), True),
    ("centre left, head tilted, smiling", (468, 302, 110, 112), False),
    ("centre right, laughing, eyes shut", (748, 384, 106, 102), False),
    ("standing right, turned to his right, looking down (near profile)", (912, 100, 94, 106), True),
    ("right, hair over the cheeks, eyes down", (1138, 300, 84, 98), False),
)
# A small framed portrait on the wall (a figure about 10 px tall): a detection there is neither a hit nor
# a false face.
GROUP_IGNORE: tuple[Box, ...] = ((305, 58, 52, 48),)


def _download(url: str, timeout: float = 120.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data: bytes = r.read()
            return data
    except OSError as e:
        raise AssetError(f"downloading {url} failed: {e}") from None


def ensure_group_photo(root: Path | None = None) -> list[Path]:
    """Make sure ``root/bench/insightface-t1.jpg`` is there and matches its pinned sha256; returns its path.

    Returns at once when it is. Otherwise takes it out of ``root/cache/insightface-2.1.tar.gz``, downloading
    that (pinned by sha256) from PyPI first when it is absent or damaged.
    """
    root = Path(root or data_dir())
    target = root / "bench" / PHOTO_NAME
    if target.is_file() and sha256_of(target.read_bytes()) == PHOTO_SHA256:
        return [target]
    sdist = root / "cache" / SDIST_NAME
    if not (sdist.is_file() and sha256_of(sdist.read_bytes()) == SDIST_SHA256):
        data = _download(SDIST_URL)
        if sha256_of(data) != SDIST_SHA256:
            raise AssetError(f"{SDIST_URL}: sha256 {sha256_of(data)} does not match the pinned {SDIST_SHA256}")
        write_atomic(sdist, data)
    photo = member_from_archive(sdist, MEMBER) or b""
    if sha256_of(photo) != PHOTO_SHA256:
        raise AssetError(f"{sdist}:{MEMBER}: sha256 {sha256_of(photo)} does not match the pinned {PHOTO_SHA256}")
    write_atomic(target, photo)
    return [target]


def group_photo(root: Path | None = None) -> np.ndarray:
    """The provisioned group photo, RGB uint8 (886, 1280, 3); :class:`AssetError` when missing or damaged."""
    import cv2

    path = Path(root or data_dir()) / "bench" / PHOTO_NAME
    if not path.is_file():
        raise AssetError(f"{path} is missing: run scripts/setup (it fetches the bench's group photo)")
    raw = path.read_bytes()
    if sha256_of(raw) != PHOTO_SHA256:
        raise AssetError(f"{path}: sha256 does not match the pinned {PHOTO_SHA256}: run scripts/setup again")
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise AssetError(f"{path}: not a picture OpenCV can read")
    rgb: np.ndarray = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb
