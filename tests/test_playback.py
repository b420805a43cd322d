"""The far end's sound on the room's loudspeaker and the playback reference (drivers/audio/speaker.py,
appliance/streaming/playback.py).

The reference ring is tested on a VirtualClock. The speaker is tested through the real PortAudio -> ALSA ->
PulseAudio stack: test_mics's ``pulse`` fixture starts a PulseAudio server of the test's own (its own
runtime directory and Unix socket) whose default sink is a null sink; the box plays into PortAudio's
``pulse`` device and the test records the sink's monitor with the box's own capture driver, on the same
clock, and finds what was played there.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.config import parse_config
from appliance.messages import DeviceStatus
from appliance.perception.listening import Listener
from appliance.streaming.hub import AudioHub
from appliance.streaming.playback import Playback, PlaybackReference, far_end_audio
from appliance.supervisor import supervise
from common.clock import SYSTEM_CLOCK, VirtualClock
from drivers.audio.capture import ArrayBlock, PortAudioMicArray
from drivers.audio.devices import SoundDeviceBackend
from drivers.audio.speaker import OutputDevice, PortAudioSpeaker, SpeakerDeviceError, find_output
from drivers.base import SourceLost
from drivers.registry import DriverContext, open_device
from tests.test_janus import janus  # noqa: F401  (the fixtures, reused)
from tests.test_mics import PulseServer, pulse  # noqa: F401

RATE = 16000


def _tone(n: int, hz: float, rate: int = RATE, phase: float = 0.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(n) / rate + phase)).astype(np.float32)


# -- the reference ring, on a virtual clock ------------------------------------------------------------


def test_window_places_what_was_played_and_zeros_elsewhere() -> None:
    clock = VirtualClock(start=100.0)
    ref = PlaybackReference(RATE, keep_s=2.0)
    assert ref.reference_for(clock.now(), 320) is None and not ref.window(clock.now(), 320).any()
    played = np.arange(1, 1601, dtype=np.float32)  # 0.1 s, in 10 ms blocks stamped as the speaker does
    t_play = clock.advance(0.5)
    for k in range(10):
        ref.add(t_play + k * 160 / RATE, played[k * 160 : (k + 1) * 160])
    # a mic block straddling the start: zeros, then the first samples played
    w = ref.window(t_play - 0.005, 320)
    assert not w[:80].any() and np.array_equal(w[80:], played[:240])
    # one straddling the end
    w = ref.window(t_play + 0.095, 160)
    assert np.array_equal(w[:80], played[-80:]) and not w[80:].any()
    # a gap between two bursts stays zero
    ref.add(t_play + 0.2, np.full(160, 7.0, np.float32))
    w = ref.window(t_play + 0.09, 3200)
    assert np.array_equal(w[:160], played[-160:]) and not w[160:1760].any() and (w[1760:1920] == 7.0).all()
    # the hearing is spared the work when nothing was played near the block
    assert ref.reference_for(t_play - 5.0, 320) is None
    assert ref.reference_for(t_play + 3.0, 320) is None
    got = ref.reference_for(t_play + 0.205, 160)
    assert got is not None and (got == 7.0).any()
    # what is older than keep_s is forgotten
    ref.add(t_play + 5.0, np.ones(160, np.float32))
    assert not ref.window(t_play, 1600).any() and ref.window(t_play + 5.0, 160).all()


def test_stamps_that_go_back_replace_the_newer_chunks() -> None:
    ref = PlaybackReference(RATE)
    ref.add(10.0, np.ones(1600, np.float32))
    ref.add(10.05, np.full(160, 2.0, np.float32))  # the timeline was set afresh 50 ms back
    w = ref.window(10.0, 1600)
    assert (w[:800] == 1.0).all() and (w[800:960] == 2.0).all() and not w[960:].any()


def test_a_device_rate_reference_is_resampled_in_step_with_its_stamps() -> None:
    """The speaker hands over what it played at the device's rate (48 kHz here, 10 ms blocks); the ring keeps
    it at the mic array's rate, each sample where its time says."""
    ref = PlaybackReference(RATE)
    x48 = _tone(48000, 440.0, 48000)
    t0 = 3.0
    for k in range(0, 48000, 480):
        ref.add(t0 + k / 48000, x48[k : k + 480], 48000)
    w = ref.window(t0 + 0.2, 8000)  # well inside: the resampler's start is behind
    assert np.abs(w - _tone(8000, 440.0, RATE, phase=2 * np.pi * 440.0 * 0.2)).max() < 0.01


def test_the_listener_takes_the_window_as_its_reference() -> None:
    """What the box does per captured block: ``reference_for(block.t, n)`` fed with the block."""
    mic = parse_config({}).mic_array
    listener = Listener(mic)
    ref = PlaybackReference(RATE)
    clock = VirtualClock(start=50.0)
    rng = np.random.default_rng(3)
    far = (0.2 * rng.standard_normal(RATE * 2)).astype(np.float32)
    t_far = clock.now() + 0.5
    for k in range(0, far.size, 160):
        ref.add(t_far + k / RATE, far[k : k + 160])
    heard = []
    n_mics = len(mic.positions)
    for k in range(0, RATE * 3, 320):  # the mics hear the loudspeaker 5 ms after it played
        t = clock.now() + k / RATE
        played = ref.window(t - 0.005, 320)
        block = np.repeat(played[:, None], n_mics, axis=1) + 1e-4 * rng.standard_normal((320, n_mics))
        heard += listener.feed(block.astype(np.float32), t, reference=ref.reference_for(t, 320))
    farend = [h.farend for h in heard if t_far + 0.5 < h.t < t_far + 1.9]
    assert farend and np.mean(farend) > 0.9
    assert not any(h.azimuth_deg is not None for h in heard if t_far + 0.5 < h.t < t_far + 1.9)


@pytest.fixture(scope="module")
def far_end_only() -> tuple[np.ndarray, np.ndarray]:
    """The room's loudspeaker (50 degrees, 1.5 m) playing the far end into the default array, nobody local
    talking; and what was sent to the loudspeaker, sample-aligned."""
    from appliance.bench.doa import render_room, speech_signal

    mic = parse_config({}).mic_array
    far = speech_signal(RATE, seed=3)[: 3 * RATE]
    mics = render_room(mic.positions, 50.0, 1.5, far, RATE, rt60_s=0.3, snr_db=30.0, lead_s=0.5, seed=2)
    sent = np.concatenate([np.zeros(RATE // 2), far])[: len(mics)].astype(np.float32)
    return mics, np.pad(sent, (0, len(mics) - len(sent)))


@pytest.mark.parametrize("played", [False, True])
def test_the_box_hands_the_played_reference_to_the_hearing(
    far_end_only: tuple[np.ndarray, np.ndarray], played: bool, tmp_path: object
) -> None:
    """The wiring in the box: each captured block goes to the hearing with the reference covering its span.
    Without it the loudspeaker is taken for a talker at 50 degrees; with it, it is the far end."""
    from appliance.box import RoomBox
    from appliance.streaming.hub import EventBus, LatestFrame
    from drivers.base import AudioBlock
    from drivers.files import FileCamera, WavMicArray

    mics, sent = far_end_only
    clock = VirtualClock(start=500.0)
    cfg = parse_config({})
    playback = Playback(PortAudioSpeaker("room"), RATE, lambda: [], clock)
    t_mics = clock.now() + 0.25
    if played:  # what the speaker reported playing, 10 ms blocks, 3 ms before the mics hear it
        for k in range(0, len(sent), 160):
            if sent[k : k + 160].any():
                playback.reference.add(t_mics - 0.003 + k / RATE, sent[k : k + 160])
    events = EventBus(queue_size=100_000)
    seen = events.subscribe()
    box = RoomBox(
        cfg,
        FileCamera("none.mp4"),
        WavMicArray("none.wav"),
        None,  # type: ignore[arg-type]  # no frame ever comes: nothing to detect
        LatestFrame(),
        None,
        events,
        clock,
        playback=playback,
    )
    for k in range(0, len(mics) - 320, 320):
        box._on_audio(AudioBlock(t_mics + k / RATE, mics[k : k + 320], RATE))
    doas = []
    while not seen.empty():
        kind, d = seen.get_nowait()
        if kind == "doa" and t_mics + 1.0 < d["t"] < t_mics + 3.3:  # the far end talks
            doas.append(d)
    near_50 = np.mean([d["azimuth_deg"] is not None and abs(d["azimuth_deg"] - 50.0) < 15.0 for d in doas])
    if played:
        assert len(doas) > 25 and near_50 < 0.05, near_50
        assert box.hearing.listener._has_ref  # type: ignore[attr-defined]
    else:
        assert len(doas) > 25 and near_50 > 0.3, near_50


def test_sample_fifo_takes_pads_and_drops_the_oldest() -> None:
    from drivers.audio.fifo import SampleFifo

    q = SampleFifo()
    q.push(np.arange(5, dtype=np.float32))
    q.push(np.arange(5, 8, dtype=np.float32))
    out, n = q.take(3)
    assert n == 3 and out.tolist() == [0, 1, 2] and q.size == 5
    assert q.drop_oldest(2) == 3 and q.size == 2
    out, n = q.take(4)
    assert n == 2 and out.tolist() == [6, 7, 0, 0] and q.size == 0


def test_mix_sums_the_far_ends_at_the_mic_rate() -> None:
    a, b = AudioHub(max_seconds=5.0), AudioHub(max_seconds=5.0)
    janus_like = type("C", (), {"far_ends": {1: type("F", (), {"audio": a})(), 2: type("F", (), {"audio": b})()}})()
    assert far_end_audio([janus_like, object()]) == [a, b]
    playback = Playback(PortAudioSpeaker("s"), RATE, lambda: far_end_audio([janus_like]), VirtualClock())
    a.put(_tone(48000, 300.0, 48000), 48000, 0.0)
    b.put(_tone(16000, 500.0, 16000), 16000, 0.0)
    y = playback.mix()
    assert 15900 <= y.size <= 16000  # the 48 kHz resampler holds back a few samples
    want = _tone(16000, 300.0) + _tone(16000, 500.0)
    # the resampler's delay, if any, searched below half the mixture's period (300 + 500 Hz repeat every 160
    # samples: the correlation is as high at lag 160 as at 0, and rounding alone picked 160 on one machine)
    lag = int(np.argmax(np.correlate(y[2000:4000], want[2000:2100])[:80]))
    assert lag <= 2 and np.abs(y[4000:8000] - want[4000 - lag : 8000 - lag]).max() < 0.02
    assert playback.mix().size == 0  # nothing new
    janus_like.far_ends.pop(2)  # a far end that leaves is forgotten
    playback.mix()
    assert list(playback._inputs) == [a]


# -- the real PortAudio stack ------------------------------------------------------------------------------


def _corr_at(x: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """Where ``y`` lies in ``x`` (both 1-D) and the normalised correlation there."""
    n = len(x) + len(y)
    c = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(y, n)), n)[: len(x) - len(y) + 1]
    at = int(np.argmax(c))
    seg = x[at : at + len(y)]
    return at, float(c[at] / (np.linalg.norm(seg) * np.linalg.norm(y) + 1e-12))


class Recording:
    """The sink's monitor as captured: mono samples, and each sample's time from its block's stamp (the
    capture timeline may be set afresh while a sound server starts)."""

    def __init__(self, blocks: list[ArrayBlock]) -> None:
        self.samples = np.concatenate([b.samples.mean(axis=1) for b in blocks])
        self._starts = np.cumsum([0] + [len(b.samples) for b in blocks])
        self._t = [b.t for b in blocks]

    def time_of(self, i: int) -> float:
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._t[k] + (i - self._starts[k]) / RATE


async def _record_until(recorder: PortAudioMicArray, blocks: list[ArrayBlock], end: float) -> None:
    while SYSTEM_CLOCK.now() < end:
        blocks.append(await asyncio.wait_for(recorder.recv(), 30.0))


async def _stop(task: asyncio.Task[None], recorder: PortAudioMicArray) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await recorder.stop()


async def _play_and_record(
    volume: float, signal: np.ndarray, device_rate: int | None = None
) -> tuple[Recording, PlaybackReference, float, dict[str, int]]:
    """A far end (an AudioHub fed in real time, 20 ms chunks) through the playback path to the ``pulse``
    device, while the sink's monitor is recorded. Returns the recording, the reference, when the signal's
    first chunk arrived (clock) and the speaker's counters."""
    clock = SYSTEM_CLOCK
    cfg = parse_config(
        {"speakers": {"room": {"type": "sounddevice", "device": "pulse", "volume": volume, "device_rate": device_rate}}}
    )
    speaker = open_device("speaker", "room", cfg.speakers["room"], DriverContext(clock=clock))
    hub = AudioHub(max_seconds=2.0)
    playback = Playback(speaker, RATE, lambda: [hub], clock)
    recorder = PortAudioMicArray(SoundDeviceBackend(), "monitor", "pulse", 6, list(range(6)), RATE, clock=clock)
    events: list[DeviceStatus] = []
    await recorder.start()
    task = asyncio.create_task(supervise("speaker", playback.run, events.append, clock))
    blocks = []
    try:
        while not any(e.state == "running" for e in events):
            blocks.append(await asyncio.wait_for(recorder.recv(), 30.0))
        await _record_until(recorder, blocks, clock.now() + 2.0)  # both streams past a sound server's start
        arrived = clock.now()
        for k in range(0, signal.size, 320):  # the far end's packets, paced as they arrive
            hub.put(signal[k : k + 320], RATE, k / RATE)
            if k == 0:
                arrived = clock.now()
            await _record_until(recorder, blocks, arrived + (k + 320) / RATE)
        await _record_until(recorder, blocks, clock.now() + 0.6)
    finally:
        await _stop(task, recorder)
    assert [e.state for e in events][:2] == ["starting", "running"], events
    return Recording(blocks), playback.reference, arrived, speaker.counters


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from appliance.bench.doa import speech_signal

    rng = np.random.default_rng(11)
    x = speech_signal(RATE, seed=2)[: int(1.5 * RATE)].astype(np.float32)
    x = 0.4 * x / np.abs(x).max()
    burst = (0.3 * rng.uniform(-1.0, 1.0, RATE // 10)).astype(np.float32)  # marks the start
    return np.concatenate([burst, np.zeros(RATE // 10, np.float32), x])


@pytest.mark.parametrize("device_rate", [None, 48000])
def test_the_far_end_reaches_the_speaker_and_the_reference_lines_up(
    pulse: PulseServer,  # noqa: F811
    speech: np.ndarray,
    device_rate: int | None,
) -> None:
    recording, ref, arrived, counters = asyncio.run(_play_and_record(80.0, speech, device_rate))
    rec = recording.samples
    span_t0 = arrived - 0.5
    span = ref.window(span_t0, int(3.5 * RATE))
    assert np.isclose(np.abs(span).max(), 0.8 * np.abs(speech).max(), rtol=0.02)  # the volume
    # piece by piece (an underflow of the loaded machine inserts a gap in what is played): each 0.1 s piece
    # of what the far end said is in the sink's monitor (the null sink remixes mono to its 6 channels) and
    # in the reference, and both say when it was played, on the same clock
    heard, stamped, errors_ms = [], [], []
    for k in range(0, speech.size - 1600, 1600):
        piece = speech[k : k + 1600]
        if np.abs(piece).max() < 0.2:  # a quiet piece correlates poorly with either
            continue
        at, corr = _corr_at(rec, piece)
        at_ref, corr_ref = _corr_at(span, piece)
        heard.append(corr)
        stamped.append(corr_ref)
        errors_ms.append(1000.0 * (recording.time_of(at) - (span_t0 + at_ref / RATE)))
    delay_ms = 1000.0 * (span_t0 + _corr_at(span, speech[:1600])[0] / RATE - arrived)
    print(
        f"device_rate {device_rate}: far end's first packet -> its reference stamp {delay_ms:.1f} ms; capture "
        f"stamp - reference stamp, median {np.median(errors_ms):.1f} ms, range {min(errors_ms):.1f} .. "
        f"{max(errors_ms):.1f} ms over {len(errors_ms)} pieces; {counters}"
    )
    # most pieces whole in both (an underflow may cut one), at one offset between the two clocks' stamps (the
    # capture's timeline may still be settling at the first)
    assert len(heard) >= 8 and np.mean(np.array(heard) > 0.95) >= 0.8, heard
    assert np.mean(np.array(stamped) > 0.95) >= 0.8, stamped
    assert 0.0 < delay_ms < 500.0
    median = float(np.median(errors_ms))
    assert abs(median) < 60.0, errors_ms  # within the Listener's reach (farend_max_delay_ms, 60 ms)
    # steady: most pieces at that offset; on a loaded machine an underrun may shift a few by a block or two,
    # never beyond what the Listener's delay search covers (it searches again every few blocks)
    deviation = np.abs(np.array(errors_ms) - median)
    assert np.mean(deviation < 5.0) >= 0.5 and float(deviation.max()) < 40.0, errors_ms


def test_volume_zero_is_silence_and_no_reference(pulse: PulseServer, speech: np.ndarray) -> None:  # noqa: F811
    recording, ref, arrived, _ = asyncio.run(_play_and_record(0.0, speech[: RATE // 2]))
    rec = recording.samples
    assert rec.size > RATE and np.sqrt(np.mean(rec**2)) < 1e-4
    assert ref.added == 0 and ref.reference_for(arrived, RATE) is None


def test_speaker_errors_name_the_device(pulse: PulseServer) -> None:  # noqa: F811
    def speaker(**kw: object) -> PortAudioSpeaker:
        section = parse_config({"speakers": {"room": {"type": "sounddevice", **kw}}}).speakers["room"]
        s = open_device("speaker", "room", section, DriverContext())
        assert isinstance(s, PortAudioSpeaker)
        return s

    async def start(s: PortAudioSpeaker) -> None:
        await s.start()
        await s.stop()

    with pytest.raises(SourceLost, match=r"room: no output device matching 'Soundbar' \(outputs: .*pulse"):
        asyncio.run(start(speaker(device="Soundbar")))
    with pytest.raises(SourceLost, match=r"room: no output device 999 \(outputs: "):
        asyncio.run(start(speaker(device=999)))
    with pytest.raises(
        SpeakerDeviceError, match=r"room: device \d+ \(pulse\) refuses 2 channels at device_rate 768000"
    ):
        asyncio.run(start(speaker(device="pulse", device_rate=768000)))
    with pytest.raises(SpeakerDeviceError, match=r"room: device \d+ \(pulse\) has \d+ output channels, not 40"):
        asyncio.run(start(speaker(device="pulse", channels=40)))
    with pytest.raises(SpeakerDeviceError, match="matches 2 output devices"):
        find_output([_dev(0, "USB Audio A"), _dev(1, "USB Audio B")], "usb audio")


def _dev(index: int, name: str) -> OutputDevice:
    return OutputDevice(index, name, 2, 48000.0, False)


def test_a_missing_speaker_is_reported_and_retried_never_a_crash(pulse: PulseServer) -> None:  # noqa: F811
    """The box's supervisor over a playback whose speaker is not there: reported lost with the reason,
    retried with back-off; then a speaker that vanishes while playing is reported and comes back."""
    section = parse_config({"speakers": {"room": {"type": "sounddevice", "device": "Soundbar"}}}).speakers["room"]
    speaker = open_device("speaker", "room", section, DriverContext())
    events: list[DeviceStatus] = []

    async def scenario() -> None:
        playback = Playback(speaker, RATE, lambda: [], SYSTEM_CLOCK)
        task = asyncio.create_task(supervise("speaker", playback.run, events.append, SYSTEM_CLOCK, retry_s=0.2))
        deadline = time.monotonic() + 20.0
        while sum(e.state == "lost" for e in events) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    lost = [e for e in events if e.state == "lost"]
    assert len(lost) >= 2 and "no output device matching 'Soundbar'" in lost[0].detail
    assert events[-1].state == "stopped"

    # a speaker that vanishes while playing: SourceLost from write()/check(), then it plays again
    good = PortAudioSpeaker("room", "pulse", RATE, stall_s=1.0)

    async def vanish() -> str:
        await good.start()
        try:
            good.write(np.zeros(320, np.float32))
            pulse.kill()
            began = time.monotonic()
            with pytest.raises(SourceLost) as gone:
                while time.monotonic() - began < 20.0:
                    good.check()
                    await asyncio.sleep(0.05)
        finally:
            await asyncio.wait_for(good.stop(), 15.0)
        pulse.start()
        await asyncio.wait_for(good.start(), 30.0)
        try:
            good.write(_tone(1600, 440.0))
            await asyncio.sleep(0.3)
            good.check()
        finally:
            await good.stop()
        return str(gone.value)

    message = asyncio.run(vanish())
    assert message.startswith("room: device ") and "(pulse)" in message


def test_a_missing_mic_array_does_not_break_a_speaker_opening_at_the_same_time(pulse: PulseServer) -> None:  # noqa: F811
    """A mic array that is not there makes PortAudio list the devices afresh (a device may have been plugged
    in), which ends and restarts PortAudio; a speaker opening on another thread at that moment failed with
    "Error querying device" or "PortAudio not initialized" (a sweep: 60 times in 60). They take turns now."""
    from drivers.audio.capture import PortAudioMicArray
    from drivers.audio.devices import SoundDeviceBackend

    async def both() -> list[BaseException | None]:
        mic = PortAudioMicArray(SoundDeviceBackend(), "m", "NoSuchMic", 6, list(range(6)), RATE, open_timeout_s=10)
        speaker = PortAudioSpeaker("room", "pulse", RATE, open_timeout_s=10)
        got = await asyncio.gather(mic.start(), speaker.start(), return_exceptions=True)
        await speaker.stop()
        await mic.stop()
        return [g if isinstance(g, BaseException) else None for g in got]

    for _ in range(4):
        mic_error, speaker_error = asyncio.run(both())
        assert isinstance(mic_error, SourceLost) and "no input device matching 'NoSuchMic'" in str(mic_error)
        assert speaker_error is None, speaker_error


def test_a_mic_array_plugged_in_while_the_speaker_plays_is_found(
    pulse: PulseServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PortAudio lists the devices once; listing afresh ends every stream. Before, with the speaker playing,
    a mic array plugged in later was never found. Now a PortAudio started in a new process is asked, the
    open streams close (the speaker is lost, its supervisor opens it again) and the devices are listed
    afresh. The device "plugged in" is an ALSA one that ~/.asoundrc defines when the test writes it."""
    from drivers.audio.capture import PORTAUDIO_RESTART
    from drivers.hotplug import signature

    monkeypatch.setenv("HOME", str(tmp_path))
    speaker = PortAudioSpeaker("room", "pulse", RATE, stall_s=2.0)
    mic = PortAudioMicArray(SoundDeviceBackend(), "table", "roombox_late", 2, [0, 1], RATE, open_timeout_s=60)

    async def scenario() -> ArrayBlock:
        await speaker.start()
        try:
            with pytest.raises(SourceLost, match="no input device matching 'roombox_late'"):
                await mic.start()  # not plugged in: nothing anywhere
            assert not PORTAUDIO_RESTART.is_set()
            before = signature(mic.watches())
            (tmp_path / ".asoundrc").write_text("pcm.roombox_late {\n    type null\n}\n")  # plugged in
            assert signature(mic.watches()) != before  # what ends the box's pause for the lost array
            with pytest.raises(SourceLost, match="no input device matching 'roombox_late'"):
                await mic.start()  # seen afresh elsewhere; this PortAudio still holds the old list
            with pytest.raises(SourceLost, match="closed so that PortAudio can list a sound device plugged in"):
                speaker.check()
        finally:
            await speaker.stop()
        await mic.start()  # the first to open lists afresh: found
        try:
            block = await asyncio.wait_for(mic.recv(), 20.0)
        finally:
            await mic.stop()
        assert not PORTAUDIO_RESTART.is_set()
        await speaker.start()  # and the speaker plays again
        try:
            speaker.write(np.zeros(320, np.float32))
            speaker.check()
        finally:
            await speaker.stop()
        return block

    try:
        block = asyncio.run(scenario())
    finally:
        PORTAUDIO_RESTART.clear()  # whatever happened: the next tests' streams must not end
    assert block.samples.shape[1] == 2


def test_a_device_given_by_index_is_followed_when_the_indexes_move(
    pulse: PulseServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PortAudio's indexes move when it lists the devices afresh (a device plugged in before another). Before,
    a mic array given by its index opened whatever took the index, silently. Now it follows the device it
    opened (by its name), and never opens another in its place. ALSA devices that ~/.asoundrc defines, in
    the real PortAudio: a device defined before the array's takes its index."""
    monkeypatch.setenv("HOME", str(tmp_path))
    asoundrc = tmp_path / ".asoundrc"
    backend = SoundDeviceBackend()

    def plug(*names: str) -> int:
        asoundrc.write_text("".join(f"pcm.{n} {{\n    type null\n}}\n" for n in names))
        backend.refresh()
        return next(d.index for d in backend.devices() if d.name == names[-1])

    async def open_once(mic: PortAudioMicArray) -> str:
        await mic.start()
        try:
            await asyncio.wait_for(mic.recv(), 20.0)
            assert mic.device_info is not None
            return mic.device_info.name
        finally:
            await mic.stop()

    try:
        index = plug("roombox_table")
        mic = PortAudioMicArray(backend, "table", index, 2, [0, 1], RATE, open_timeout_s=60)
        assert asyncio.run(open_once(mic)) == "roombox_table"
        moved = plug("roombox_door", "roombox_table")  # listed before the array's: it takes the array's index
        assert moved != index and backend.devices()[index].name == "roombox_door"
        with caplog.at_level("WARNING", logger="drivers.audio.capture"):
            assert asyncio.run(open_once(mic)) == "roombox_table"
        assert f"device {index} is now 'roombox_door': following 'roombox_table'" in caplog.text
        plug("roombox_door")  # the array unplugged: the door's device has its index, and is not opened
        with pytest.raises(SourceLost, match=f"device {index} is now 'roombox_door', not 'roombox_table'"):
            asyncio.run(open_once(mic))
    finally:
        asoundrc.unlink(missing_ok=True)
        backend.refresh()  # the next tests' PortAudio lists their own devices


# -- end to end: a real Janus peer's sound on the speaker ------------------------------------------------


@pytest.mark.e2e
def test_a_janus_participants_sound_reaches_the_speaker(pulse: PulseServer, chromium: Any, janus: Any) -> None:  # noqa: F811
    """Chromium publishes a 440 Hz tone into a Janus VideoRoom; the box, in the room, subscribes and plays
    the far end's sound on the speaker (PortAudio's ``pulse`` device, a null sink): the sink's monitor has
    the tone, and the reference has what the monitor has, where the capture clock says."""
    from tests.janus_fixture import ROOM, wait_for
    from tests.test_janus import PUBLISH_JS, _Publishing

    box = _Publishing(janus, "videoroom", "VP8")
    page = chromium.new_page()
    try:
        page.goto(f"http://127.0.0.1:{janus.port}/janus/info")
        assert page.evaluate(PUBLISH_JS, [ROOM]) == {"ok": True}

        async def play_and_record() -> tuple[Recording, PlaybackReference, list[DeviceStatus], dict[str, int]]:
            pub = box.pub
            speaker = PortAudioSpeaker("room", "pulse", RATE)
            playback = Playback(speaker, RATE, lambda: far_end_audio([pub]), SYSTEM_CLOCK)
            recorder = PortAudioMicArray(SoundDeviceBackend(), "monitor", "pulse", 6, list(range(6)), RATE)
            events: list[DeviceStatus] = []
            task = asyncio.create_task(supervise("speaker", playback.run, events.append, SYSTEM_CLOCK))
            await recorder.start()
            try:
                far_ends = pub.far_ends  # type: ignore[attr-defined]  # the Janus connector's subscriptions
                await wait_for(lambda: any(f.audio.published > 20 for f in far_ends.values()), 20, "far sound")
                await wait_for(lambda: playback.written > RATE, 20, "a second of it played")
                blocks: list[ArrayBlock] = []
                await _record_until(recorder, blocks, SYSTEM_CLOCK.now() + 2.0)
            finally:
                await _stop(task, recorder)
            return Recording(blocks), playback.reference, events, speaker.counters

        recording, ref, events, counters = box.lt.run(play_and_record(), timeout=60)
        page.evaluate("window.farEnd.close()")
    finally:
        page.close()
        box.close()
    assert [e.state for e in events][:2] == ["starting", "running"], events
    rec = recording.samples[RATE // 2 :]  # the last 1.5 s
    spectrum = np.abs(np.fft.rfft(rec * np.hanning(rec.size)))
    peak_hz = np.argmax(spectrum) * RATE / rec.size
    rms = float(np.sqrt(np.mean(rec**2)))
    # piece by piece (the far end's packets arrive with jitter: an underrun leaves a gap in what is played,
    # and in the reference), each 0.1 s of the monitor is in the reference, within 50 ms of its capture stamp
    found = []
    for i in range(RATE // 2, recording.samples.size - 1600, 1600):
        t0 = recording.time_of(i)
        lag, corr = _corr_at(ref.window(t0 - 0.05, 1600 + RATE // 10), recording.samples[i : i + 1600])
        found.append(corr)
    print(
        f"\nthe far end's tone on the speaker: {peak_hz:.1f} Hz, rms {rms:.3f}; {counters}; pieces {np.round(found, 3)}"
    )
    assert abs(peak_hz - 440.0) < 5.0 and rms > 0.05  # 0.3 of full scale from Chromium, 0.8 volume
    assert np.median(found) > 0.95, found
