"""``roombox bench director`` on a tiny grid: one 26 s meeting at 640x360, 10 frames/s, in one room, rendered into a
temporary cache; the box, the naive and the oracle director scored by ``roombox score``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.bench import SECTIONS, section_function
from appliance.bench.director import SOUND_VERSION, Cell, Plan, Result, evaluate, rows_of

CELL = Cell(0.4, 10.0, 0)
FPS = 10.0


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    root = tmp_path_factory.mktemp("director-cache")
    res = evaluate(Plan((CELL,), lambda seed: 26.0, width=640, height=360, fps=FPS), root)
    return res, root


def test_the_meeting_has_the_cases(result: tuple[Result, Path]) -> None:
    _, root = result
    (meeting,) = [p for p in Path(root).iterdir() if p.is_dir()]
    names = {p.name for p in meeting.iterdir()}
    assert {"room.mp4", "truth.jsonl", "config.toml", f"array-v{SOUND_VERSION}-0.40-10.wav"} <= names
    assert any(n.startswith("faces-") and n.endswith(".jsonl") for n in names)
    rows = [json.loads(line) for line in (meeting / "truth.jsonl").read_text().splitlines()]
    assert len(rows) == 26 * FPS
    assert all(len(r["prints"]) == 1 and not any(p["id"] == "print" for p in r["people"]) for r in rows)
    assert "print" not in {k for r in rows for k in r["talkers"]}  # the print never talks
    counts = [len(r["people"]) for r in rows]
    assert 3 <= counts[-1] <= 8 and counts[0] == counts[-1] - 1  # the latecomer comes in
    ex = [r["exchange"] for r in rows if "exchange" in r]
    assert len(ex) > 5 * FPS and all(e == ex[0] for e in ex)
    assert {k for r in rows if "exchange" in r for k in r["talkers"]} <= set(ex[0])
    # the far end: what its loudspeaker played is there for the box's hearing, when it spoke
    assert any(r["farend"] for r in rows) == ("reference.wav" in names)


def test_oracle_cuts_less_than_naive_in_exchanges(result: tuple[Result, Path]) -> None:
    res, _ = result
    box, naive, oracle = (res.scores[d][CELL.name] for d in ("box", "naive", "oracle"))
    assert oracle.exchange_s > 5.0
    assert oracle.exchange_cuts_per_min < naive.exchange_cuts_per_min
    assert oracle.cuts_per_min < naive.cuts_per_min
    assert oracle.turns == naive.turns == box.turns > 3
    assert oracle.print_close_s == 0.0
    assert box.speech_s == pytest.approx(naive.speech_s, abs=0.01) == pytest.approx(oracle.speech_s, abs=0.01)
    assert box.speech_s > 10.0


def test_roombox_process_gives_the_bench_track(result: tuple[Result, Path]) -> None:
    res, _ = result
    assert res.process_agrees == 1.0
    assert res.process_x_realtime > 0 and res.detector_x_realtime > 0


def test_rows(result: tuple[Result, Path]) -> None:
    res, _ = result
    rows = rows_of(res)
    names = [r[0] for r in rows]
    for d in ("box", "naive", "oracle"):
        assert f"{d} rt60 0.4 snr 10: cuts per minute in A-B-A-B exchanges" in names
        assert any(n.startswith(f"{d} worst cell to rt60 0.6/snr 10: talker in a close shot after 2 s") for n in names)
    assert any(n.startswith("roombox process speed") and u == "x real time" for n, _, u in rows)
    assert all(isinstance(v, float) and isinstance(u, str) for _, v, u in rows)
    assert SECTIONS["director"] == ("appliance.bench.director", "bench_director")
    assert section_function("director").__name__ == "bench_director"
