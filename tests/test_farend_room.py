"""The simulated room's far-end loudspeaker: scenario checks, `roombox render` writing reference.wav and the
far end's intervals, `roombox doa --reference` on the rendering, the live mic array and box passing the
reference on."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
import tomli_w

from appliance.box import RoomBox
from appliance.cli import main
from appliance.config import DetectorConfig, load_config
from appliance.perception.faces import FaceDetector
from appliance.streaming.hub import EventBus, LatestFrame
from common.clock import VirtualClock
from drivers.files import read_wav
from drivers.simroom.audio import farend_track, playback_reference
from drivers.simroom.room import SimulatedRoom
from drivers.simroom.scenario import ScenarioError, builtin_scenario, load_scenario, parse_scenario

RING = [[0.0463 * math.cos(math.radians(a)), -0.1, 0.0463 * math.sin(math.radians(a))] for a in range(0, 360, 60)]
SPEAKER_AZ = 20.0  # the ceiling loudspeaker is at the azimuth of the seated person "ben"


def seat(az_deg: float, dist: float) -> list[float]:
    return [3.0 + dist * math.sin(math.radians(az_deg)), 0.05 + dist * math.cos(math.radians(az_deg))]


def farend_scene(**over: Any) -> dict[str, Any]:
    """Ten seconds: ann (-30 deg) talks, then the far end from the ceiling at +20 deg alone, then ben, seated
    under it, with the far end over him at the end (double talk)."""
    data: dict[str, Any] = {
        "duration_s": 10.0,
        "room": {"size_m": [6.0, 5.0, 2.8], "rt60_s": 0.4, "noise_db": -55.0, "seed": 5},
        "camera": {"position_m": [3.0, 0.05, 1.25], "hfov_deg": 90.0, "width": 320, "height": 180, "fps": 15.0},
        "mic_array": {"sample_rate": 16000, "positions": RING},
        "people": [
            {
                "id": "ann",
                "seat_m": seat(-30.0, 1.8),
                "utterances": [
                    {"start_s": 0.3, "text": "Good morning everyone, are we all here?", "voice": "en-us+f3"}
                ],
            },
            {
                "id": "ben",
                "seat_m": seat(SPEAKER_AZ, 3.0),
                "face": "lfw:3",
                "utterances": [{"start_s": 6.8, "text": "Yes, we can hear you very well.", "voice": "en-us+m3"}],
            },
        ],
        "loudspeaker": {
            "position_m": [*seat(SPEAKER_AZ, 2.2), 2.7],
            "turns": [
                {"start_s": 3.0, "text": "Hello from the other office. Can you hear us?", "voice": "en-gb+m4"},
                {"start_s": 8.6, "text": "Good.", "voice": "en-gb+m4"},
            ],
        },
    }
    data.update(over)
    return data


def err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


# -- scenario ---------------------------------------------------------------------------------------------


def test_the_builtin_farend_scenario_puts_the_loudspeaker_at_a_seated_persons_azimuth() -> None:
    scn = load_scenario(builtin_scenario("farend"))
    assert scn.loudspeaker is not None and len(scn.loudspeaker.turns) >= 4
    direction = scn.loudspeaker_direction_deg()
    assert direction is not None
    azimuths = {p.id: scn.mouth_azimuth_deg(p) for p in scn.people}
    assert min(err(direction[0], az) for az in azimuths.values()) < 1.0
    assert direction[1] > 20.0  # on the ceiling, above the array
    assert load_scenario(builtin_scenario("short")).loudspeaker_direction_deg() is None


@pytest.mark.parametrize(
    ("loudspeaker", "message"),
    [
        ({"position_m": [3.0, 6.5, 2.7]}, r"loudspeaker.position_m .* is outside the room"),
        ({"position_m": [3.0, 0.1, 1.15]}, r"from microphone \d: keep it at least 0.2 m away"),
        (
            {"turns": [{"start_s": 4.0, "text": "one"}, {"start_s": 2.0, "text": "two"}]},
            r"\[loudspeaker.turns\] .*turn 1 starts at 2.0 s, not after turn 0",
        ),
        ({"turns": [{"start_s": 12.0, "text": "late"}]}, r"loudspeaker.turns.0 starts at 12.0 s, after the scenario"),
        ({"turns": [{"start_s": 1.0, "clip": "timit"}]}, r"\[loudspeaker.turns.0.clip\]"),
        ({"turns": [{"start_s": 1.0, "text": "a", "clip": "arctic"}]}, r"exactly one of text or clip"),
        ({"turns": []}, r"\[loudspeaker.turns\] List should have at least 1 item"),
        ({"volume": 3}, r"\[loudspeaker.volume\] unknown key"),
    ],
)
def test_a_bad_loudspeaker_is_refused_naming_the_key(loudspeaker: dict[str, Any], message: str) -> None:
    data = farend_scene()
    data["loudspeaker"] = {**data["loudspeaker"], **loudspeaker}
    with pytest.raises(ScenarioError, match=message) as e:
        parse_scenario(data, "room.toml")
    # one line: the file, then the key (in brackets, or first in the reason of a check across sections)
    assert str(e.value).startswith("room.toml: ") and "\n" not in str(e.value)
    assert str(e.value).removeprefix("room.toml: ").startswith(("[loudspeaker", "loudspeaker."))


def test_overlapping_far_end_turns_are_refused_by_roombox_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = farend_scene()
    data["loudspeaker"]["turns"][1]["start_s"] = 4.0  # the first turn lasts well over a second
    path = tmp_path / "overlap.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    assert main(["render", "--scenario", str(path), "--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().err.strip()
    assert len(out.splitlines()) == 1
    assert f"{path}: [loudspeaker.turns.1] starts at 4.0 s, before loudspeaker.turns.0 ends" in out


# -- rendering and `roombox doa` ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("farend")
    (d / "scene.toml").write_text(tomli_w.dumps(farend_scene()), encoding="utf-8")
    assert main(["render", "--scenario", str(d / "scene.toml"), "--out", str(d / "out")]) == 0
    return d / "out"


def test_render_writes_the_reference_and_the_far_ends_intervals(rendered: Path) -> None:
    samples, rate = read_wav(rendered / "array.wav")
    ref, ref_rate = read_wav(rendered / "reference.wav")
    assert ref_rate == rate == 16000 and ref.shape == (samples.shape[0], 1) and samples.shape[1] == 6
    # exactly what was sent to the loudspeaker: the far-end turns at their start times (16-bit)
    scn = load_scenario(rendered / "scenario.toml")
    track = farend_track(scn)
    assert track is not None
    sent = playback_reference(track)
    assert np.abs(ref[:, 0] - sent).max() < 2.0 / 32768
    assert np.abs(sent[: 3 * rate]).max() == 0.0 and np.abs(sent[3 * rate : 4 * rate]).max() > 0.01
    activity = json.loads((rendered / "activity.json").read_text())
    spans = activity["farend"]
    assert spans[0][0] == pytest.approx(3.0 + 2.3 / 343.0, abs=0.05) and spans[-1][0] > 8.5
    assert activity["loudspeaker"]["azimuth_deg"] == pytest.approx(SPEAKER_AZ, abs=1.0)
    assert set(activity["talkers"]) == {"ann", "ben"}
    truth = [json.loads(line) for line in (rendered / "truth.jsonl").read_text().splitlines()]
    far = [r["t"] for r in truth if r["farend"]]
    assert far and min(far) >= 3.0 and not any(r["farend"] for r in truth if r["t"] < 2.9)
    # the far end is heard in the room: the mics carry the reference, delayed by the loudspeaker's distance
    a, b = round(3.2 * rate), round(5.0 * rate)
    mix = samples[a:b].mean(axis=1)
    lags = np.arange(0, 400)
    cc = [float(np.dot(mix, ref[a - lag : b - lag, 0])) for lag in lags]
    delay_m = int(lags[int(np.argmax(cc))]) / rate * 343.0
    assert delay_m == pytest.approx(math.dist([*seat(SPEAKER_AZ, 2.2), 2.7], [3.0, 0.05, 1.15]), abs=0.5)


def test_a_rendering_without_a_loudspeaker_leaves_no_stale_reference(rendered: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "reference.wav").write_bytes((rendered / "reference.wav").read_bytes())
    data = farend_scene(duration_s=1.0)
    del data["loudspeaker"]
    for person in data["people"]:  # what starts after the end is refused, as the far end's turns are
        person["utterances"] = [u for u in person["utterances"] if u["start_s"] < data["duration_s"]]
    (tmp_path / "plain.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    assert main(["render", "--scenario", str(tmp_path / "plain.toml"), "--out", str(out)]) == 0
    assert not (out / "reference.wav").exists()
    assert json.loads((out / "activity.json").read_text())["farend"] == []


def _doa(rendered: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, Any]]:
    args = ["doa", "--audio", str(rendered / "array.wav"), "--config", str(rendered / "config.toml"), *extra]
    assert main(args) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _during(lines: list[dict[str, Any]], activity: dict[str, Any], who: str) -> list[dict[str, Any]]:
    """Lines whose 64 ms block lies inside ``who``'s speech (``farend`` or a person) while nobody else
    talks; the 0.3 s after another's speech (its reverberation) is left out."""

    def on(spans: list[list[float]], a: float, b: float) -> bool:
        return any(s < b and a < e for s, e in spans)

    def inside(spans: list[list[float]], a: float, b: float) -> bool:
        return any(s <= a and b <= e for s, e in spans)

    spans = {"farend": activity["farend"], **activity["talkers"]}
    out = []
    for line in lines:
        a, b = line["t"] - 0.064, line["t"]
        others = [s for k, s in spans.items() if k != who]
        if inside(spans[who], a, b) and not any(on(s, a - 0.3, b) for s in others):
            out.append(line)
    return out


def test_roombox_doa_with_the_reference_never_takes_the_far_end_for_a_talker(
    rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    activity = json.loads((rendered / "activity.json").read_text())
    lines = _doa(rendered, capsys, "--reference", str(rendered / "reference.wav"))
    far = _during(lines, activity, "farend")
    assert len(far) >= 20
    assert [x["t"] for x in far if x["azimuth_deg"] is not None] == []
    assert sum(x["farend"] for x in far) >= 0.9 * len(far)
    # local talkers are still found where they are; ben, under the loudspeaker just after the far end spoke,
    # is first taken for the far end's source by the tracker (measured: about half his blocks are found)
    for who, az, least in (("ann", -30.0, 0.6), ("ben", SPEAKER_AZ, 0.35)):
        local = _during(lines, activity, who)
        found = [x["azimuth_deg"] for x in local if x["azimuth_deg"] is not None]
        assert len(local) >= 10 and len(found) >= least * len(local), who
        assert float(np.median([err(f, az) for f in found])) < 8.0, who

    # without the reference the loudspeaker IS taken for a talker, at its azimuth
    plain = _during(_doa(rendered, capsys), activity, "farend")
    taken = [x["azimuth_deg"] for x in plain if x["azimuth_deg"] is not None]
    assert len(taken) >= 0.5 * len(plain)
    assert float(np.median([err(a, SPEAKER_AZ) for a in taken])) < 10.0


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("short", r"has 48000 samples but the array recording has 160000"),
        ("rate", r"reference's sample rate is 8000 Hz but the array recording's is 16000 Hz"),
        ("stereo", r"the reference has 2 channels; it must be mono"),
    ],
)
def test_roombox_doa_refuses_a_reference_that_does_not_fit_the_rendering(
    rendered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    rate, pcm = scipy.io.wavfile.read(rendered / "reference.wav")
    bad = tmp_path / "bad.wav"
    if kind == "short":
        scipy.io.wavfile.write(bad, rate, pcm[: 3 * rate])
    elif kind == "rate":
        scipy.io.wavfile.write(bad, 8000, pcm[::2])
    else:
        scipy.io.wavfile.write(bad, rate, np.stack([pcm, pcm], axis=1))
    args = ["doa", "--audio", str(rendered / "array.wav"), "--config", str(rendered / "config.toml")]
    assert main([*args, "--reference", str(bad)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0]
    import re

    assert re.search(message, lines[0]), lines[0]


# -- live: the mic array hands the reference over, the box passes it on ------------------------------------


def test_the_live_mic_array_delivers_the_reference_with_each_block(rendered: Path) -> None:
    scn = load_scenario(rendered / "scenario.toml").model_copy(update={"duration_s": 4.0})

    async def collect(room: SimulatedRoom, n: int) -> list[Any]:
        mics = room.mic_array(0.05)
        await mics.start()
        blocks = [await mics.recv() for _ in range(n)]
        await mics.stop()
        return blocks

    room = SimulatedRoom(scn, clock=VirtualClock(50.0))
    blocks = asyncio.run(collect(room, 100))  # 5 s: the 4 s scene and a second of its loop
    audio = room.audio()
    assert audio.reference is not None
    ref = np.concatenate([b.reference for b in blocks])
    x = np.concatenate([b.samples for b in blocks])
    n = audio.samples.shape[0]
    idx = np.arange(ref.shape[0]) % n
    assert np.array_equal(x, audio.samples[idx]) and np.array_equal(ref, audio.reference[idx])
    assert all(b.reference.shape == (b.samples.shape[0],) for b in blocks)
    plain = SimulatedRoom(scn.model_copy(update={"loudspeaker": None}), clock=VirtualClock(50.0))
    assert all(b.reference is None for b in asyncio.run(collect(plain, 3)))


def test_the_box_takes_the_reference_from_the_mic_array(rendered: Path) -> None:
    """RoomBox on the simulated room (virtual clock): no DOA it publishes during far-end-only speech names a
    talker, while ann is found."""
    scn = load_scenario(rendered / "scenario.toml")
    cfg = load_config(rendered / "config.toml")
    cfg = cfg.model_copy(update={"detector": DetectorConfig(tiles=(1, 1), interval_s=1.0)})
    activity = json.loads((rendered / "activity.json").read_text())

    async def run() -> list[dict[str, Any]]:
        clock = VirtualClock(100.0, tick_s=0.002)
        room = SimulatedRoom(scn, clock=clock)
        events, frames = EventBus(queue_size=100_000), LatestFrame()
        seen = events.subscribe()
        doas: list[dict[str, Any]] = []
        with FaceDetector(cfg=cfg.detector) as detector:
            box = RoomBox(cfg, room.camera(), room.mic_array(0.032), detector, frames, None, events, clock=clock)
            task = asyncio.create_task(box.run())
            try:
                while not doas or doas[-1]["t"] < 9.5:
                    kind, data = await asyncio.wait_for(seen.get(), 60.0)
                    if kind == "doa":
                        doas.append({**data, "t": data["t"] - room.epoch()})
            finally:
                task.cancel()
                try:
                    await asyncio.wait_for(task, 30.0)
                except asyncio.CancelledError:
                    pass
        return doas

    doas = asyncio.run(run())
    far = _during(doas, activity, "farend")
    assert len(far) >= 20
    assert [d["t"] for d in far if d["azimuth_deg"] is not None or d["speech"]] == []
    ann = [d["azimuth_deg"] for d in _during(doas, activity, "ann") if d["azimuth_deg"] is not None]
    assert len(ann) >= 10 and float(np.median([err(a, -30.0) for a in ann])) < 8.0


# -- the benchmark's scoring ---------------------------------------------------------------------------------


def test_bench_farend_scores_the_far_end_with_and_without_the_reference() -> None:
    from appliance.bench.farend import listen, render_cell, rows_of

    scn, audio, samples = render_cell(0.6, 10.0, "square4", "ceiling", 9.0)  # alice, then the far end alone
    assert audio.reference is not None and samples.shape == (9 * 16000, 4)
    ref, plain = listen(scn, audio, samples, True), listen(scn, audio, samples, False)
    assert ref.farend_only == plain.farend_only >= 30 and ref.local_only >= 30
    assert ref.farend_reported == 0 and plain.farend_reported >= 0.5 * plain.farend_only
    assert ref.recall() >= 0.8 and ref.local_within_10 >= 0.8 * ref.local_only
    rows = {name: value for name, value, _ in rows_of("cell", ref, plain)}
    assert rows["cell far-end-only blocks reported as a local talker"] == 0.0
    assert rows["cell same without reference (peer), time"] == pytest.approx(plain.farend_reported * 0.064)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("damaged", r"cannot read as WAV: a damaged header"),
        ("empty", r"has no samples"),
        ("nan", r": 101 samples are not numbers \(NaN or infinite\)"),
        ("scaled", r": float samples reach \d+, where full scale is 1\.0 .* divide by 32768 for 16-bit values"),
        ("short", r"6\.2 ms of audio is shorter than one analysis block \(\[doa\] block_ms = 64\)"),
    ],
)
def test_roombox_doa_refuses_an_array_recording_it_cannot_hear(
    rendered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    """A damaged file, one without samples, one carrying NaN, one of 16-bit values written as floats and one
    shorter than a block: one line that names the file and the problem, and no output (before: a traceback,
    nothing at all and exit 0, or, for the floats, a recording 90 dB over full scale taken as it was)."""
    rate, pcm = scipy.io.wavfile.read(rendered / "array.wav")
    bad = tmp_path / "bad.wav"
    if kind == "damaged":
        bad.write_bytes(b"RIFF1234WAVEjunkjunkjunk")  # scipy's own parser fails on it with an UnboundLocalError
    elif kind == "empty":
        scipy.io.wavfile.write(bad, rate, pcm[:0])
    elif kind == "nan":
        x = pcm[:rate].astype(np.float32) / 32768.0
        x[100:200, 1] = np.nan
        x[300, 0] = np.inf
        scipy.io.wavfile.write(bad, rate, x)
    elif kind == "scaled":  # 16-bit values written as floats: the hearing would take it as 90 dB louder
        scipy.io.wavfile.write(bad, rate, pcm[:rate].astype(np.float32))
    else:
        scipy.io.wavfile.write(bad, rate, pcm[:100])
    assert main(["doa", "--audio", str(bad), "--config", str(rendered / "config.toml")]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0]
    import re

    assert re.search(message, lines[0]), lines[0]


def test_roombox_render_takes_a_built_in_scenario_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--scenario farend` renders the built-in scenario, as the config's simroom devices take it (a folder of
    that name where it runs does not stand in for it); an unknown name is refused with the names there are."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "farend").mkdir()
    assert main(["render", "--scenario", "farend", "--out", str(tmp_path / "out"), "--duration", "0.5"]) == 0
    scn = load_scenario(tmp_path / "out" / "scenario.toml")
    assert scn.loudspeaker is not None and len(scn.people) == 4
    assert (tmp_path / "out" / "reference.wav").is_file()
    capsys.readouterr()
    assert main(["render", "--scenario", "nosuch", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no built-in scenario named 'nosuch' (built in: default, farend, short; or give a .toml file)" in err
    assert not (tmp_path / "x").exists()
