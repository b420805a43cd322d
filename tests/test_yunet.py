"""YuNet behind the detector interface, on real photographs (scikit-image's astronaut, LFW faces in rooms)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from skimage import data

from appliance.bench.faces import room_picture
from appliance.bench.faces_suite import match, room_shot
from appliance.config import BlazeFaceConfig, Config, ConfigError, YuNetConfig, parse_config
from appliance.perception.detectors import make_detector
from appliance.perception.facemodel import FaceModelError
from appliance.perception.faces import FaceDetector, iter_face_records
from appliance.perception.watch import FaceWatcher
from appliance.perception.yunet import MODEL_PATH, YuNetDetector

ASTRONAUT_FACE = (174.0, 70.0, 104.0, 104.0)


@pytest.fixture(scope="module")
def yunet() -> Iterator[YuNetDetector]:
    with YuNetDetector() as det:
        yield det


def test_astronaut_face_is_found_where_it_is(yunet: YuNetDetector) -> None:
    faces = yunet.detect(data.astronaut(), 2.5)
    assert faces.t == 2.5 and (faces.width, faces.height) == (512, 512)
    assert len(faces.faces) == 1, faces
    assert match([faces.faces[0].box], [ASTRONAUT_FACE]) == ([True], 0)
    assert faces.faces[0].score > 0.8
    assert yunet.detect(data.astronaut().copy(), 2.5) == faces  # deterministic


def test_small_lfw_faces_in_a_1080p_room_need_the_full_resolution_look(yunet: YuNetDetector) -> None:
    img, truth = room_shot((1920, 1080), (26.0, 28.0, 33.0, 38.0, 60.0, 120.0), seed=4)
    hit, false = match([f.box for f in yunet.detect(img, 0.0).faces], truth)
    assert all(hit) and false == 0, (hit, false)
    # the downscaled copy alone (no second look, candidates must pass min_score) loses the small ones
    with YuNetDetector(YuNetConfig(candidate_score=0.6, refine_below_px=0)) as coarse:
        hit_coarse, _ = match([f.box for f in coarse.detect(img, 0.0).faces], truth)
    assert sum(hit_coarse) < len(truth)


def test_refine_looks_at_given_boxes_only(yunet: YuNetDetector) -> None:
    img, truth = room_picture(face_widths=(40, 90), seed=2)
    wall = (900.0, 60.0, 40.0, 40.0)
    first, second, nothing = yunet.refine(img, [truth[0], truth[1], wall])
    assert first is not None and second is not None and nothing is None
    assert match([first.box, second.box], truth) == ([True, True], 0)
    assert yunet.refine(img, []) == []


def test_a_damaged_or_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "yunet.onnx"
    shutil.copy(MODEL_PATH, bad)
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(FaceModelError, match="yunet.onnx: the YuNet face model is damaged"):
        YuNetDetector(model_path=bad)
    with pytest.raises(FaceModelError, match="missing.onnx: cannot read the YuNet face model"):
        YuNetDetector(model_path=tmp_path / "missing.onnx")
    with YuNetDetector() as det, pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.uint8), 0.0)


def test_the_detector_section_picks_the_plugin() -> None:
    assert isinstance(Config().detector, YuNetConfig)
    old = parse_config({"detector": {"model": "short_range", "tiles": [2, 1]}})
    assert isinstance(old.detector, BlazeFaceConfig) and old.detector.tiles == (2, 1)
    assert isinstance(parse_config({"detector": {"min_score": 0.7}}).detector, YuNetConfig)
    assert isinstance(parse_config({"detector": {"type": "blazeface"}}).detector, BlazeFaceConfig)
    with pytest.raises(ConfigError, match=r"\[detector\.tiles\] unknown key"):
        parse_config({"detector": {"type": "yunet", "tiles": [2, 1]}})
    with pytest.raises(ConfigError, match="detector"):
        parse_config({"detector": {"type": "haar"}})
    with make_detector(YuNetConfig()) as det:  # type: ignore[attr-defined]
        assert isinstance(det, YuNetDetector)
    det2 = make_detector(BlazeFaceConfig(tiles=(1, 1)))
    assert isinstance(det2, FaceDetector)
    det2.close()
    with pytest.raises(TypeError, match="make_detector"):  # BlazeFace's class runs BlazeFace only
        FaceDetector(cfg=YuNetConfig())


def test_faces_on_a_video_carry_track_ids(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    img, truth = room_picture(face_widths=(60, 90), seed=5)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for i in range(5):
            frame = np.roll(img, 4 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    recs = list(iter_face_records(None, path, YuNetConfig()))
    assert [len(r["faces"]) for r in recs] == [2] * 5
    assert all(set(f) == {"box", "score", "track"} for r in recs for f in r["faces"])
    assert [sorted(f["track"] for f in r["faces"]) for r in recs] == [[1, 2]] * 5
    (still,) = list(iter_face_records(_png(tmp_path, img), None, YuNetConfig()))
    assert [set(f) for f in still["faces"]] == [{"box", "score"}] * 2  # one picture: no tracks


def _png(tmp_path: Path, img: np.ndarray) -> Path:
    import cv2

    path = tmp_path / "room.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def test_the_watcher_searches_the_frame_seldom_and_follows_faces_in_between(yunet: YuNetDetector) -> None:
    watcher = FaceWatcher(yunet, 90.0, scan_interval_s=1.0)  # the test owns yunet: the watcher is not closed
    ids = set()
    room, boxes = room_shot((1920, 1080), (30.0, 45.0, 80.0), seed=8)
    for k in range(10):  # 2 s at 5 Hz, the room drifting right
        img = np.roll(room, 3 * k, axis=1)
        truth = [(x + 3 * k, y, w, h) for x, y, w, h in boxes]
        faces, tracks = watcher.step(img, k * 0.2)
        hit, false = match([f.box for f in faces.faces], truth)
        assert all(hit) and false == 0, (k, hit, false)
        ids.update(watcher.track_ids)
    assert watcher.scans == 2 and watcher.refines == 8
    assert ids == {1, 2, 3}


def test_an_empty_room_is_searched_on_schedule_only(yunet: YuNetDetector) -> None:
    wall = np.full((360, 640, 3), 150, np.uint8)
    watcher = FaceWatcher(yunet, 90.0, scan_interval_s=1.0)
    for k in range(10):
        faces, tracks = watcher.step(wall, k * 0.2)
        assert faces.faces == () and tracks == []
    assert watcher.scans == 2  # at 0 s and 1 s; the steps in between look at no crop at all


def test_the_watcher_is_a_detector_the_box_can_use() -> None:
    img, truth = room_picture(face_widths=(50, 100), seed=6)
    with FaceWatcher.from_config(YuNetConfig(), hfov_deg=70.0) as watcher:
        faces = watcher.detect(img, 0.0)
        assert match([f.box for f in faces.faces], truth)[0] == [True, True]
        assert len(watcher.tracks) == 2 and sorted(watcher.track_ids) == [1, 2]
        assert all(abs(tr.azimuth_deg) < 35.0 for tr in watcher.tracks)
        small = np.ascontiguousarray(img[::2, ::2])  # another frame size: tracking starts afresh
        watcher.detect(small, 0.2)
        assert watcher.scans == 2 and sorted(watcher.track_ids) == [1, 2]
