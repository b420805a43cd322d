"""The voice gate's beam: delay-and-sum until the room's background is learnt, then MVDR against it."""

from __future__ import annotations

import numpy as np

from appliance.config import DoaConfig, MicArraySection
from appliance.perception.beam import MIN_LEARNT, VoiceBeam
from appliance.perception.listening import Listener
from tests.test_doa import CIRCLE, FS, plane_wave

HOP = 1024


def hops(x: np.ndarray) -> list[np.ndarray]:
    return [x[k : k + HOP] for k in range(0, x.shape[0] - HOP + 1, HOP)]


def power(beam: VoiceBeam, x: np.ndarray, azimuth: float) -> float:
    return float(np.mean(np.concatenate([beam.steer(h, azimuth) for h in hops(x)]) ** 2))


def test_once_it_has_heard_the_room_the_beam_keeps_a_fan_out_and_the_talker_in() -> None:
    rng = np.random.default_rng(4)
    n = 48 * HOP
    background = plane_wave(CIRCLE, 10.0, n=n, seed=1) + 0.003 * rng.standard_normal((n, 6)).astype(np.float32)
    talker = plane_wave(CIRCLE, 120.0, n=n, seed=2)
    fixed, learnt = VoiceBeam(CIRCLE, FS, HOP), VoiceBeam(CIRCLE, FS, HOP)
    quiet = hops(background[: 32 * HOP])
    for k, h in enumerate(quiet):
        learnt.learn(h)
        assert learnt.adaptive == (k + 1 >= MIN_LEARNT)
    later = slice(32 * HOP, n)  # a stretch the beam did not learn from
    snr_fixed = power(fixed, talker[later], 120.0) / power(fixed, background[later], 120.0)
    snr_learnt = power(learnt, talker[later], 120.0) / power(learnt, background[later], 120.0)
    # about 7 dB with the default loading (1.0: robust to an azimuth a little off, at some of the null's depth)
    assert 10 * np.log10(snr_learnt / snr_fixed) > 5.0, (snr_fixed, snr_learnt)
    # distortionless: the talker comes through as delay-and-sum passes it
    a = np.concatenate([fixed.steer(h, 120.0) for h in hops(talker[later])])
    b = np.concatenate([learnt.steer(h, 120.0) for h in hops(talker[later])])
    assert abs(10 * np.log10(np.mean(b**2) / np.mean(a**2))) < 0.5
    assert np.corrcoef(a, b)[0, 1] > 0.98


def test_the_listener_learns_the_background_in_quiet_hops() -> None:
    """A fan alone for 6 s: the listener's voice gate has learnt it and beams with MVDR."""
    n = 6 * FS
    fan = 0.1 * plane_wave(CIRCLE, -40.0, n=n, seed=3)
    listener = Listener(MicArraySection(), doa=DoaConfig(vad="silero"))
    fixed = Listener(MicArraySection(), doa=DoaConfig(vad="silero"), adaptive_beam=False)  # the bench's listener+ds
    assert not listener.beam.adaptive
    for s in range(0, n, 512):
        listener.feed(fan[s : s + 512], s / FS)
        fixed.feed(fan[s : s + 512], s / FS)
    assert listener.beam.adaptive
    assert not fixed.beam.adaptive


def test_a_dead_mic_or_digital_silence_leaves_the_beam_finite() -> None:
    """A mic that delivers zeros, or a room in digital silence, while the beam learns: the loading keeps the
    background's matrix invertible and the output finite (delay-and-sum-like at worst)."""
    rng = np.random.default_rng(6)
    background = 0.01 * rng.standard_normal((16 * HOP, 6)).astype(np.float32)
    background[:, 2] = 0.0
    talker = plane_wave(CIRCLE, -30.0, n=4 * HOP, seed=7)
    for quiet in (background, np.zeros_like(background)):
        beam = VoiceBeam(CIRCLE, FS, HOP)
        for h in hops(quiet):
            beam.learn(h)
        assert beam.adaptive
        out = np.concatenate([beam.steer(h, -30.0) for h in hops(talker)])
        assert np.all(np.isfinite(out)) and np.mean(out**2) > 0.1 * np.mean(talker[:, 0] ** 2)
