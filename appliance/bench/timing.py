"""Timing for the benchmarks: best-of-three per-call times."""

from __future__ import annotations

import time
from collections.abc import Callable


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
