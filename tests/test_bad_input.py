"""Bad input on the command line: one line naming the problem, exit 2, nothing overwritten or left half-written.

Each case here was found by a sweep of the commands with broken files and arguments, and crashed, overwrote
an input, left a partial rendering or answered with nothing before its mend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from appliance.cli import main
from drivers.files import MediaFileError, read_image, read_jsonl
from drivers.simroom.scenario import builtin_scenario, load_scenario


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in short scenario's first 2 s, rendered."""
    out = tmp_path_factory.mktemp("short") / "r"
    assert main(["render", "--scenario", "short", "--out", str(out), "--duration", "2"]) == 0
    return out


def _one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"roombox {command}: error: "), out.err
    return lines[0]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_process_never_writes_over_its_inputs_or_one_output_over_the_other(
    short: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "w"
    shutil.copytree(short, work)
    before = _snapshot(work)
    base = ["process", "--video", str(work / "room.mp4"), "--audio", str(work / "array.wav")]
    base += ["--config", str(work / "config.toml")]
    cases = [
        (["--track", str(work / "room.mp4")], "is the --video file: it would be overwritten"),
        (["--track", str(work / "array.wav")], "is the --audio file: it would be overwritten"),
        (["--track", str(work / "config.toml")], "is the --config file: it would be overwritten"),
        (["--track", str(tmp_path / "t.jsonl"), "--out", str(work / "room.mp4")], "is the --video file"),
        (["--track", str(tmp_path / "same"), "--out", str(tmp_path / "same")], "--track and --out are the same file"),
        (["--track", str(work)], "is a directory: give a file name to write"),
        (["--track", str(work / "array.wav" / "t.jsonl")], "array.wav is a file, not a directory"),
        (["--track", os.devnull], "is not a regular file (a device or pipe)"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        assert message in _one_error(capsys, "process"), extra
    assert _snapshot(work) == before  # every input as it was
    assert not (tmp_path / "same").exists() and not (tmp_path / "t.jsonl").exists()
    assert Path(os.devnull).is_char_device()


def test_a_failed_rendering_leaves_the_directory_as_it_was(
    short: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scenario refused while it renders (overlapping far-end turns), or whose config the drivers would
    refuse (two microphones at one place, an odd picture size): the earlier rendering in the directory stays
    whole, and nothing is left beside it."""
    out = tmp_path / "out"
    shutil.copytree(short, out)
    before = _snapshot(out)
    base = load_scenario(builtin_scenario("farend")).model_dump(mode="json", exclude_none=True)
    turns = base["loudspeaker"]["turns"]
    overlap = {**base, "loudspeaker": {**base["loudspeaker"], "turns": [{**turns[0], "start_s": 1.0}]}}
    overlap["loudspeaker"]["turns"].append({**turns[1], "start_s": 1.5})
    same_place = {**base, "mic_array": {**base["mic_array"], "positions": [[0.0, -0.1, 0.0], [0.0, -0.1, 0.0]]}}
    odd = {**base, "camera": {**base["camera"], "width": 641}}
    cases = [
        (overlap, "[loudspeaker.turns.1] starts at 1.5 s, before loudspeaker.turns.0 ends"),
        (same_place, "[mic_array.positions] microphones 0 and 1 are at the same place"),
        (odd, "[camera.width] 641 is odd: the video (H.264, yuv420p) needs an even width and height"),
    ]
    for k, (data, message) in enumerate(cases):
        path = tmp_path / f"bad{k}.toml"
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
        assert main(["render", "--scenario", str(path), "--out", str(out)]) == 2
        err = _one_error(capsys, "render")
        assert str(path) in err and message in err, err
        assert _snapshot(out) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *(f"bad{j}.toml" for j in range(k + 1))])


@pytest.mark.parametrize("duration", ["nan", "inf", "1e-9", "0", "-2"])
def test_render_refuses_a_duration_that_is_not_a_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], duration: str
) -> None:
    assert main(["render", "--scenario", "short", "--out", str(tmp_path / "o"), "--duration", duration]) == 2
    assert "give a number of seconds, at least one video frame (0.067 s at 15 frames/s)" in _one_error(capsys, "render")
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []


def test_render_into_a_file_and_an_utterance_after_the_end_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["render", "--scenario", "short", "--out", str(tmp_path / "f"), "--duration", "1"]) == 2
    assert "is a file; give a directory to render into" in _one_error(capsys, "render")
    data = load_scenario(builtin_scenario("short")).model_dump(mode="json", exclude_none=True)
    data["people"][0]["utterances"][0]["start_s"] = 100.0
    path = tmp_path / "late.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    assert main(["render", "--scenario", str(path), "--out", str(tmp_path / "o")]) == 2
    who = data["people"][0]["id"]
    assert f"people.0.utterances.0 ({who}) starts at 100.0 s, after the scenario ends (15.0 s)" in _one_error(
        capsys, "render"
    )


def test_a_doa_band_above_what_the_array_carries_is_refused(
    short: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``[doa] fmin_hz = 8000`` / ``fmax_hz = 12000`` at 16 kHz crashed (ZeroDivisionError); 7000-12000 gave
    -120 dB and no speech at all. Also: the message of a check across sections has no "Value error, "."""
    config = (short / "config.toml").read_text()
    for fmin, fmax, message in (
        (
            8000,
            12000,
            "[doa] fmax_hz = 12000 is above half the sample rate of [mic_arrays.main] (16000 Hz): at most 8000",
        ),
        (7000, 12000, "[doa] fmax_hz = 12000 is above half the sample rate of [mic_arrays.main]"),
        (5000, 1000, "[doa] fmax_hz (1000) must be above fmin_hz (5000)"),
    ):
        path = tmp_path / "c.toml"
        path.write_text(config + f"\n[doa]\nfmin_hz = {fmin}\nfmax_hz = {fmax}\n")
        assert main(["doa", "--audio", str(short / "array.wav"), "--config", str(path)]) == 2
        err = _one_error(capsys, "doa")
        assert f"{path}: {message}" in err and "Value error" not in err, err


def test_a_reader_that_stops_early_ends_doa_quietly(short: Path, tmp_path: Path) -> None:
    """`roombox doa ... | head -1`: before, "error: [Errno 32] Broken pipe" on stderr. The output (20 s of audio,
    over 600 lines) is many times the pipe's room (made the least Linux allows), so the box is still writing
    when the reader goes away."""
    import fcntl

    import scipy.io.wavfile

    rate, pcm = scipy.io.wavfile.read(short / "array.wav")
    scipy.io.wavfile.write(tmp_path / "long.wav", rate, np.tile(pcm, (10, 1)))
    exe = Path(sys.executable).with_name("roombox")
    cmd = [str(exe), "doa", "--audio", str(tmp_path / "long.wav"), "--config", str(short / "config.toml")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None and proc.stderr is not None
    fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    first = proc.stdout.readline()  # unbuffered: just the first line
    proc.stdout.close()  # the reader goes away while the box still has lines to write
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert first.startswith(b'{"t": ') and err == ""


def test_images_and_json_lines_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    huge = tmp_path / "huge.png"  # a PNG whose header claims 100000 x 100000 pixels
    header = (100000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    huge.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")
    )
    with pytest.raises(MediaFileError, match=r"huge.png: not a readable image: its header claims more pixels"):
        read_image(huge)
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"t": 0}\n' + "[" * 200_000 + "\n")
    with pytest.raises(MediaFileError, match=r"deep.jsonl:2: not JSON this program reads: nested too deeply"):
        read_jsonl(deep)
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(np.arange(256, dtype=np.uint8).tobytes() * 4)
    with pytest.raises(MediaFileError, match=r"b.jsonl: not UTF-8 text, so not a JSON-lines file"):
        read_jsonl(binary)


def test_process_writes_its_framed_video_only_as_mp4(
    short: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["process", "--video", str(short / "room.mp4"), "--audio", str(short / "array.wav")]
    args += ["--config", str(short / "config.toml"), "--track", str(tmp_path / "t.jsonl")]
    assert main([*args, "--out", str(tmp_path / "o.wav")]) == 2
    assert "the framed video is written as MP4: give a .mp4 file name" in _one_error(capsys, "process")
    assert list(tmp_path.iterdir()) == []


def test_a_wav_of_one_channel_is_said_so(short: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import scipy.io.wavfile

    rate, pcm = scipy.io.wavfile.read(short / "array.wav")
    scipy.io.wavfile.write(tmp_path / "mono.wav", rate, pcm[:, 0])
    assert main(["doa", "--audio", str(tmp_path / "mono.wav"), "--config", str(short / "config.toml")]) == 2
    assert "mono.wav: has 1 channel but the mic array's positions has 6 microphones" in _one_error(capsys, "doa")


def test_a_config_file_the_toml_parser_would_take_minutes_over_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tomllib's time grows with the square of a dotted key's parts (60000 parts: about a minute), and
    nested inline tables overflow its stack, and an integer of 5000 digits is more than Python converts: each is
    named (before: minutes, or a traceback, or a message without the file), and a long line of numbers is
    still read."""
    deep, nested, numbers = tmp_path / "deep.toml", tmp_path / "nested.toml", tmp_path / "numbers.toml"
    deep.write_text("[doa]\n" + "a" + ".a" * 60_000 + " = 1\n")
    nested.write_text("x = " + "{a = " * 600 + "1" + "}" * 600 + "\n")
    positions = ", ".join(f"[{0.05 * k:.2f}, 0.0, 0.0]" for k in range(16))  # 32 dots on one line
    numbers.write_text(f'[mic_arrays.line]\ntype = "wav"\npositions = [{positions}]\n')
    assert main(["doa", "--audio", "x.wav", "--config", str(deep)]) == 2
    assert "deep.toml: not valid TOML: a key of more than 32 dotted parts (line 2)" in _one_error(capsys, "doa")
    assert main(["doa", "--audio", "x.wav", "--config", str(nested)]) == 2
    assert "nested.toml: not valid TOML: arrays or tables nested too deeply" in _one_error(capsys, "doa")
    long_int = tmp_path / "long.toml"
    long_int.write_text("[director]\nmanual_resume_s = " + "9" * 5000 + "\n")
    assert main(["doa", "--audio", "x.wav", "--config", str(long_int)]) == 2
    line = _one_error(capsys, "doa")
    assert "long.toml: not valid TOML: a value it cannot read: Exceeds the limit (4300 digits)" in line, line
    from appliance.config import load_config

    assert len(load_config(numbers).mic_array.positions) == 16


def test_render_into_an_empty_name_or_a_device_and_faces_every_0_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out ''` rendered into the directory where it ran; `--out /dev/null` was said to be a file; `faces
    --every 0` was refused without naming the option (a sweep of the admin's commands)."""
    monkeypatch.chdir(tmp_path)
    assert main(["render", "--scenario", "short", "--out", "", "--duration", "1"]) == 2
    assert "--out is empty: give a directory to render into" in _one_error(capsys, "render")
    assert list(tmp_path.iterdir()) == []
    assert main(["render", "--scenario", "short", "--out", "/dev/null", "--duration", "1"]) == 2
    assert "/dev/null: is not a directory (a device or pipe)" in _one_error(capsys, "render")
    assert main(["faces", "--video", "x.mp4", "--every", "0"]) == 2
    assert "--every 0: give 1 (every frame) or more" in _one_error(capsys, "faces")


def test_wavs_cut_or_left_without_their_sizes_are_said_so(
    short: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep: a WAV cut within a frame gave numpy's "cannot reshape array of size 719989 into shape (6)", and
    one whose header says its data is empty (a recorder killed before it wrote the sizes) only "has no samples"."""
    data = (short / "array.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) - 3])  # the header's sizes kept, the data ends within a frame
    assert main(["doa", "--audio", str(cut), "--config", str(short / "config.toml")]) == 2
    assert "cut.wav: cannot read as WAV: the data ends within a frame (a cut file?)" in _one_error(capsys, "doa")
    at = data.index(b"data")
    unsized = tmp_path / "unsized.wav"
    unsized.write_bytes(data[: at + 4] + (0).to_bytes(4, "little") + data[at + 8 :])
    assert main(["doa", "--audio", str(unsized), "--config", str(short / "config.toml")]) == 2
    assert "unsized.wav: has no samples (its header says its data is empty, but the file has" in _one_error(
        capsys, "doa"
    )


def test_a_recording_of_the_sound_cards_whole_stream_is_read_through_its_channel_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep: the ReSpeaker's 6-channel stream recorded as the box captures it, analysed with the box's own
    config (a sounddevice array with the preset's channel map), was refused: "has 6 channels but the mic
    array's positions has 4 microphones". The channel map now picks the microphones, as live."""
    import scipy.io.wavfile

    from appliance.config import parse_config
    from tests.test_doa import plane_wave

    doc: dict[str, Any] = {
        "mic_arrays": {"main": {"type": "sounddevice", "device": "ReSpeaker", "preset": "respeaker-usb-4mic"}},
        "doa": {"vad": "energy"},
    }
    cfg_path = tmp_path / "box.toml"
    cfg_path.write_bytes(tomli_w.dumps(doc).encode())
    mic = parse_config(doc, "test").mic_array
    mics = plane_wave(np.asarray(mic.positions), 40.0, n=48000)  # (n, 4): white noise from 40 deg
    mics *= (np.arange(mics.shape[0]) % 12000 < 4000)[:, None]  # in bursts of 0.25 s, as words (not a fan)
    stream = np.zeros((mics.shape[0], 6), np.float32)
    stream[:, 0] = mics.mean(axis=1)  # the firmware's processed channel
    stream[:, 1:5] = mics  # the raw microphones; 5, the playback, silent
    scipy.io.wavfile.write(tmp_path / "stream.wav", 16000, stream)
    assert main(["doa", "--audio", str(tmp_path / "stream.wav"), "--config", str(cfg_path)]) == 0
    heard = [json.loads(line)["azimuth_deg"] for line in capsys.readouterr().out.splitlines()]
    found = [a for a in heard if a is not None]
    assert found and abs(float(np.median(found)) - 40.0) < 5.0, heard
