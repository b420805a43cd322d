"""The simulated room's picture: a pinhole compositor of a drawn room and the people in it.

The room (walls, floor, ceiling, window, whiteboard, table) is drawn once. Each person is a torso in their
shirt colour and a head picture (:mod:`drivers.simroom.faces`) placed where the camera model projects the
head; heads sway gently and deterministically with time. Patches are made once at the person's distance,
so a frame costs a copy of the background and a few small alpha blends.

A person's ``moves`` (:class:`drivers.simroom.scenario.Move`) lean the head (the shoulders follow by
half), turn it away (the back of the head is drawn) or hide the face behind a hand;
:meth:`RoomRenderer.face_states` says which faces the camera can see.

A visible face's mouth opens with the person's own speech (:meth:`RoomRenderer.mouth_open`: the loudness of
their dry speech, syllable by syllable), drawn as a dark opening between the lips: what a camera sees of a
talker and what a lip-motion cue reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from common.geometry import PinholeCamera
from drivers.simroom.faces import HeadPatch, back_of_head, hand_over, head_patch
from drivers.simroom.scenario import Person, Scenario, Vec3

FACE_WIDTH_M = 0.16
SHOULDER_WIDTH_M = 0.44
TABLE_HEIGHT_M = 0.74
MOUTH_RATE_HZ = 100  # the mouth's opening is sampled at this rate from the speech's loudness
MOUTH_OPEN_MAX = 0.09  # the opening at full voice, a share of the face box's height
MOUTH_DB = (-40.0, -20.0)  # the speech loudness (dBFS over 40 ms) at which the mouth starts to open / is open


@dataclass(frozen=True)
class _Sprite:
    person: Person
    head_cam: Vec3  # camera frame, at rest
    head: HeadPatch
    anchor: tuple[float, float]  # face-box centre in the head patch
    body_rgb: np.ndarray
    body_alpha: np.ndarray
    body_xy: tuple[int, int]
    sway: tuple[float, float, float, float]  # phases and frequencies
    back: HeadPatch | None  # the head turned away (people who turn)
    hand: tuple[np.ndarray, np.ndarray, tuple[int, int]] | None  # over the face (people who hide it)


def camera_of(scn: Scenario) -> PinholeCamera:
    return PinholeCamera(scn.camera.width, scn.camera.height, scn.camera.hfov_deg)


def table_rect(scn: Scenario) -> tuple[float, float, float, float]:
    """The table (x0, y0, x1, y1) in the room: inside the seats, 0.45 m from each."""
    if not scn.people:
        w, d, _ = scn.room.size_m
        return (w / 2 - 0.6, d / 2 - 1.0, w / 2 + 0.6, d / 2 + 1.0)
    xs = [p.seat_m[0] for p in scn.people]
    ys = [p.seat_m[1] for p in scn.people]
    x0, x1 = min(xs) + 0.45, max(xs) - 0.45
    y0, y1 = min(ys) + 0.2, max(ys) - 0.45
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    if x1 - x0 < 0.9:
        x0, x1 = cx - 0.45, cx + 0.45
    if y1 - y0 < 1.2:
        y0, y1 = cy - 0.6, cy + 0.6
    return (x0, y0, x1, y1)


class RoomRenderer:
    """Renders the scenario's camera picture at any time ``t`` (seconds)."""

    def __init__(self, scn: Scenario) -> None:
        self.scn = scn
        self.cam = camera_of(scn)
        self.background = self._draw_room()
        sprites = [self._sprite(i, p) for i, p in enumerate(scn.people)]
        self._sprites = sorted(sprites, key=lambda s: -s.head_cam[2])  # far to near

    # -- geometry -------------------------------------------------------------------------------------
    def _project_room(self, p: Vec3) -> tuple[float, float]:
        x, y, z = self.scn.to_camera(p)
        return self.cam.project(x, y, max(z, 0.05))

    def _head_offset(self, s: _Sprite, t: float) -> tuple[float, float]:
        """The head's offset from rest in the camera frame (x right, y up; metres): sway plus leans."""
        ph1, ph2, f1, f2 = s.sway
        lx, lz = self.scn.lean_at(s.person, t) if s.person.moves else (0.0, 0.0)
        return (
            0.015 * math.sin(2 * math.pi * f1 * t + ph1) + lx,
            0.006 * math.sin(2 * math.pi * f2 * t + ph2) + lz,
        )

    def _head_origin(self, s: _Sprite, t: float) -> tuple[int, int]:
        dx, dy = self._head_offset(s, t)
        x, y, z = s.head_cam
        u, v = self.cam.project(x + dx, y + dy, z)
        return round(u - s.anchor[0]), round(v - s.anchor[1])

    def face_boxes(self, t: float) -> dict[str, tuple[float, float, float, float]]:
        """Ground-truth face box (x, y, w, h) of each person in source pixels at time ``t``."""
        out = {}
        for s in self._sprites:
            x0, y0 = self._head_origin(s, t)
            bx, by, bw, bh = s.head.face_box
            out[s.person.id] = (x0 + bx, y0 + by, bw, bh)
        return out

    @cached_property
    def _mouths(self) -> dict[str, np.ndarray]:
        """Each person's mouth opening (0..1) at ``MOUTH_RATE_HZ`` from the loudness of their dry speech."""
        from drivers.simroom.audio import dry_speech

        out = {}
        rate = self.scn.mic_array.sample_rate
        hop, win = rate // MOUTH_RATE_HZ, rate // 25
        for p in self.scn.people:
            if not p.utterances:
                continue
            x = dry_speech(self.scn, p).astype(np.float64)
            n = len(x) // hop
            power = np.convolve(x**2, np.ones(win) / win, mode="same")[: n * hop : hop]
            db = 10 * np.log10(power + 1e-12)
            lo, hi = MOUTH_DB
            out[p.id] = np.clip((db - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        return out

    def mouth_open(self, pid: str, t: float) -> float:
        """How far person ``pid``'s mouth is open at ``t`` (0 closed .. 1 wide, as when talking loudly)."""
        env = self._mouths.get(pid)
        if env is None or env.size == 0:
            return 0.0
        k = round(t * MOUTH_RATE_HZ)
        return float(env[k]) if 0 <= k < env.size else 0.0

    @staticmethod
    def _draw_mouth(frame: np.ndarray, box: tuple[float, float, float, float], opening: float) -> None:
        """A dark opening between the lips, ``opening`` (0..1) of ``MOUTH_OPEN_MAX`` high, on the face box."""
        if opening <= 0.02:
            return
        x, y, w, h = box
        cx, cy = x + 0.5 * w, y + 0.8 * h
        ax, ay = 0.17 * w, max(0.5, opening * MOUTH_OPEN_MAX * h / 2)
        x0, y0 = max(0, math.floor(cx - ax - 1)), max(0, math.floor(cy - ay - 1))
        x1, y1 = min(frame.shape[1], math.ceil(cx + ax + 2)), min(frame.shape[0], math.ceil(cy + ay + 2))
        if x0 >= x1 or y0 >= y1:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        r = ((xx + 0.5 - cx) / ax) ** 2 + ((yy + 0.5 - cy) / ay) ** 2
        a = np.clip(1.5 - r, 0.0, 1.0)[..., None] * 0.85  # soft edge
        dst = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = (dst * (1 - a) + np.array([45.0, 18.0, 18.0], np.float32) * a).astype(frame.dtype)

    def face_states(self, t: float) -> dict[str, str]:
        """Each person's face at time ``t``: ``visible``, ``turned`` (away) or ``hidden`` (behind a hand)."""
        return {s.person.id: self.scn.face_state(s.person, t) for s in self._sprites}

    # -- drawing --------------------------------------------------------------------------------------
    def _poly(self, img: np.ndarray, pts: list[Vec3], colour: tuple[int, int, int]) -> None:
        uv = np.array([self._project_room(p) for p in pts], np.float64)
        uv = np.clip(uv, -20000, 20000)
        cv2.fillPoly(img, [np.round(uv * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)

    def _draw_room(self) -> np.ndarray:
        w, d, h = self.scn.room.size_m
        cy = self.scn.camera.position_m[1] + 0.06  # a near plane just in front of the camera
        img = np.zeros((self.cam.height, self.cam.width, 3), np.uint8)
        self._poly(img, [(0, cy, h), (w, cy, h), (w, d, h), (0, d, h)], (225, 225, 220))  # ceiling
        self._poly(img, [(0, cy, 0), (w, cy, 0), (w, d, 0), (0, d, 0)], (95, 90, 100))  # floor
        self._poly(img, [(0, cy, 0), (0, d, 0), (0, d, h), (0, cy, h)], (200, 195, 180))  # left wall
        self._poly(img, [(w, cy, 0), (w, d, 0), (w, d, h), (w, cy, h)], (205, 200, 185))  # right wall
        self._poly(img, [(0, d, 0), (w, d, 0), (w, d, h), (0, d, h)], (185, 190, 195))  # back wall
        y0, y1 = max(cy + 0.8, 1.0), min(d - 0.8, 4.5)
        self._poly(img, [(0, y0, 0.9), (0, y1, 0.9), (0, y1, 2.3), (0, y0, 2.3)], (170, 205, 235))  # window
        for yy in np.linspace(y0, y1, 4):
            self._poly(
                img,
                [(0, yy - 0.03, 0.9), (0, yy + 0.03, 0.9), (0, yy + 0.03, 2.3), (0, yy - 0.03, 2.3)],
                (240, 240, 240),
            )
        self._poly(
            img,
            [(w / 2 - 1.0, d, 1.0), (w / 2 + 1.0, d, 1.0), (w / 2 + 1.0, d, 2.0), (w / 2 - 1.0, d, 2.0)],
            (245, 245, 248),
        )  # whiteboard
        self._poly(
            img, [(w - 0.3, d, 0.0), (w - 1.2, d, 0.0), (w - 1.2, d, 2.1), (w - 0.3, d, 2.1)], (140, 100, 70)
        )  # door
        tx0, ty0, tx1, ty1 = table_rect(self.scn)
        th = TABLE_HEIGHT_M
        self._poly(
            img, [(tx0, ty0, th - 0.05), (tx1, ty0, th - 0.05), (tx1, ty0, th), (tx0, ty0, th)], (90, 60, 40)
        )  # table edge facing the camera
        self._poly(img, [(tx0, ty0, th), (tx1, ty0, th), (tx1, ty1, th), (tx0, ty1, th)], (150, 110, 75))
        rng = np.random.default_rng(self.scn.room.seed)
        grain = cv2.GaussianBlur(rng.normal(0, 6, img.shape[:2]).astype(np.float32), (0, 0), 1.2)
        shade = np.linspace(1.04, 0.92, img.shape[0], dtype=np.float32)[:, None]
        out = img.astype(np.float32) * shade[..., None] + grain[..., None] * 1.5
        return np.clip(out, 0, 255).astype(np.uint8)

    def _sprite(self, index: int, p: Person) -> _Sprite:
        head_cam = self.scn.to_camera(self.scn.head_room(p))
        x, y, z = head_cam
        f = self.cam.focal_px
        face_w = max(4, round(f * FACE_WIDTH_M / z))
        head = head_patch(p.face, face_w)
        bx, by, bw, bh = head.face_box
        anchor = (bx + bw / 2, by + bh / 2)
        # torso: shoulders 0.16 m below the head centre, down to the table top
        sw = f * SHOULDER_WIDTH_M / z
        top = self.cam.project(x, y - 0.16, z)[1]
        bottom = self.cam.project(x, TABLE_HEIGHT_M - self.scn.camera.position_m[2], z)[1]
        bottom = max(bottom, top + sw * 0.6)
        bw_px, bh_px = round(sw * 1.05) + 4, round(bottom - top + sw * 0.15) + 2
        alpha = np.zeros((bh_px, bw_px), np.float32)
        c = bw_px / 2
        cap = 0.22 * sw  # rounded shoulders
        cv2.ellipse(
            alpha,
            (round(c * 16), round(cap * 16)),
            (round(sw / 2 * 16), round(cap * 16)),
            0,
            180,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
            shift=4,
        )
        alpha[round(cap) :, round(c - sw / 2) : round(c + sw / 2)] = 1.0
        shirt = np.array(p.shirt_rgb, np.float32)
        light = np.linspace(1.1, 0.85, bw_px, dtype=np.float32)[None, :, None]
        rgb = np.clip(shirt * light * np.ones((bh_px, 1, 1), np.float32), 0, 255)
        u, _ = self.cam.project(x, y, z)
        body_xy = (round(u - c), round(top - cap * 0.5))
        rng = np.random.default_rng([self.scn.room.seed, index])
        sway = (
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(0.12, 0.3)),
            float(rng.uniform(0.2, 0.45)),
        )
        kinds = {m.kind for m in p.moves}
        back = back_of_head(p.face, head) if "turn" in kinds else None
        hand = hand_over(p.face, head) if "hide" in kinds else None
        return _Sprite(p, head_cam, head, anchor, rgb * alpha[..., None], alpha[..., None], body_xy, sway, back, hand)

    @staticmethod
    def _blit(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
        h, w = alpha.shape[:2]
        H, W = frame.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x0 >= x1 or y0 >= y1:
            return
        a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
        dst = frame[y0:y1, x0:x1]
        out = dst * (1.0 - a) + rgb[y0 - y : y1 - y, x0 - x : x1 - x]
        np.clip(out, 0, 255, out=out)
        dst[:] = out

    def render_frame(self, t: float) -> np.ndarray:
        """The RGB uint8 picture (height, width, 3) at scenario time ``t``."""
        frame = self.background.copy()
        for s in self._sprites:
            bx, by = s.body_xy
            if s.person.moves:  # the shoulders follow a lean by half
                lx, _ = self.scn.lean_at(s.person, t)
                bx += round(0.5 * self.cam.focal_px * lx / s.head_cam[2])
            self._blit(frame, s.body_rgb, s.body_alpha, bx, by)
            x0, y0 = self._head_origin(s, t)
            state = self.scn.face_state(s.person, t) if s.person.moves else "visible"
            head = s.back if state == "turned" and s.back is not None else s.head
            self._blit(frame, head.rgb, head.alpha, x0, y0)
            if state == "visible":
                fx, fy, fw, fh = head.face_box
                self._draw_mouth(frame, (x0 + fx, y0 + fy, fw, fh), self.mouth_open(s.person.id, t))
            if state == "hidden" and s.hand is not None:
                rgb, alpha, (hx, hy) = s.hand
                self._blit(frame, rgb, alpha, x0 + hx, y0 + hy)
        return frame
