"""Head pictures for the simulated room, made from the photos that ship with scikit-image.

``astronaut`` is the face of ``skimage.data.astronaut()``; ``lfw:N`` is face N of the 200 tight 25x25
grey crops in scikit-image's ``lfw_subset.npy``, enlarged, sharpened, tinted to a skin tone and set on a
drawn head with hair and a neck so that a face detector sees a whole head.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import skimage.data

# The astronaut's face (brows to chin, cheek to cheek) and her head with hair, in photo pixels.
_ASTRONAUT_FACE = (175, 75, 100, 110)
_ASTRONAUT_HEAD_CENTRE = (227, 112)
_ASTRONAUT_HEAD_AXES = (78, 100)

SKIN_TONES = ((232, 190, 160), (214, 165, 128), (190, 136, 100), (150, 100, 70), (110, 72, 50))
HAIR_COLOURS = ((40, 30, 25), (90, 60, 35), (25, 22, 20), (150, 120, 80), (120, 120, 120))


@dataclass(frozen=True)
class HeadPatch:
    """A head picture with its alpha (premultiplied RGB, float32) and the face box inside it.

    ``face_box`` is (x, y, w, h) in patch pixels: the face proper, brows to chin, as a detector boxes it.
    """

    rgb: np.ndarray  # (h, w, 3) float32, premultiplied by alpha, 0..255
    alpha: np.ndarray  # (h, w, 1) float32, 0..1
    face_box: tuple[float, float, float, float]


@lru_cache(maxsize=1)
def _lfw() -> np.ndarray:
    faces: np.ndarray = np.load(os.path.join(skimage.data.data_dir, "lfw_subset.npy"))
    return faces


@lru_cache(maxsize=1)
def _astronaut() -> np.ndarray:
    photo: np.ndarray = skimage.data.astronaut()  # type: ignore[no-untyped-call]
    return photo


def _soft_ellipse(h: int, w: int, cx: float, cy: float, ax: float, ay: float, feather: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - cx) / max(ax, 1e-3)) ** 2 + ((yy - cy) / max(ay, 1e-3)) ** 2)
    edge = feather / max(min(ax, ay), 1e-3)
    out: np.ndarray = np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)
    return out


def _sharpen(img: np.ndarray, amount: float = 0.8, sigma: float = 1.5) -> np.ndarray:
    blur = cv2.GaussianBlur(img, (0, 0), sigma)
    return cv2.addWeighted(img, 1.0 + amount, blur, -amount, 0)


def _astronaut_head(face_w: int) -> HeadPatch:
    s = face_w / _ASTRONAUT_FACE[2]
    (hx, hy), (ax, ay) = _ASTRONAUT_HEAD_CENTRE, _ASTRONAUT_HEAD_AXES
    x0, y0 = hx - ax - 4, hy - ay - 4
    crop = _astronaut()[y0 : hy + ay + 4, x0 : hx + ax + 4].astype(np.float32)
    w, h = max(4, round(crop.shape[1] * s)), max(4, round(crop.shape[0] * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    rgb = np.clip(cv2.resize(crop, (w, h), interpolation=interp), 0, 255)
    alpha = _soft_ellipse(h, w, (hx - x0) * s, (hy - y0) * s, ax * s, ay * s, max(1.0, 2.0 * s))
    fx, fy, fw, fh = _ASTRONAUT_FACE
    box = ((fx - x0) * s, (fy - y0) * s, fw * s, fh * s)
    return HeadPatch(rgb * alpha[..., None], alpha[..., None], box)


def _lfw_head(index: int, face_w: int) -> HeadPatch:
    """A drawn head (hair, skin, neck) with LFW face ``index`` set in, the face ``face_w`` px wide."""
    skin = np.array(SKIN_TONES[index % len(SKIN_TONES)], np.float32)
    hair = np.array(HAIR_COLOURS[(index // len(SKIN_TONES)) % len(HAIR_COLOURS)], np.float32)
    f = float(face_w)
    w, h = round(1.5 * f), round(1.75 * f)
    cx, cy = w / 2.0, 0.62 * f + 0.12 * f  # face centre
    feather = max(1.0, 0.03 * f)
    hair_a = _soft_ellipse(h, w, cx, cy - 0.12 * f, 0.64 * f, 0.64 * f, feather)
    head_a = _soft_ellipse(h, w, cx, cy + 0.03 * f, 0.53 * f, 0.62 * f, feather)
    neck_a = np.zeros((h, w), np.float32)
    neck_a[round(cy + 0.3 * f) :, round(cx - 0.27 * f) : round(cx + 0.27 * f)] = 1.0
    img = np.empty((h, w, 3), np.float32)
    img[:] = hair
    img = img * (1 - neck_a[..., None]) + skin * 0.85 * neck_a[..., None]
    img = img * (1 - head_a[..., None]) + skin * head_a[..., None]
    # the face: grey photo, contrast-normalised, sharpened, tinted by the skin tone
    g = _lfw()[index].astype(np.float32)
    g = (g - g[5:20, 5:20].mean()) / (g[5:20, 5:20].std() + 1e-3)
    g = np.clip(0.82 + 0.22 * g, 0.15, 1.35)
    fw = round(f)
    g = _sharpen(cv2.resize(g, (fw, fw), interpolation=cv2.INTER_CUBIC), sigma=max(0.7, f / 60))
    tile = np.clip(g[..., None] * skin, 0, 255)
    fx0, fy0 = round(cx - f / 2), round(cy - f / 2)
    face_a = _soft_ellipse(fw, fw, fw / 2, fw / 2 + 0.02 * f, 0.47 * f, 0.53 * f, 0.07 * f)[..., None]
    region = img[fy0 : fy0 + fw, fx0 : fx0 + fw]
    img[fy0 : fy0 + fw, fx0 : fx0 + fw] = region * (1 - face_a) + tile * face_a
    alpha = np.maximum(np.maximum(hair_a, head_a), neck_a)[..., None]
    return HeadPatch(np.clip(img, 0, 255) * alpha, alpha, (float(fx0), float(fy0), float(fw), float(fw)))


def head_patch(face: str, face_w: int) -> HeadPatch:
    """The head picture for face source ``face`` (``astronaut`` or ``lfw:N``), face ``face_w`` px wide."""
    face_w = max(4, int(face_w))
    if face == "astronaut":
        return _astronaut_head(face_w)
    if face.startswith("lfw:"):
        index = int(face[4:])
        if not 0 <= index < len(_lfw()):
            raise ValueError(f"no lfw face {index}")
        return _lfw_head(index, face_w)
    raise ValueError(f"unknown face source {face!r}")


def _hair_colour(face: str) -> np.ndarray:
    if face.startswith("lfw:"):
        index = int(face[4:])
        return np.array(HAIR_COLOURS[(index // len(SKIN_TONES)) % len(HAIR_COLOURS)], np.float32)
    return np.array((95, 62, 40), np.float32)  # the astronaut's


def back_of_head(face: str, head: HeadPatch) -> HeadPatch:
    """The same head turned away from the camera: its outline filled with hair (a little texture, lit from
    above), the face box unchanged (where the face would be)."""
    h, w = head.alpha.shape[:2]
    hair = _hair_colour(face)
    rng = np.random.default_rng(h * 7919 + w)
    grain = cv2.GaussianBlur(rng.normal(0.0, 10.0, (h, w)).astype(np.float32), (0, 0), max(0.6, w / 60))
    light = np.linspace(1.15, 0.8, h, dtype=np.float32)[:, None]
    rgb = np.clip(hair * light[..., None] + grain[..., None], 0, 255)
    return HeadPatch(rgb * head.alpha, head.alpha, head.face_box)


def hand_over(face: str, head: HeadPatch) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A hand in front of the face: (premultiplied RGB, alpha, (x, y) in head-patch pixels), covering the
    eyes, nose and mouth, in a skin tone of the person's."""
    fx, fy, fw, fh = head.face_box
    w, h = max(4, round(0.95 * fw)), max(4, round(0.95 * fh))
    index = int(face[4:]) if face.startswith("lfw:") else 0
    skin = np.array(SKIN_TONES[index % len(SKIN_TONES)], np.float32)
    alpha = _soft_ellipse(h, w, w / 2, h / 2, 0.5 * w, 0.5 * h, max(1.0, 0.04 * w))
    # fingers: darker lines across the palm
    yy = np.arange(h, dtype=np.float32)[:, None]
    fingers = 1.0 - 0.18 * (np.cos(yy / max(h, 1) * 4 * 2 * np.pi) > 0.85)
    shade = np.linspace(1.05, 0.9, w, dtype=np.float32)[None, :]
    rgb = np.clip(skin * (fingers * shade)[..., None], 0, 255) * alpha[..., None]
    return rgb, alpha[..., None], (round(fx + fw / 2 - w / 2), round(fy + fh / 2 - h / 2))
