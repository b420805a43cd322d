"""The per-frame step shared by the live box and the offline run: DOA intake, detection schedule, modes."""

from __future__ import annotations

import pytest

from appliance.config import Config, DetectorConfig
from appliance.messages import Doa, Face, Faces
from appliance.step import FrameStep

FACES = Faces(0.0, (Face((900.0, 450.0, 60.0, 60.0), 0.9), Face((300.0, 450.0, 60.0, 60.0), 0.9)), 1920, 1080)


def test_a_frame_takes_the_doa_blocks_that_ended_by_its_time_and_no_later_ones() -> None:
    step = FrameStep(Config())
    step.add_doas([Doa(0.032, 0.0, True), Doa(0.064, 0.0, True), Doa(0.2, 0.0, True)])
    step.step(0.0, 1920, 1080, FACES)
    assert len(step._doas) == 3  # none has ended by t = 0
    step.step(0.1, 1920, 1080, None)
    assert [d.t for d in step._doas] == [0.2]  # the block ending at 0.2 waits for a later frame
    step.step(0.2, 1920, 1080, None)
    assert not step._doas


def test_detections_fall_due_every_interval_of_frame_time() -> None:
    step = FrameStep(Config(detector=DetectorConfig(interval_s=0.4)))
    due = [t / 15 for t in range(30) if step.detection_due(t / 15)]
    assert due == pytest.approx([0.0, 6 / 15, 12 / 15, 18 / 15, 24 / 15])
    step.restart()  # a restarted camera is searched at once
    assert step.detection_due(25 / 15)


def test_a_mode_chosen_on_the_panel_outlives_a_camera_restart() -> None:
    step = FrameStep(Config())
    step.set_mode("gallery", 0.0)  # before the first picture: kept for the director to come
    assert step.step(0.0, 1920, 1080, FACES).mode == "gallery"
    step.restart()
    shot = step.step(1.0, 1280, 720, FACES)
    assert shot.mode == "gallery" and len(shot.tiles) == 2
    step.manual_view(0.0, 0.0, 2.0, 1.1)
    assert step.step(1.2, 1280, 720, None).mode == "manual" and step.policy == "manual"
    step.restart()  # manual framing does not survive a restart: the chosen automatic mode does
    assert step.step(2.0, 1280, 720, FACES).mode == "gallery"
    with pytest.raises(ValueError, match="unknown mode"):
        step.set_mode("orbit", 2.1)  # type: ignore[arg-type]
