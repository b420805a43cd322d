"""JSON as the box reads what others send or keep: no NaN, no infinities, no number that overflows to one
(a reply or a file written back could not carry them)."""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf, which no JSON text can carry back
        raise ValueError(f"{text[:40]} is out of a JSON number's range")
    return value


def loads_strict(text: bytes | str) -> Any:
    """``json.loads`` without NaN, infinities or numbers that overflow to one (``ValueError``); what the
    HTTP API, the panel's socket and the token and PIN files are read with."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
