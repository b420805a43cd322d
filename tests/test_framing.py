"""Cutting the director's crop out of the picture."""

from __future__ import annotations

import numpy as np

from appliance.framing import render_crop


def picture() -> np.ndarray:
    img = np.zeros((1080, 1920, 3), np.uint8)
    img[400:500, 1000:1100] = (255, 0, 0)  # a red square
    return img


def test_the_crop_shows_what_was_there_at_the_output_size() -> None:
    out = render_crop(picture(), (900, 300, 320, 180), 1280, 720)
    assert out.shape == (720, 1280, 3)
    red = np.argwhere(out[:, :, 0] > 128)
    # the square starts at (100, 100) of the crop and runs past its bottom edge; scaled by 4
    assert abs(red[:, 1].min() - 400) <= 2 and abs(red[:, 1].max() - 799) <= 2
    assert abs(red[:, 0].min() - 400) <= 2 and red[:, 0].max() == 719


def test_a_crop_at_output_size_is_a_copy_of_the_pixels() -> None:
    img = picture()
    out = render_crop(img, (640, 180, 1280, 720), 1280, 720)
    assert np.array_equal(out, img[180:900, 640:1920])


def test_a_crop_past_the_edge_is_clipped_not_an_error() -> None:
    out = render_crop(picture(), (1800, 1000, 320, 180), 640, 360)
    assert out.shape == (360, 640, 3)


def test_the_whole_room_scaled_down_keeps_the_square() -> None:
    out = render_crop(picture(), (0, 0, 1920, 1080), 640, 360)
    assert out.shape == (360, 640, 3)
    assert out[150, 350, 0] > 200 and out[100, 100, 0] == 0


def test_a_gallery_shot_lays_its_tiles_out_in_one_picture() -> None:
    from appliance.framing import gallery_layout, render_shot
    from appliance.messages import Shot

    image = np.zeros((1080, 1920, 3), np.uint8)
    image[:, :960] = (200, 0, 0)
    image[:, 960:] = (0, 0, 200)
    shot = Shot(0.0, (0, 0, 1920, 1080), "gallery", tiles=((100, 100, 400, 450), (1400, 100, 400, 450)))
    out = render_shot(image, shot, 1280, 720)
    assert out.shape == (720, 1280, 3)
    left, right = gallery_layout(2, 1280, 720)
    assert tuple(out[360, left[0] + 10]) == (200, 0, 0) and tuple(out[360, right[0] + 10]) == (0, 0, 200)
    assert tuple(out[360, 639]) == (24, 24, 24)  # the gap between the tiles
    assert len(gallery_layout(3, 1280, 720)) == 3 and gallery_layout(1, 1280, 720) == [(0, 0, 1280, 720)]
