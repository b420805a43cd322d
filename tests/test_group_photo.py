"""The bench's real group photo: provisioned from the cached insightface sdist, its hand-made truth, YuNet on it.

Uses the photo and sdist that ``scripts/setup`` provisions in the data directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.bench.faces_group import group_shot
from appliance.bench.faces_suite import BANDS, _band, match
from appliance.bench.group_photo import (
    GROUP_FACES,
    PHOTO_NAME,
    PHOTO_SIZE,
    SDIST_NAME,
    ensure_group_photo,
    group_photo,
)
from appliance.config import YuNetConfig
from appliance.perception import yunet
from appliance.perception.detectors import make_detector
from common.paths import data_dir
from drivers.simroom.assets import AssetError


def test_yunet_finds_every_face_of_the_group_photo_at_80_200_px() -> None:
    img, truth, _ignore, turned = group_shot((1920, 1080), 1.0, seed=3)
    assert img.shape == (1080, 1920, 3)
    assert len(truth) == 6 and any(turned)
    assert all(_band(w) == len(BANDS) - 1 for _, _, w, _ in truth)
    det = make_detector(YuNetConfig())
    try:
        faces = det.detect(img, 0.0)
    finally:
        det.close()
    hit, false = match([f.box for f in faces.faces], truth)
    assert hit == [True] * 6, [f.box for f in faces.faces]
    assert false == 0


def test_a_box_far_smaller_than_the_smallest_face_looked_for_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # at 4K with the photo's faces at 26-33 px, YuNet also sees a 13x16 px "face" in the pattern of a bowl on
    # the table: far below min_face_px (24), so it is no face to frame; the real ones stay
    img, truth, ignore, _ = group_shot((3840, 2160), 0.3, seed=0)
    det = make_detector(YuNetConfig())
    try:
        faces = det.detect(img, 0.0)
        monkeypatch.setattr(yunet, "TOO_SMALL", 0.0)  # without the size floor the box is there
        all_faces = det.detect(img, 0.0)
    finally:
        det.close()
    hit, false = match([f.box for f in faces.faces], truth)
    assert hit == [True] * 6 and false == 0, [f.box for f in faces.faces]
    assert any(max(f.box[2], f.box[3]) < 18 for f in all_faces.faces), [f.box for f in all_faces.faces]


def test_the_hand_made_truth_lies_on_the_photo() -> None:
    photo = group_photo()
    assert (photo.shape[1], photo.shape[0]) == PHOTO_SIZE
    boxes = [b for _, b, _ in GROUP_FACES]
    for x, y, w, h in boxes:
        assert 0 <= x and x + w <= PHOTO_SIZE[0] and 0 <= y and y + h <= PHOTO_SIZE[1]
        assert 60 <= w <= 130 and 0.7 <= h / w <= 1.4
    for i, a in enumerate(boxes):  # six different people: no two boxes overlap
        for b in boxes[i + 1 :]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def test_a_missing_or_damaged_photo_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(AssetError) as e:
        group_photo(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "bench" / PHOTO_NAME) in msg and "run scripts/setup" in msg and "\n" not in msg
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / PHOTO_NAME).write_bytes(b"not a photo")
    with pytest.raises(AssetError, match="sha256.*run scripts/setup"):
        group_photo(tmp_path)


def test_setup_takes_the_photo_out_of_the_cached_sdist_and_repairs_it(tmp_path: Path) -> None:
    cached = data_dir() / "cache" / SDIST_NAME
    (tmp_path / "cache").mkdir()
    shutil.copy(cached, tmp_path / "cache" / SDIST_NAME)
    (target,) = ensure_group_photo(tmp_path)
    assert target == tmp_path / "bench" / PHOTO_NAME
    assert (group_photo(tmp_path) == group_photo()).all()
    target.write_bytes(b"damaged")  # set-up again: rebuilt from the cached sdist, the same photo
    assert ensure_group_photo(tmp_path) == [target]
    assert (group_photo(tmp_path) == group_photo()).all()
