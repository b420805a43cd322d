"""The command-line contract end to end on a rendered simulated room: render -> doa / faces / process -> score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "drivers" / "simroom" / "scenarios" / "short.toml"


def roombox(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    if check and p.returncode != 0:
        raise AssertionError(f"roombox {args[0]} failed ({p.returncode}):\n{p.stderr}")
    return p


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("room")
    roombox("render", "--scenario", str(SHORT), "--out", str(out))
    return out


@pytest.fixture(scope="module")
def truth(room: Path) -> list[dict]:
    return lines((room / "truth.jsonl").read_text())


def test_render_writes_a_recording(room: Path, truth: list[dict]) -> None:
    for name in ("room.mp4", "array.wav", "config.toml", "truth.jsonl"):
        assert (room / name).stat().st_size > 0, name
    assert any(r["talkers"] for r in truth)


def test_doa_points_at_the_talker(room: Path, truth: list[dict]) -> None:
    recs = lines(roombox("doa", "--audio", str(room / "array.wav"), "--config", str(room / "config.toml")).stdout)
    assert recs and all(set(r) >= {"t", "azimuth_deg", "speech"} for r in recs)
    tt = np.array([r["t"] for r in truth])
    errors = []
    for r in recs:
        g = truth[int(np.argmin(np.abs(tt - r["t"])))]
        if r["speech"] and r["azimuth_deg"] is not None and len(g["talkers"]) == 1:
            talker = next(p for p in g["people"] if p["id"] == g["talkers"][0])
            errors.append(abs(r["azimuth_deg"] - talker["azimuth_deg"]))
    assert len(errors) > 50
    assert float(np.median(errors)) < 5.0


def test_faces_finds_the_people_in_the_video(room: Path, truth: list[dict]) -> None:
    recs = lines(roombox("faces", "--video", str(room / "room.mp4"), "--every", "30").stdout)
    assert len(recs) >= 3
    tt = np.array([r["t"] for r in truth])
    found = total = 0
    for r in recs:
        g = truth[int(np.argmin(np.abs(tt - r["t"])))]
        for p in g["people"]:
            x, y, w, h = p["box"]
            total += 1
            found += any(
                abs(f["box"][0] + f["box"][2] / 2 - (x + w / 2)) < w / 2
                and abs(f["box"][1] + f["box"][3] / 2 - (y + h / 2)) < h / 2
                for f in r["faces"]
            )
    assert found / total >= 0.8


def process_and_score(room: Path, tmp_path: Path, out: Path | None = None) -> tuple[list[dict], dict]:
    track = tmp_path / "track.jsonl"
    roombox(
        "process",
        "--video",
        str(room / "room.mp4"),
        "--audio",
        str(room / "array.wav"),
        "--config",
        str(room / "config.toml"),
        "--track",
        str(track),
        *(["--out", str(out)] if out else []),
    )
    s = json.loads(roombox("score", "--track", str(track), "--truth", str(room / "truth.jsonl"), "--json").stdout)
    return lines(track.read_text()), s


def test_process_frames_the_talkers_most_of_the_time(room: Path, truth: list[dict], tmp_path: Path) -> None:
    framed = tmp_path / "framed.mp4"
    recs, s = process_and_score(room, tmp_path, framed)
    assert len(recs) == len(truth)  # one line per video frame
    assert all(len(r["crop"]) == 4 and r["mode"] in ("speaker", "group", "wide") for r in recs)
    assert framed.stat().st_size > 10_000
    assert s["framed_fraction"] >= 0.8, s
    assert s["missed_turns"] == 0 and s["switch_latency_median_s"] < 1.0, s


def test_five_people_one_minute_framed_most_of_the_time(tmp_path: Path) -> None:
    """The default scenario: five people (faces 34-94 px in 1080p), sixteen turns, quick exchanges."""
    room = tmp_path / "default"
    roombox("render", "--out", str(room))
    _, s = process_and_score(room, tmp_path)
    assert s["turns"] >= 12
    assert s["framed_fraction"] >= 0.75, s
    assert s["missed_turns"] <= 1 and s["switch_latency_median_s"] < 1.0, s


def test_a_bad_config_is_refused_naming_the_key(room: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((room / "config.toml").read_text() + "\n[director]\nmin_hold_s = -1\nzoom = 2\n")
    p = roombox("doa", "--audio", str(room / "array.wav"), "--config", str(bad), check=False)
    assert p.returncode == 2
    assert "director.min_hold_s" in p.stderr and "director.zoom" in p.stderr and "unknown key" in p.stderr


def test_a_wav_that_does_not_match_the_array_is_refused(room: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "two.toml"
    cfg.write_text(
        "[camera]\nhfov_deg = 90\n[mic_array]\nsample_rate = 16000\npositions = [[-0.05, 0.0, 0.0], [0.05, 0.0, 0.0]]\n"
    )
    p = roombox("doa", "--audio", str(room / "array.wav"), "--config", str(cfg), check=False)
    assert p.returncode == 2 and "channel" in p.stderr


def _one_line_error(p: subprocess.CompletedProcess[str], *words: str) -> None:
    errors = [line for line in p.stderr.splitlines() if "error:" in line]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert len(errors) >= 1 and all(w in p.stderr for w in words), p.stderr


def test_every_error_a_user_can_cause_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import os

    empty = tmp_path / "no-assets"
    empty.mkdir()
    env = {**os.environ, "ROOMBOX_DATA": str(empty)}
    p = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "render", "--out", str(tmp_path / "r"), "--duration", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )
    _one_line_error(p, "arctic", "provision")
    _one_line_error(roombox("demo", "--port", "70000", check=False), "[panel.port]")
    mixed = tmp_path / "mixed.toml"
    mixed.write_text('[camera]\nhfov_deg = 80\n[cameras.main]\ntype = "file"\n')
    _one_line_error(roombox("run", "--config", str(mixed), check=False), "[cameras.main]", "instead of [camera]")
    untyped = tmp_path / "untyped.toml"
    untyped.write_text("[mic_arrays.table]\nsample_rate = 16000\n")
    _one_line_error(roombox("run", "--config", str(untyped), check=False), "[mic_arrays.table] has no type")
    nan = tmp_path / "nan.toml"
    nan.write_text("[mic_array]\npositions = [[nan, 0.0, 0.0], [0.05, 0.0, 0.0]]\n")
    _one_line_error(roombox("run", "--config", str(nan), check=False), "positions", "finite number")
    _one_line_error(roombox("bench", "weather", check=False), "no bench section 'weather'")
    _one_line_error(roombox("run", "--config", str(tmp_path), check=False), "is a directory")


def test_recordings_that_do_not_fit_each_other_say_so_and_give_a_sensible_shot(room: Path, tmp_path: Path) -> None:
    """`roombox process` on audio that ends early, on a video without anyone in it and with a silent
    reference: a one-line note for each, a track line for every frame, never a crash."""
    import wave

    from drivers.files import VideoFileWriter

    with wave.open(str(room / "array.wav")) as w:
        params, pcm = w.getparams(), w.readframes(2 * w.getframerate())
    short = tmp_path / "short.wav"
    with wave.open(str(short), "wb") as w:
        w.setparams(params)
        w.writeframes(pcm)
    p = roombox(
        "process", "--video", str(room / "room.mp4"), "--audio", str(short), "--config", str(room / "config.toml"),
        "--track", str(tmp_path / "short.jsonl"),
    )  # fmt: skip
    assert "note:" in p.stderr and "ends before the video" in p.stderr and "nothing is heard after 2.0 s" in p.stderr
    recs = lines((tmp_path / "short.jsonl").read_text())
    assert recs[-1]["mode"] == "group" and recs[-1]["t"] > 8.0  # nobody heard: the group, not a stale close shot

    empty = tmp_path / "empty.mp4"
    writer = VideoFileWriter(empty, 640, 360, 15.0)
    for _ in range(30):
        writer.write(np.full((360, 640, 3), 90, np.uint8))
    writer.close()
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(params.framerate)
        w.writeframes(bytes(2 * params.nframes))
    p = roombox(
        "process", "--video", str(empty), "--audio", str(room / "array.wav"), "--config", str(room / "config.toml"),
        "--reference", str(silent), "--track", str(tmp_path / "empty.jsonl"),
    )  # fmt: skip
    assert "no face was found in the video" in p.stderr and "the whole view throughout" in p.stderr
    assert "ends before the audio" in p.stderr and "reference is silent" in p.stderr
    recs = lines((tmp_path / "empty.jsonl").read_text())
    assert len(recs) == 30 and all(r["mode"] == "wide" and r["crop"] == [0, 0, 640, 360] for r in recs)
    # a recording that fits says nothing of the kind
    p = roombox(
        "process", "--video", str(room / "room.mp4"), "--audio", str(room / "array.wav"), "--config",
        str(room / "config.toml"), "--track", str(tmp_path / "fits.jsonl"),
    )  # fmt: skip
    assert "note:" not in p.stderr
