"""Cut the director's crop out of the source picture at the output size (the digital pan/tilt/zoom)."""

from __future__ import annotations

import cv2
import numpy as np


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
