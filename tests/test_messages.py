"""One wire form: every message goes to JSON and back unchanged, alone and in its envelope."""

from __future__ import annotations

import json

import pytest

from appliance.messages import (
    AnyMessage,
    CalibrationPoint,
    CalibrationState,
    CameraInfo,
    Decisions,
    DeviceStatus,
    Doa,
    Face,
    Faces,
    MeetingStatus,
    RoomState,
    Shot,
    Stats,
    envelope,
    from_envelope,
)

MESSAGES = [
    Faces(1.5, (Face((10.0, 20.0, 30.0, 40.0), 0.9), Face((100.5, 20.0, 31.0, 41.0), 0.75)), 1920, 1080),
    Doa(2.0, -12.5, True, -31.5, 0.42),
    Doa(2.032, None, False),
    Shot(3.0, (100, 50, 640, 360), "speaker", 12.25, "talker at +12.2 deg", cut=True),
    Shot(3.1, (0, 0, 1920, 1080), "wide"),
    Shot(
        9.0,
        (200, 100, 960, 540),
        "group",
        reason="exchange: -10.0 and +10.0 deg framed together (3 swaps in 20 s)",
        cut=True,
        rule="ping-pong",
        muted=True,
        evidence={"people": [{"track": 1, "azimuth_deg": -10.0, "speech_s": 0.3, "still_s": 0.4}], "pair": [1, 2]},
    ),
    DeviceStatus("camera", "lost", "SourceLost: end of file", 4.0, {"failures": 2}),
    CameraInfo("main", 90.0, 1920, 1080),
    Stats(5.0, 75, 12, 21.5, 250, 150, 3),
    Stats(5.5, 80, 12, 21.5, 260, 155, 3, program="ptz"),
    MeetingStatus("whip", "retrying", "the token was refused (401 Unauthorized)", 7.5),
    RoomState(
        8.0,
        "group",
        True,
        35,
        (MeetingStatus("janus", "connected", "video VP8", 7.0), MeetingStatus("whip", "failed", "401", 6.0)),
        ("main", "door"),
        "main",
        "door",
        ("table",),
        "table",
        "table",
        ("cameras",),
    ),
    RoomState(9.0),
    CalibrationState(2.0),
    CalibrationState(
        5.5,
        True,
        True,
        "2026-11-27T05:00:00Z",
        "main",
        20.25,
        1.0,
        ((-45.0, -25.0), (2.0, 22.0)),
        "right",
        8.0,
        17,
        (CalibrationPoint("left", -45.0, -25.0, 40, 1.5, 9, -33.5),),
        "array turned +20.0 deg",
        True,
        "",
        -6.5,
    ),
    Decisions(
        (
            Shot(3.0, (100, 50, 640, 360), "speaker", 12.25, "talker at +12.2 deg", cut=True),
            Shot(1.0, (0, 0, 1920, 1080), "gallery", tiles=((0, 0, 90, 160), (900, 0, 90, 160)), policy="gallery"),
        )
    ),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_its_wire_form(message: AnyMessage) -> None:
    wire = json.loads(json.dumps(envelope(message)))
    assert wire["kind"] == type(message).KIND
    assert from_envelope(wire) == message
    assert type(message).from_json(wire["data"]) == message


def test_faces_always_carry_the_frame_size() -> None:
    assert Faces(0.0, ()).to_json() == {"t": 0.0, "faces": [], "width": 0, "height": 0}


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ({"kind": "weather", "data": {}}, "unknown message kind 'weather'"),
        ({"kind": "shot", "data": {"t": 1.0}}, "malformed shot message"),
        ({"kind": "shot", "data": {"t": 1.0, "crop": [0, 0, 1, 1], "mode": "orbit"}}, "unknown shot mode 'orbit'"),
        ({"kind": "device", "data": {"name": "camera", "state": "melted"}}, "unknown device state 'melted'"),
    ],
)
def test_a_malformed_message_is_named(wire: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        from_envelope(wire)
