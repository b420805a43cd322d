"""Cut the director's crop out of the source picture at the output size (the digital pan/tilt/zoom), or lay
out a gallery shot's tiles in one picture."""

from __future__ import annotations

import cv2
import numpy as np

from appliance.messages import Shot

GALLERY_GAP_PX = 4
GALLERY_BACKGROUND = 24


def render_crop(image: np.ndarray, crop: tuple[int, int, int, int], out_w: int, out_h: int) -> np.ndarray:
    """The crop (x, y, w, h) of ``image`` scaled to ``out_w`` x ``out_h``; the crop is clipped to the picture."""
    ih, iw = image.shape[:2]
    x, y, w, h = crop
    x0, y0 = max(0, min(x, iw - 1)), max(0, min(y, ih - 1))
    x1, y1 = max(x0 + 1, min(x + w, iw)), max(y0 + 1, min(y + h, ih))
    part = image[y0:y1, x0:x1]
    if part.shape[1] == out_w and part.shape[0] == out_h:
        return np.ascontiguousarray(part)
    # area averaging only where linear would alias (shrinking by 2 or more); it is several times slower
    strong = part.shape[1] >= 2 * out_w
    return cv2.resize(part, (out_w, out_h), interpolation=cv2.INTER_AREA if strong else cv2.INTER_LINEAR)


def gallery_layout(n: int, out_w: int, out_h: int) -> list[tuple[int, int, int, int]]:
    """Where each of ``n`` tiles goes in an ``out_w`` x ``out_h`` picture: one fills it, two side by side,
    three or four in a 2 x 2 grid (three leave the last quarter empty)."""
    g = GALLERY_GAP_PX
    if n <= 1:
        return [(0, 0, out_w, out_h)]
    half_w, half_h = (out_w - g) // 2, (out_h - g) // 2
    if n == 2:
        return [(0, 0, half_w, out_h), (out_w - half_w, 0, half_w, out_h)]
    cells = [(0, 0), (out_w - half_w, 0), (0, out_h - half_h), (out_w - half_w, out_h - half_h)]
    return [(x, y, half_w, half_h) for x, y in cells[:n]]


def render_shot(image: np.ndarray, shot: Shot, out_w: int, out_h: int) -> np.ndarray:
    """The picture for ``shot`` at ``out_w`` x ``out_h``: its crop, or its gallery tiles laid out."""
    if not shot.tiles:
        return render_crop(image, shot.crop, out_w, out_h)
    out = np.full((out_h, out_w, 3), GALLERY_BACKGROUND, np.uint8)
    for crop, (x, y, w, h) in zip(shot.tiles, gallery_layout(len(shot.tiles), out_w, out_h), strict=True):
        out[y : y + h, x : x + w] = render_crop(image, crop, w, h)
    return out


CARD_BACKGROUND = (28, 30, 34)


def render_card(lines: tuple[str, ...], out_w: int, out_h: int) -> np.ndarray:
    """A plain card at ``out_w`` x ``out_h`` with ``lines`` of text centred (the first one larger): what goes
    out in the camera's place while it is lost, so the far end sees a fault, not a frozen room."""
    out = np.full((out_h, out_w, 3), CARD_BACKGROUND, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [out_h / 360 * (1.1 if i == 0 else 0.6) for i in range(len(lines))]
    heights = [int(30 * k) + 10 for k in sizes]
    y = (out_h - sum(heights)) // 2
    for text, k, h in zip(lines, sizes, heights, strict=True):
        thick = max(1, round(2 * k))
        (w, _), _ = cv2.getTextSize(text, font, k, thick)
        y += h
        cv2.putText(out, text, (max(0, (out_w - w) // 2), y), font, k, (235, 235, 235), thick, cv2.LINE_AA)
    return out
