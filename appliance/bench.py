"""``roombox bench``: the speed figures, measured on the simulated room, printed as a table.

Machines here are shared and noisy, so every figure that matters comes with a peer measured in the same
run and the ratio between the two.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

Row = tuple[str, float, str]


def per_call_ms(fn: Callable[[], object], repeat: int) -> float:
    """Best of three runs of ``repeat`` calls, in milliseconds per call (after one warm-up call)."""
    fn()  # warm up
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - began) / repeat)
    return 1000 * best


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
    cases = [("crop 1080p -> 1280x720 (speaker shot)", src, (600, 300, 640, 360)),
             ("crop 1080p -> 1280x720 (whole room)", src, (0, 0, 1920, 1080)),
             ("crop 4K -> 1280x720 (speaker shot)", src4k, (1200, 600, 1280, 720)),
             ("crop 4K -> 1280x720 (whole room)", src4k, (0, 0, 3840, 2160))]
    return [(name, per_call_ms(lambda im=im, c=c: render_crop(im, c, 1280, 720), repeat), "ms")  # type: ignore[misc]
            for name, im, c in cases]


def run_bench(quick: bool = False) -> int:
    from appliance.perception.doa_bench import bench_doa
    from appliance.perception.faces import bench_faces
    from drivers.simroom.bench import bench_simroom

    repeat = 3 if quick else 10
    sections: list[tuple[str, Callable[[], list[Row]]]] = [
        ("director", lambda: bench_director(repeat * 20)),
        ("framing", lambda: bench_framing(repeat)),
        ("faces", lambda: bench_faces(quick=quick)),
        ("doa", lambda: bench_doa(quick=quick)),
        ("simulated room", lambda: bench_simroom(quick=quick)),
    ]
    print(f"{'section':<16} {'figure':<58} {'value':>10}  unit")
    print("-" * 96)
    for section, fn in sections:
        for name, value, unit in fn():
            print(f"{section:<16} {name:<58} {value:>10.3f}  {unit}", flush=True)
    return 0
