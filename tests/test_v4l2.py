"""The V4L2 camera driver: its parsing and mode choice against recorded answers of real cameras
(tests/data/v4l2/README.md), its config, and what it does with no device (this machine has none)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from appliance.config import parse_config
from drivers.base import SourceLost
from drivers.capture import CameraFormatError
from drivers.registry import open_device
from drivers.v4l2 import (
    Mode,
    V4l2CameraConfig,
    choose_mode,
    list_cameras,
    parse_list_devices,
    parse_list_formats,
)

DATA = Path(__file__).parent / "data" / "v4l2"


def formats(name: str) -> list:
    return parse_list_formats((DATA / f"{name}-list-formats-ext.txt").read_text())


def test_parses_the_formats_of_real_cameras() -> None:
    brio = formats("brio")
    assert [f.fourcc for f in brio] == ["YUYV", "MJPG", "NV12"]
    assert brio[1].description == "Motion-JPEG, compressed"
    mjpg = {(s.width, s.height): s.fps for s in brio[1].sizes}
    assert mjpg[(4096, 2160)][0] == 30.0 and mjpg[(1920, 1080)][:2] == (60.0, 30.0)
    assert {(s.width, s.height): s.fps for s in brio[0].sizes}[(1920, 1080)] == (5.0,)
    assert sum(len(f.sizes) for f in brio) == 17 + 9 + 3
    assert [f.fourcc for f in formats("ptz4k")] == ["MJPG", "YUYV", "H264", "NV12", "HEVC"]

    step = formats("stepwise")
    yuyv, mjpg_range = step[0].sizes[0], step[1].sizes[0]
    assert (yuyv.max_width, yuyv.max_height, yuyv.step, yuyv.min_fps, yuyv.fps) == (1920, 1080, (16, 8), 1.0, (30.0,))
    assert yuyv.has_size(1280, 720) and not yuyv.has_size(1280, 721) and not yuyv.has_size(2560, 1440)
    assert mjpg_range.has_size(3840, 2160) and mjpg_range.has_rate(60) and not mjpg_range.has_rate(61)


def test_parses_the_device_list() -> None:
    devs = parse_list_devices((DATA / "list-devices.txt").read_text())
    assert [(n, b) for n, b, _ in devs] == [
        ("Logitech BRIO", "usb-0000:00:14.0-1"),
        ("Logitech Webcam C930e", "usb-0000:00:14.0-2"),
        ("UHD PTZ Camera: UHD PTZ Camera", "usb-0000:00:14.0-3"),
    ]
    assert devs[0][2] == ["/dev/video0", "/dev/video1", "/dev/video2", "/dev/video3", "/dev/media0"]


@pytest.mark.parametrize(
    "camera, w, h, fps, pf, mode",
    [
        ("brio", 1920, 1080, 30, "auto", Mode("MJPG", 1920, 1080, 30.0)),
        ("brio", 3840, 2160, 30, "auto", Mode("MJPG", 3840, 2160, 30.0)),
        ("brio", 640, 480, 30, "YUYV", Mode("YUYV", 640, 480, 30.0)),
        ("c930e", 1920, 1080, 29.97, "auto", Mode("MJPG", 1920, 1080, 30.0)),
        ("c930e", 1920, 1080, 5, "YUYV", Mode("YUYV", 1920, 1080, 5.0)),
        ("ptz4k", 3840, 2160, 30, "auto", Mode("MJPG", 3840, 2160, 30.0)),
        ("ptz4k", 1280, 720, 30, "YUYV", Mode("YUYV", 1280, 720, 30.0)),
        ("stepwise", 1280, 720, 25, "auto", Mode("MJPG", 1280, 720, 25.0)),
    ],
)
def test_chooses_the_mode(camera: str, w: int, h: int, fps: float, pf: str, mode: Mode) -> None:
    assert choose_mode(formats(camera), w, h, fps, pf) == mode  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "camera, w, h, fps, pf, message",
    [
        ("c930e", 3840, 2160, 30, "auto", "MJPG/YUYV has no 3840x2160 (it has 2304x1536, 2304x1296, 1920x1080"),
        ("brio", 1920, 1080, 30, "YUYV", "YUYV 1920x1080 runs at 5 fps, not 30; set fps"),
        ("brio", 1920, 1080, 25, "auto", "MJPG 1920x1080 runs at 60, 30, 24, 20, 15, 10, 7.5, 5 fps, not 25"),
        ("ptz4k", 3840, 2160, 30, "YUYV", "YUYV has no 3840x2160"),
    ],
)
def test_refuses_a_mode_the_camera_does_not_list(
    camera: str, w: int, h: int, fps: float, pf: str, message: str
) -> None:
    with pytest.raises(CameraFormatError, match=re.escape(message)):
        choose_mode(formats(camera), w, h, fps, pf, "cam")  # type: ignore[arg-type]
    with pytest.raises(CameraFormatError, match="does not offer MJPG or YUYV .it offers H264"):
        choose_mode([f for f in formats("c930e") if f.fourcc == "H264"], 1920, 1080, 30)


def test_config_section_and_no_device() -> None:
    cfg = parse_config(
        {
            "cameras": {
                "desk": {
                    "type": "v4l2",
                    "device": "Logitech BRIO",
                    "width": 3840,
                    "height": 2160,
                    "fps": 30,
                    "pixel_format": "MJPG",
                }
            }
        }
    )
    cam: object = cfg.cameras["desk"]
    assert isinstance(cam, V4l2CameraConfig)
    assert cam.device == "Logitech BRIO"
    with pytest.raises(ValueError, match=r"\[cameras\.desk\.pixel_format\]"):
        parse_config({"cameras": {"desk": {"type": "v4l2", "pixel_format": "H264"}}})
    assert list_cameras() == []  # no /dev/video* here

    async def run(device: str) -> None:
        src = open_device("camera", "desk", V4l2CameraConfig(device=device, stall_s=1.0))
        await src.start()
        await src.stop()

    with pytest.raises(SourceLost, match="/dev/video9: no such device"):
        asyncio.run(run("/dev/video9"))
    with pytest.raises(SourceLost, match="no camera named 'Logitech BRIO' .cameras present: none"):
        asyncio.run(run("Logitech BRIO"))


def test_camera_listing_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.cli import main
    from drivers.v4l2 import V4l2Device

    name, bus, nodes = parse_list_devices((DATA / "list-devices.txt").read_text())[0]
    info = V4l2Device(name, bus, nodes[0], nodes, formats("brio")).to_json()
    assert info["name"] == "Logitech BRIO" and info["device"] == "/dev/video0"
    assert info["formats"][1]["sizes"][-1] == {
        "width": 4096,
        "height": 2160,
        "fps": [30.0, 24.0, 20.0, 15.0, 10.0, 7.5, 5.0],
    }
    assert main(["cameras"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "no V4L2 camera" in out.err
