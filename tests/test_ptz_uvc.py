"""UVC pan/tilt/zoom: the V4L2 control encoding and ioctl numbers, and the kernel's answers where there is
no camera (this machine has none)."""

from __future__ import annotations

import asyncio
import ctypes

import pytest

from drivers.ptz.base import PtzError
from drivers.ptz.uvc import (
    V4L2_CID_PAN_ABSOLUTE,
    V4L2_CID_TILT_ABSOLUTE,
    V4L2_CID_ZOOM_ABSOLUTE,
    VIDIOC_G_CTRL,
    VIDIOC_QUERYCTRL,
    VIDIOC_S_CTRL,
    ControlRange,
    UvcPtzConfig,
    decode_angle,
    decode_zoom,
    encode_angle,
    encode_zoom,
    v4l2_control,
    v4l2_queryctrl,
)
from drivers.registry import open_device

# the ranges a Logitech PTZ Pro 2 reports (v4l2-ctl --list-ctrls): pan/tilt in arc seconds, zoom 100..1000
PAN = ControlRange(-612000, 612000, 3600, 0)
TILT = ControlRange(-108000, 108000, 3600, 0)
ZOOM = ControlRange(100, 1000, 1, 100)


def test_kernel_numbers() -> None:
    # <linux/videodev2.h> / <linux/v4l2-controls.h>
    assert (V4L2_CID_PAN_ABSOLUTE, V4L2_CID_TILT_ABSOLUTE, V4L2_CID_ZOOM_ABSOLUTE) == (0x9A0908, 0x9A0909, 0x9A090D)
    assert ctypes.sizeof(v4l2_control) == 8 and ctypes.sizeof(v4l2_queryctrl) == 68
    assert (VIDIOC_G_CTRL, VIDIOC_S_CTRL, VIDIOC_QUERYCTRL) == (0xC008561B, 0xC008561C, 0xC0445624)
    assert bytes(v4l2_control(id=V4L2_CID_PAN_ABSOLUTE, value=-3600)) == bytes.fromhex("08099a00f0f1ffff")


def test_control_encoding() -> None:
    assert encode_angle(10.0, PAN) == 36000
    assert encode_angle(10.4, PAN) == 36000 and encode_angle(10.6, PAN) == 39600  # snapped to 1-degree steps
    assert encode_angle(-200.0, PAN) == -612000 and encode_angle(45.0, TILT) == 108000  # inside the range
    assert decode_angle(-36000) == -10.0
    assert (encode_zoom(0.0, ZOOM), encode_zoom(0.5, ZOOM), encode_zoom(1.0, ZOOM), encode_zoom(7.0, ZOOM)) == (
        100,
        550,
        1000,
        1000,
    )
    assert decode_zoom(550, ZOOM) == 0.5
    odd = ControlRange(1, 10, 3)  # grid 1, 4, 7, 10
    assert [odd.snap(v) for v in (0, 2, 3, 6, 11)] == [1, 1, 4, 7, 10]


def test_no_camera_gives_a_clear_error() -> None:
    async def position(device: str) -> None:
        ptz = open_device("ptz", "head", UvcPtzConfig(device=device))
        try:
            await ptz.position()
        finally:
            await ptz.close()

    with pytest.raises(PtzError, match=r"\[ptz.head\] /dev/null: not a V4L2 device"):
        asyncio.run(position("/dev/null"))
    with pytest.raises(PtzError, match="cannot open: /dev/video7: no such device"):
        asyncio.run(position("/dev/video7"))
