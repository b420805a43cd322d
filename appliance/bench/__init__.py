"""``roombox bench [SECTION ...]``: figures measured on the simulated room, as a table or JSON lines.

Machines here are shared and noisy, so every figure that matters comes with a peer measured in the same
run and the ratio between the two. Each section is a function ``(quick) -> rows``; a row is
``(figure, value, unit)``. ``--json`` prints each as ``{"section", "figure", "value", "unit"}``.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from collections.abc import Callable, Sequence

Row = tuple[str, float, str]

# section name -> (module, function); each function takes quick: bool and returns rows
SECTIONS: dict[str, tuple[str, str]] = {
    "core": ("appliance.bench.core", "bench_core"),
    "faces": ("appliance.bench.faces", "bench_faces_section"),
    "tracks": ("appliance.bench.faces_meeting", "bench_meeting"),  # the rendered meeting of `faces` alone
    "doa": ("appliance.bench.doa", "bench_doa"),
    "simroom": ("appliance.bench.simroom", "bench_simroom"),
    "listening": ("appliance.bench.listening", "bench_listening"),
    "stream": ("appliance.bench.stream", "bench_stream"),
    "latency": ("appliance.bench.stream", "bench_latency"),
    "meeting": ("appliance.bench.stream", "bench_meeting"),  # the box at 720p30 to a panel viewer and WHIP
    "hearing": ("appliance.bench.hearing", "bench_hearing"),
    "farend": ("appliance.bench.farend", "bench_farend"),
    "panel": ("appliance.bench.panel", "bench_panel"),
    "director": ("appliance.bench.director", "bench_director"),
    "ptz": ("appliance.bench.ptz", "bench_ptz"),  # a PTZ head following the director (appliance.ptz_follow)
}
DEFAULT_SECTIONS = ("core", "faces", "doa", "simroom")


def section_function(name: str) -> Callable[..., list[Row]]:
    if name not in SECTIONS:
        raise ValueError(f"no bench section {name!r}: choose from {', '.join(SECTIONS)}")
    module, fn = SECTIONS[name]
    f: Callable[..., list[Row]] = getattr(importlib.import_module(module), fn)
    return f


def run_bench(sections: Sequence[str] = (), quick: bool = False, as_json: bool = False) -> int:
    """Run the named sections (all default ones when empty) and print their rows as they come."""
    names = list(sections) or list(DEFAULT_SECTIONS)
    functions = [(name, section_function(name)) for name in names]  # unknown names fail before any work
    if not as_json:
        print(f"{'section':<16} {'figure':<58} {'value':>10}  unit")
        print("-" * 96)
    for section, fn in functions:
        for figure, value, unit in fn(quick=quick):
            if as_json:
                v = float(value) if math.isfinite(value) else None
                print(json.dumps({"section": section, "figure": figure, "value": v, "unit": unit}), flush=True)
            else:
                print(f"{section:<16} {figure:<58} {value:>10.3f}  {unit}", flush=True)
    sys.stdout.flush()
    return 0
