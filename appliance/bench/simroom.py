"""Speed figures of the simulated room for ``roombox bench simroom``: ``bench_simroom(quick) -> rows``.

Each row is (figure, value, unit). The frame figures have a peer, a plain copy of the background, so a
noisy machine can be told from a slow renderer.
"""

from __future__ import annotations

import time

from appliance.bench.timing import per_call_ms
from drivers.simroom.audio import render_audio
from drivers.simroom.scenario import builtin_scenario, load_scenario
from drivers.simroom.video import RoomRenderer


def bench_simroom(quick: bool = False) -> list[tuple[str, float, str]]:
    """Frame render time of the default scenario (1080p, 5 people) and audio render time."""
    scn = load_scenario(builtin_scenario("default"))
    renderer = RoomRenderer(scn)
    repeat = 5 if quick else 30
    t = [0.0]

    def frame() -> None:
        t[0] += 1 / scn.camera.fps
        renderer.render_frame(t[0])

    frame_ms = per_call_ms(frame, repeat)
    copy_ms = per_call_ms(renderer.background.copy, repeat)
    rows = [
        (f"render frame {scn.camera.width}x{scn.camera.height}, {len(scn.people)} people", frame_ms, "ms"),
        ("peer: copy of the background picture", copy_ms, "ms"),
        ("ratio frame / copy", frame_ms / max(copy_ms, 1e-6), "x"),
    ]
    seconds = 10.0 if quick else scn.duration_s
    short = scn.model_copy(update={"duration_s": seconds})
    began = time.perf_counter()
    render_audio(short)
    took = time.perf_counter() - began
    rows.append((f"render audio, {seconds:.0f} s of scenario, {len(scn.mic_array.positions)} mics", took, "s"))
    rows.append(("audio render speed (scenario s per wall s)", seconds / max(took, 1e-9), "x"))
    return rows
