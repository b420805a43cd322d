"""The Listener: 360-degree soft DOA evidence, far-end marking on a rendered room, `roombox doa --reference`."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
from scipy.io import wavfile

from appliance.bench.listening import SQUARE4, Scene, meeting
from appliance.cli import main
from appliance.config import DoaConfig, MicArraySection, TrackerConfig
from appliance.perception import listening
from appliance.perception.evidence import SoftSrp, irfft, rfft
from appliance.perception.listening import Heard, Listener
from tests.test_doa import CIRCLE, FS, LINEAR, err, plane_wave

SQUARE = np.asarray(SQUARE4)


def soft_srp(positions: np.ndarray) -> SoftSrp:
    d = DoaConfig()
    return SoftSrp(positions, FS, d.block_ms, d.fmin_hz, d.fmax_hz, d.grid_deg)


@pytest.mark.parametrize("positions", [CIRCLE, SQUARE], ids=["circle6", "square4"])
@pytest.mark.parametrize("azimuth", [-179.0, -120.0, -95.0, 101.5, 150.0, 180.0])
def test_planar_arrays_hear_all_around(positions: np.ndarray, azimuth: float) -> None:
    srp = soft_srp(positions)
    assert srp.full_circle and srp.grid_deg.size == 360
    (c,) = srp.analyse(plane_wave(positions, azimuth)[: srp.block_len], speech=False)
    assert err(c.azimuth_deg, azimuth) < 1.5, c
    assert c.weight > 0.8 and -180.0 <= c.azimuth_deg < 180.0


def test_a_linear_array_searches_the_front_half() -> None:
    srp = soft_srp(LINEAR)
    assert not srp.full_circle and srp.grid_deg[0] == -90.0 and srp.grid_deg[-1] == 90.0
    (c,) = srp.analyse(plane_wave(LINEAR, 150.0)[: srp.block_len], speech=False)
    assert err(c.azimuth_deg, 30.0) < 1.5  # behind folds onto the front


def test_the_front_half_is_searched_within_the_cameras_field() -> None:
    """``[tracker] max_azimuth_deg``: an array under the camera is searched within its field only."""
    d = DoaConfig()
    srp = SoftSrp(LINEAR, FS, d.block_ms, d.fmin_hz, d.fmax_hz, d.grid_deg, max_azimuth_deg=75.0)
    assert srp.grid_deg[0] == -75.0 and srp.grid_deg[-1] == 75.0
    (c,) = srp.analyse(plane_wave(LINEAR, -60.0)[: srp.block_len], speech=False)
    assert err(c.azimuth_deg, -60.0) < 1.5
    (c,) = srp.analyse(plane_wave(LINEAR, 88.0)[: srp.block_len], speech=False)
    assert 70.0 <= c.azimuth_deg <= 75.0  # further out: the edge of the field, never beyond
    assert TrackerConfig().max_azimuth_deg == 90.0  # by default the whole front half
    mic = MicArraySection(sample_rate=FS, positions=[tuple(p) for p in LINEAR.tolist()])
    assert Listener(mic, TrackerConfig(max_azimuth_deg=60.0)).srp.grid_deg.max() == 60.0
    assert Listener(MicArraySection(), TrackerConfig(max_azimuth_deg=60.0)).srp.full_circle  # a planar array: 360


def test_two_simultaneous_sources() -> None:
    srp = soft_srp(CIRCLE)
    x = plane_wave(CIRCLE, -60.0, seed=1) + plane_wave(CIRCLE, 75.0, seed=2)
    found = srp.analyse(x[: srp.block_len], speech=False, max_sources=2, second_ratio=0.3)
    assert len(found) == 2
    assert sorted(round(c.azimuth_deg) for c in found) == pytest.approx([-60, 75], abs=4)


def test_listener_chunks_and_json() -> None:
    mic = MicArraySection()
    x = plane_wave(CIRCLE, 140.0, n=FS)
    ref = (0.1 * np.random.default_rng(7).standard_normal(FS)).astype(np.float32)  # not the talker (seed 0)
    whole = Listener(mic).feed(x, 5.0, ref)
    listener = Listener(mic)
    parts: list[Heard] = []
    rng = np.random.default_rng(1)
    s = 0
    while s < FS:
        n = int(rng.integers(1, 900))
        parts += listener.feed(x[s : s + n], 5.0 + s / FS, ref[s : s + n])
        s += n
    assert [h.to_json() for h in parts] == [h.to_json() for h in whole]
    hop = TrackerConfig().hop_ms / 1000.0
    assert [h.t for h in whole] == pytest.approx([5.064 + k * hop for k in range(len(whole))], abs=1e-9)
    j = whole[-1].to_json()
    assert set(j) == {"t", "azimuth_deg", "speech", "level_db", "confidence", "farend", "sources"}
    assert not j["farend"]  # the reference plays something unrelated to what the mics hear
    assert any(err(src["azimuth_deg"], 140.0) < 3.0 for src in j["sources"])
    doa = whole[-1].to_doa()
    assert doa.t == whole[-1].t and doa.azimuth_deg == whole[-1].azimuth_deg


def test_listener_refuses_a_reference_that_does_not_fit() -> None:
    listener = Listener(MicArraySection())
    x = np.zeros((1600, 6), np.float32)
    with pytest.raises(ValueError, match="sample-aligned"):
        listener.feed(x, 0.0, np.zeros(1500, np.float32))
    with pytest.raises(ValueError, match="mono"):
        listener.feed(x, 0.0, np.zeros((1600, 2), np.float32))
    with pytest.raises(ValueError, match=r"expected 6.*got 4"):
        listener.feed(np.zeros((1600, 4), np.float32), 0.0)


@pytest.fixture(scope="module")
def room() -> Scene:
    """RT60 0.6 s, SNR 10 dB, a fan on a shelf, one talker behind the array, then the far end on the
    loudspeaker under the screen."""
    return meeting(CIRCLE, rt60_s=0.6, snr_db=10.0, talkers=((135.0, 1.5),), seed=3)


def _blocks(scene: Scene, heard: list[Heard], role: str) -> list[Heard]:
    """Blocks during which only ``role`` speaks (by the scene's truth), the fan aside."""
    out = []
    for h in heard:
        roles = {e.role for e in scene.active(h.t - 0.032)}
        if roles == {role}:
            out.append(h)
    return out


def test_far_end_is_marked_and_never_a_talker(room: Scene) -> None:
    heard = Listener(MicArraySection()).feed(room.samples, 0.0, room.reference)
    far = _blocks(room, heard, "farend")
    local = _blocks(room, heard, "talker")
    assert len(far) > 40 and len(local) > 40
    assert [h.t for h in far if h.azimuth_deg is not None] == []  # no far-end block reported as a talker
    assert sum(h.farend for h in far) >= 0.8 * len(far)
    assert [h.t for h in local if h.farend] == []
    # the talker behind the array is found, all around
    found = [h.azimuth_deg for h in local if h.azimuth_deg is not None]
    assert len(found) >= 0.7 * len(local)
    assert float(np.median([err(a, 135.0) for a in found])) < 5.0
    # the fan is learnt as noise, the loudspeaker as the far end, and neither is a talker
    kinds = {s.kind for s in heard[-1].sources if err(s.azimuth_deg, -110.0) < 12.0}
    assert kinds == {"noise"}
    assert not any(s.kind == "talker" and err(s.azimuth_deg, 5.0) < 12.0 for s in heard[-1].sources)


def test_a_talker_under_the_loudspeaker_is_heard_at_their_place_once_the_far_end_is_silent() -> None:
    """`roombox bench farend`'s scenario (27 s of it): the far end on a ceiling loudspeaker above dave's chair,
    RT60 0.3 s / SNR 20 dB. With the playback reference, no far-end block is reported as a talker, and while
    the far end is silent the talkers are heard where they sit, dave too (his voice lands on the loudspeaker's
    learnt source, reported as his once the far end is silent): within 10 deg in 85 % of the local speech
    blocks (72 % without that)."""
    from appliance.bench.farend import listen, render_cell

    scn, audio, samples = render_cell(0.3, 20.0, "circle6", "ceiling", 27.0)
    tally = listen(scn, audio, samples, True)
    assert tally.farend_only > 50 and tally.farend_reported == 0
    assert tally.local_only > 100 and tally.local_within_10 >= 0.85 * tally.local_only, tally


def test_the_first_block_of_a_far_end_turn_is_far_end(room: Scene) -> None:
    """The block the far end starts in holds a few tens of ms of it in a window of silence: the window's share
    cannot tell yet, but the reference's onset does, so not even that block can be taken for a talker."""
    heard = Listener(MicArraySection()).feed(room.samples, 0.0, room.reference)
    for start, _ in room.activity["farend"]:
        first = next(h for h in heard if h.t > start)  # its window ends within a hop of the far end's start
        assert first.farend and first.azimuth_deg is None, (start, first)


def test_the_first_words_after_a_quiet_start_are_heard() -> None:
    """The stream opens on 1.5 s of fan alone. Silero hears that background before it rests between
    spurts (from a blank state it is slow to take the first words for speech): the talker is reported
    within 0.6 s of starting to talk."""
    room = meeting(CIRCLE, rt60_s=0.6, snr_db=10.0, seed=0)  # as `roombox bench listening`'s first scene
    heard = Listener(MicArraySection()).feed(room.samples[: int(4.0 * FS)], 0.0, room.reference[: int(4.0 * FS)])
    start = room.activity["talker0"][0][0]
    first = next(h.t for h in heard if h.azimuth_deg is not None)
    assert start < first - 0.032 < start + 0.6, (start, first)


def _write(tmp_path: Path, scene: Scene, n: int) -> tuple[Path, Path, Path]:
    audio, ref, config = tmp_path / "array.wav", tmp_path / "reference.wav", tmp_path / "config.toml"
    wavfile.write(audio, FS, np.round(scene.samples[:n] * 32767).astype(np.int16))
    wavfile.write(ref, FS, scene.reference[:n])
    config.write_text("[mic_array]\nsample_rate = 16000\n", encoding="utf-8")
    return audio, ref, config


def test_roombox_doa_with_a_reference(tmp_path: Path, room: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    n = 4 * FS
    audio, ref, config = _write(tmp_path, room, n)
    assert main(["doa", "--audio", str(audio), "--config", str(config), "--reference", str(ref)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == (n - 1024) // 1024 + 1
    assert {"t", "azimuth_deg", "speech", "level_db", "confidence", "farend", "sources"} <= set(lines[0])
    # without --reference: the same keys, nothing marked far end
    assert main(["doa", "--audio", str(audio), "--config", str(config)]) == 0
    plain = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(plain[0]) == set(lines[0]) and not any(p["farend"] for p in plain)
    # the foundation's estimator keeps the foundation's lines
    srp = tmp_path / "srp.toml"
    srp.write_text(config.read_text(encoding="utf-8") + '[doa]\nestimator = "srp-phat"\n', encoding="utf-8")
    assert main(["doa", "--audio", str(audio), "--config", str(srp)]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert set(first) == {"t", "azimuth_deg", "speech", "level_db", "confidence", "farend"}
    assert first["farend"] is False  # the plain estimator has no reference: it marks nothing far end
    # the calibration's gain: both estimators hear the array that much louder
    for name, extra in (("gained", ""), ("gained-srp", '[doa]\nestimator = "srp-phat"\n')):
        gained = tmp_path / f"{name}.toml"
        gained.write_text(
            config.read_text(encoding="utf-8") + extra + "[calibration]\ngain_db = 12.0\n", encoding="utf-8"
        )
        assert main(["doa", "--audio", str(audio), "--config", str(gained)]) == 0
        louder = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        base = plain if not extra else [first]
        assert louder[0]["level_db"] - base[0]["level_db"] == pytest.approx(12.0, abs=0.2)


@pytest.mark.parametrize(
    ("rate", "channels", "frames", "message"),
    [
        (48000, 1, 4 * FS, r"48000 Hz.*16000 Hz"),
        (FS, 2, 4 * FS, r"2 channels.*mono"),
        (FS, 1, 3 * FS, r"48000 samples but the array recording has 64000"),
    ],
)
def test_roombox_doa_refuses_a_reference_that_does_not_fit(
    tmp_path: Path, room: Scene, capsys: pytest.CaptureFixture[str], rate: int, channels: int, frames: int, message: str
) -> None:
    audio, ref, config = _write(tmp_path, room, 4 * FS)
    wavfile.write(ref, rate, np.zeros((frames, channels), np.int16))
    assert main(["doa", "--audio", str(audio), "--config", str(config), "--reference", str(ref)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "reference.wav" in out.err and len(out.err.strip().splitlines()) == 1
    import re

    assert re.search(message, out.err), out.err


def test_a_reference_that_is_what_the_mics_hear_is_far_end() -> None:
    x = plane_wave(CIRCLE, 140.0, n=FS)  # white noise from seed 0, arriving from 140 degrees
    ref = np.random.default_rng(0).standard_normal(FS).astype(np.float32)  # the same noise, dry
    heard = Listener(MicArraySection()).feed(x, 0.0, 0.1 * ref)
    assert all(h.farend for h in heard[4:]) and all(h.azimuth_deg is None for h in heard)


@pytest.mark.parametrize(("rate", "block_ms"), [(48000, 64.0), (96000, 64.0), (16000, 8.0)])
def test_the_far_end_is_heard_at_any_rate_and_block(rate: int, block_ms: float) -> None:
    """A sweep: at 48 or 96 kHz with a playback reference (a ReSpeaker preset at the rate its firmware offers),
    the hearing failed on the stream's first block ("window of 3072 samples is too short: need at least
    4096") and the live mic array was lost and retried for ever; so did a short block at 16 kHz."""
    x = plane_wave(CIRCLE, 140.0, n=rate)  # the noise of seed 0 (its geometry made for 16 kHz: no matter here)
    ref = np.random.default_rng(0).standard_normal(rate).astype(np.float32)
    mic = MicArraySection(sample_rate=rate)
    heard = Listener(mic, doa=DoaConfig(vad="energy", block_ms=block_ms, hop_ms=block_ms / 2)).feed(x, 0.0, 0.1 * ref)
    late = [h for h in heard if h.t > 0.3]
    assert late and all(h.farend for h in late) and all(h.azimuth_deg is None for h in heard)


def test_a_ceiling_loudspeaker_is_not_a_seated_talker() -> None:
    """6-mic circle, RT60 0.6 s, SNR 10 dB: a voice from a loudspeaker 1.6 m above the array (60 degrees up),
    then a seated talker; no playback reference, so only the geometry tells them apart."""
    from appliance.bench.doa import speech_signal
    from appliance.bench.listening import Emitter, place, render_scene

    above, seated = speech_signal(FS, seed=1), speech_signal(FS, seed=2)
    n = above.size + seated.size + 3 * FS
    scene = render_scene(
        CIRCLE,
        [
            Emitter("ceiling", 30.0, 0.9, 1.6, place(above, 0.5, n, FS)),
            Emitter("seated", -60.0, 1.8, 0.1, place(seated, 1.5 + above.size / FS, n, FS)),
        ],
        FS,
        n / FS,
        rt60_s=0.6,
        snr_db=10.0,
    )
    heard = Listener(MicArraySection()).feed(scene.samples, 0.0)
    ceiling = [h for h in heard if [e.name for e in scene.active(h.t - 0.032)] == ["ceiling"]]
    seated_blocks = [h for h in heard if [e.name for e in scene.active(h.t - 0.032)] == ["seated"]]
    assert len(ceiling) > 30 and len(seated_blocks) > 30
    assert sum(h.azimuth_deg is not None for h in ceiling) <= 0.1 * len(ceiling)
    overhead = [s for s in heard[-1].sources if err(s.azimuth_deg, 30.0) < 10.0]
    assert overhead and all(s.kind == "above" and s.elevation_deg > 45.0 for s in overhead)
    found = [h.azimuth_deg for h in seated_blocks if h.azimuth_deg is not None]
    assert len(found) >= 0.7 * len(seated_blocks)
    assert float(np.median([err(a, -60.0) for a in found])) < 5.0


def test_the_voice_gate_listens_towards_the_talker() -> None:
    """Silero's input is the mics delayed and summed towards the attended source: against noise that is
    independent per mic, the steered channel keeps the talker and thins the noise (the mean of the mics
    does not, for a talker off the array's axis)."""
    n = 4096
    clean = plane_wave(CIRCLE, 120.0, n=n)
    noise = 0.5 * np.random.default_rng(5).standard_normal(clean.shape).astype(np.float32)
    listener = Listener(MicArraySection(), doa=DoaConfig(vad="silero"))
    assert listener.silero is not None
    listener._steer_az = 120.0
    steered = listener._steered(clean + noise)
    plain = (clean + noise).mean(axis=1)
    target = plane_wave(CIRCLE[:1] * 0.0, 0.0, n=n)[:, 0]  # the source as heard at the array's centre

    def snr(y: np.ndarray) -> float:
        g = float(np.dot(y, target) / np.dot(target, target))
        return 10.0 * np.log10(float(np.sum((g * target) ** 2)) / float(np.sum((y - g * target) ** 2)))

    assert snr(steered) > snr(plain) + 3.0, (snr(steered), snr(plain))


def test_a_door_and_typing_are_not_a_talker_with_the_default_gate() -> None:
    """The hearing bench's door slam and burst of typing, through a reverberant room: the energy gate
    reports them as a talker, the default (Silero) gate reports nothing."""
    from appliance.bench.hearing import impulse_sound
    from appliance.bench.listening import Emitter, place, render_scene

    rng = np.random.default_rng(2)
    door, typing = impulse_sound("door", FS, rng), impulse_sound("typing", FS, rng)
    n = int(4.0 * FS)
    scene = render_scene(
        CIRCLE,
        [
            Emitter("door", -70.0, 2.5, 0.0, place(door * 0.1, 1.0, n, FS)),
            Emitter("typing", 40.0, 0.8, -0.2, place(typing * 0.1, 2.2, n, FS)),
        ],
        FS,
        n / FS,
        rt60_s=0.4,
        snr_db=20.0,
    )
    by_energy = Listener(MicArraySection(), doa=DoaConfig(vad="energy")).feed(scene.samples, 0.0)
    by_silero = Listener(MicArraySection(), doa=DoaConfig()).feed(scene.samples, 0.0)
    assert any(h.speech for h in by_energy)  # the energy gate fires: the test can fail
    assert not any(h.azimuth_deg is not None for h in by_silero)
    assert sum(h.speech for h in by_silero) <= 2


class _CountingModel:
    """The real Silero model, counting the windows it is run on."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.calls = 0

    def process(self, windows: np.ndarray) -> np.ndarray:
        self.calls += windows.shape[0]
        return self.model.process(windows)  # type: ignore[attr-defined]

    def reset(self) -> None:
        self.model.reset()  # type: ignore[attr-defined]


def test_a_new_source_is_a_talker_after_a_confirmed_spurt_and_the_network_rests_between_spurts() -> None:
    """A 0.12 s word from a new place (Silero hears it for a moment, as it hears a chair scrape), a
    talker's sentence from there, silence, and the same short word again. The first word is not
    reported until its spurt has lasted silero.MIN_SPEECH_S; the second, from a talker already heard, at
    once. Between spurts, in the quiet, the network is not run at all."""
    from appliance.bench.listening import Emitter, place, render_scene
    from drivers.simroom.assets import arctic_clip

    speech = arctic_clip(FS).astype(np.float64)
    speech *= 0.1 / np.sqrt(np.mean(speech**2))
    word = speech[int(0.4 * FS) : int(0.52 * FS)] * np.hanning(int(0.12 * FS))
    n = int(9.0 * FS)
    signal = place(word, 1.0, n, FS) + place(speech[: 3 * FS], 2.5, n, FS) + place(word, 7.5, n, FS)
    scene = render_scene(CIRCLE, [Emitter("talker", 60.0, 1.5, 0.3, signal)], FS, n / FS, rt60_s=0.4, snr_db=20.0)
    listener = Listener(MicArraySection(), doa=DoaConfig(vad="silero"))
    assert listener.silero is not None
    model = _CountingModel(listener.silero._model)
    listener.silero._model = model  # type: ignore[assignment]
    rows: list[tuple[float, bool, Heard, int]] = []
    for s in range(0, n, 512):
        before = model.calls
        for h in listener.feed(scene.samples[s : s + 512], s / FS):
            rows.append((h.t, listener.silero.speaking, h, model.calls - before))
    first = [h for t, voiced, h, _ in rows if voiced and t < 2.0]
    again = [h for t, voiced, h, _ in rows if voiced and 7.0 < t < 8.5]
    talk = [h for t, _, h, _ in rows if 3.0 <= t < 5.0]
    assert len(first) >= 4 and len(again) >= 2 and len(talk) > 25
    assert not any(h.speech or h.azimuth_deg is not None for h in first[:3]), "a new source reported at once"
    assert again[0].speech and again[0].azimuth_deg is not None, "a known talker's short word held back"
    assert sum(h.azimuth_deg is not None and err(h.azimuth_deg, 60.0) < 10.0 for h in talk) >= 0.9 * len(talk)
    assert sum(c for t, _, _, c in rows if 6.5 <= t < 7.4) == 0, "the network ran in the quiet"
    assert sum(c for t, _, _, c in rows if 3.0 <= t < 5.0) >= 2 * len(talk) - 2  # but on every hop of talk


@pytest.mark.parametrize("soft_min_p", [listening.SOFT_MIN_P, 0.0], ids=["default", "without"])
def test_typing_where_a_talker_was_heard_is_not_that_talker(monkeypatch: pytest.MonkeyPatch, soft_min_p: float) -> None:
    """A talker talks, then types on their laptop at the same place: the typing is lively and comes from
    the talker's direction, but Silero, which heard it, is sure nobody talks, so no azimuth is reported.
    Without that veto (``SOFT_MIN_P = 0``) the keys would be taken for the talker's voice."""
    from appliance.bench.hearing import impulse_sound
    from appliance.bench.listening import Emitter, place, render_scene
    from drivers.simroom.assets import arctic_clip

    monkeypatch.setattr(listening, "SOFT_MIN_P", soft_min_p)
    speech = arctic_clip(FS).astype(np.float64)
    speech *= 0.1 / np.sqrt(np.mean(speech**2))
    typing = impulse_sound("typing", FS, np.random.default_rng(5))
    typing *= 0.1 / np.sqrt(np.mean(typing**2))
    n = int(8.0 * FS)
    signal = place(speech[: 3 * FS], 1.0, n, FS) + place(typing, 5.5, n, FS)
    scene = render_scene(CIRCLE, [Emitter("talker", 60.0, 1.5, 0.3, signal)], FS, n / FS, rt60_s=0.4, snr_db=20.0)
    listener = Listener(MicArraySection(), doa=DoaConfig(vad="silero"))
    heard = [h for s in range(0, n, 512) for h in listener.feed(scene.samples[s : s + 512], s / FS)]
    talk = [h for h in heard if 2.0 <= h.t < 3.8]
    keys = [h for h in heard if 5.5 <= h.t < 5.5 + typing.size / FS + 0.2]
    assert sum(h.azimuth_deg is not None and err(h.azimuth_deg, 60.0) < 10.0 for h in talk) >= 0.9 * len(talk)
    lively = [h for h in keys if h.level_db > (listener.vad.floor_db or 0.0) + listening.LIVELY_DB]
    assert len(lively) >= 5, "the typing is not lively: the test shows nothing"
    reported = [h for h in keys if h.azimuth_deg is not None]
    if soft_min_p > 0.0:
        assert not reported, [(round(h.t, 2), h.azimuth_deg) for h in reported]
    else:
        assert reported, "typing is no longer taken for the talker even without the veto: is the veto needed?"


@pytest.mark.parametrize("positions", [SQUARE, CIRCLE, LINEAR], ids=["square4", "circle6", "linear4"])
def test_the_compiled_evidence_gives_the_numpy_estimates(positions: np.ndarray) -> None:
    """The kernels (appliance.perception.kernels) do the numpy path's arithmetic: the same estimates, block
    by block, in speech (the floor's weights) and out of it, one and two sources, on a reverberant room with
    a fan and a far end."""
    d = DoaConfig()
    scene = meeting(positions, rt60_s=0.6, snr_db=10.0, seed=5)
    srps = [
        SoftSrp(positions, FS, d.block_ms, d.fmin_hz, d.fmax_hz, d.grid_deg, hop_ms=64.0, compiled=c)
        for c in (True, False)
    ]
    assert srps[0]._kernels is not None and srps[1]._kernels is None
    mic = MicArraySection(sample_rate=FS, positions=[tuple(p) for p in positions.tolist()])
    assert Listener(mic).srp._kernels is not None and Listener(mic, compiled=False).srp._kernels is None
    x = scene.samples
    n = srps[0].block_len
    counts, near, total = [0, 0], 0, 0
    for k, start in enumerate(range(0, x.shape[0] - n, n)):
        block = x[start : start + n]
        if k % 5 == 4:
            block = np.asfortranarray(block)  # any layout
        levels = [s.prepare(block) for s in srps]
        assert levels[0] == pytest.approx(levels[1], abs=1e-3)
        speech, sources = k % 3 != 0, 1 + k % 2
        got, want = (s.evidence(speech, sources, 0.3, 0.0) for s in srps)
        assert len(got) == len(want), (k, got, want)
        for a, b in zip(got, want, strict=True):
            total += 1
            near += err(a.azimuth_deg, b.azimuth_deg) < 0.01 and a.elevation_deg == b.elevation_deg
            assert a.weight == pytest.approx(b.weight, abs=1e-4) and a.height == pytest.approx(b.height, abs=1e-4)
        counts[0] += len(got)
        floors = [s.floor for s in srps]
        assert floors[0] is not None and floors[1] is not None
        np.testing.assert_allclose(floors[0], floors[1], rtol=1e-5)
    assert total > 300 and counts[0] > 0
    assert near >= 0.995 * total, (near, total)  # a tie between two grid directions may fall either way


def test_without_its_compiled_kernels_the_evidence_says_so_and_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No numba, or no writable cache for it: a warning naming the cause, and the numpy path's estimates."""
    from appliance.perception import evidence

    evidence._warm_kernels.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "appliance.perception.kernels", None)  # as if not importable
    monkeypatch.delattr(importlib.import_module("appliance.perception"), "kernels")
    try:
        with caplog.at_level("WARNING", logger="appliance.perception.evidence"):
            srp = soft_srp(CIRCLE)
        assert srp._kernels is None
        assert "without its compiled kernels" in caplog.text and "NUMBA_CACHE_DIR" in caplog.text
        (c,) = srp.analyse(plane_wave(CIRCLE, 101.5)[: srp.block_len], speech=False)
        assert err(c.azimuth_deg, 101.5) < 1.5
    finally:
        monkeypatch.undo()
        evidence._warm_kernels.cache_clear()
    assert soft_srp(CIRCLE)._kernels is not None


def test_the_fast_transforms_are_scipy_fft() -> None:
    """evidence.rfft / irfft skip scipy.fft's dispatch: the same numbers as scipy.fft."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 7, 256)).astype(np.float32)
    spec = rfft(x)
    assert spec.dtype == np.complex64 and spec.shape == (6, 7, 129)
    np.testing.assert_allclose(spec, scipy.fft.rfft(x, axis=-1), rtol=1e-5, atol=1e-4)
    y = irfft(spec[2, 3], 256)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x[2, 3], atol=1e-5)


def test_the_private_pocketfft_is_used_only_when_its_probe_runs_and_agrees() -> None:
    """A scipy release that changes the private r2c/c2r falls back to scipy.fft at import, not on a block."""
    from types import SimpleNamespace

    from appliance.perception import evidence

    pp = importlib.import_module("scipy.fft._pocketfft.pypocketfft")
    assert evidence._transforms(pp)[0] is not evidence._scipy_rfft  # this scipy: the fast path
    x = np.random.default_rng(4).standard_normal((3, 64)).astype(np.float32)
    changed = (
        None,  # no such module
        SimpleNamespace(r2c=lambda x, axes, forward, inorm, out: pp.r2c(x, axes, forward, inorm, out, 1), c2r=pp.c2r),
        SimpleNamespace(r2c=pp.r2c, c2r=lambda x, axes, n, forward, inorm, out, nthreads: pp.c2r(x, axes, n, True)),
        SimpleNamespace(r2c=lambda x, axes, forward, inorm, out, nthreads: pp.r2c(x, axes, inorm, forward), c2r=pp.c2r),
    )
    for module in changed:
        fast_rfft, fast_irfft = evidence._transforms(module)
        assert (fast_rfft, fast_irfft) == (evidence._scipy_rfft, evidence._scipy_irfft), module
        np.testing.assert_allclose(fast_irfft(fast_rfft(x)[1], 64), x[1], atol=1e-5)


def test_one_long_chunk_and_many_short_ones_hear_the_same() -> None:
    """The listener's buffers make room for a chunk longer than they hold (a driver's long read)."""
    mic = MicArraySection()
    x = np.concatenate([plane_wave(CIRCLE, -70.0, n=FS, seed=4), plane_wave(CIRCLE, 35.0, n=2 * FS, seed=5)])
    ref = np.asarray(0.05 * np.random.default_rng(8).standard_normal(x.shape[0]), dtype=np.float32)
    whole = Listener(mic).feed(x, 1.0, ref)
    listener = Listener(mic)
    parts: list[Heard] = []
    for s in range(0, x.shape[0], 512):
        parts += listener.feed(x[s : s + 512], 1.0 + s / FS, ref[s : s + 512])
    assert len(whole) == len(parts) == (x.shape[0] - 1024) // 1024 + 1
    assert [h.to_json() for h in parts] == [h.to_json() for h in whole]
    assert any(err(src["azimuth_deg"], 35.0) < 3.0 for src in whole[-1].to_json()["sources"])
