"""Figures of the pure core for ``roombox bench core``: the director's step and the crop."""

from __future__ import annotations

import numpy as np

from appliance.bench.timing import per_call_ms

Row = tuple[str, float, str]


def bench_director(repeat: int) -> list[Row]:
    from appliance.config import DirectorConfig
    from appliance.director import Director
    from appliance.messages import Doa, Face, Faces
    from common.geometry import PinholeCamera

    cam = PinholeCamera(1920, 1080, 90.0)
    faces = Faces(0.0, tuple(Face((cam.column_of_azimuth(a) - 30, 450, 60, 60), 0.9) for a in (-30, -10, 10, 30)))
    d = Director(cam, DirectorConfig())
    t = [0.0]

    def step() -> None:
        t[0] += 1 / 15
        d.step(faces, [Doa(t[0], 10.0, True)], t[0])

    return [("director step (4 faces, 1 DOA block)", per_call_ms(step, repeat), "ms")]


def bench_framing(repeat: int) -> list[Row]:
    from appliance.framing import render_crop

    rng = np.random.default_rng(0)
    src = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    src4k = rng.integers(0, 255, (2160, 3840, 3), dtype=np.uint8)
    cases = [
        ("crop 1080p -> 1280x720 (speaker shot)", src, (600, 300, 640, 360)),
        ("crop 1080p -> 1280x720 (whole room)", src, (0, 0, 1920, 1080)),
        ("crop 4K -> 1280x720 (speaker shot)", src4k, (1200, 600, 1280, 720)),
        ("crop 4K -> 1280x720 (whole room)", src4k, (0, 0, 3840, 2160)),
    ]
    return [
        (name, per_call_ms(lambda im=im, c=c: render_crop(im, c, 1280, 720), repeat), "ms")  # type: ignore[misc]
        for name, im, c in cases
    ]


def bench_core(quick: bool = False) -> list[Row]:
    repeat = 3 if quick else 10
    return bench_director(repeat * 20) + bench_framing(repeat)
