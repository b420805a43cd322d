"""The sound-card mic-array drivers (sounddevice, pyaudio) through the real PortAudio -> ALSA -> PulseAudio stack.

Each capture test starts its own PulseAudio server (its own runtime directory and Unix socket, nothing on the
network) with a 6-channel null sink laid out like the ReSpeaker USB 4-Mic's 6-channel firmware, plays a
rendered array recording into it with ``paplay``, and captures the sink's monitor through PortAudio's ALSA
``pulse`` device (``PULSE_SOURCE`` picks the monitor). The server is always killed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from appliance.config import DoaConfig, parse_config
from appliance.perception.hearing import Hearing
from common.settings import ConfigError
from drivers.audio.capture import ArrayBlock, InputDevice, MicDeviceError, PortAudioMicArray, find_device
from drivers.audio.devices import PortAudioMicSection
from drivers.audio.presets import PRESETS, place, rotation_matrix
from drivers.audio.resample import StreamResampler
from drivers.base import SourceLost
from drivers.registry import DriverContext, open_device

RATE = 16000
CHANNEL_MAP = "front-left,front-right,rear-left,rear-right,front-center,lfe"  # ALSA's order for 6 channels
SINK = "roomarray"
ROOT = Path(__file__).resolve().parent.parent
TALKER_AZ = 35.0


# -- the pure parts: presets, pose, config, resampling, device choice ----------------------------------


def test_presets_have_consistent_layouts() -> None:
    for key, p in PRESETS.items():
        assert len(p.geometry) == len(p.channel_map), key
        used = [*p.channel_map, *([] if p.playback_channel is None else [p.playback_channel])]
        assert len(set(used)) == len(used) and max(used) < p.channels, key
        assert np.allclose(np.mean(p.geometry, axis=0), 0.0, atol=1e-6), f"{key}: not centred"
        assert all(g[1] == 0.0 for g in p.geometry), f"{key}: not flat"
    usb = PRESETS["respeaker-usb-4mic"]
    assert (usb.channels, usb.channel_map, usb.playback_channel) == (6, (1, 2, 3, 4), 5)
    g = np.asarray(usb.geometry)
    assert math.dist(g[0], g[1]) == pytest.approx(0.032 * math.sqrt(2), abs=1e-6)  # square, 45.3 mm sides
    ring = np.asarray(PRESETS["respeaker-6mic"].geometry)
    assert np.linalg.norm(ring, axis=1) == pytest.approx([0.0463] * 6, abs=1e-6)
    uma = np.asarray(PRESETS["uma8"].geometry)
    assert np.linalg.norm(uma, axis=1) == pytest.approx([0.0] + [0.043] * 6, abs=1e-6)


def test_pose_rotates_then_moves_the_array() -> None:
    left, front = (-0.05, 0.0, 0.0), (0.0, 0.0, 0.05)
    # yaw 90: the array turns right, as azimuth does: its left mic now points forward, its front mic right
    assert np.asarray(place([left, front], (0.0, 0.0, 0.0), (90.0, 0.0, 0.0))) == pytest.approx(
        np.array([(0.0, 0.0, 0.05), (0.05, 0.0, 0.0)]), abs=1e-9
    )
    # pitch 90: a flat board hung on the wall, facing the room: its front edge points up
    assert place([front], (0.0, 0.0, 0.0), (0.0, 90.0, 0.0))[0] == pytest.approx((0.0, 0.05, 0.0), abs=1e-9)
    # roll 90: +x turns up
    assert place([(0.05, 0.0, 0.0)], (0.0, 0.0, 0.0), (0.0, 0.0, 90.0))[0] == pytest.approx((0.0, 0.05, 0.0), abs=1e-9)
    # rotation first, then the move; distances between microphones are kept
    moved = np.asarray(place(PRESETS["uma8"].geometry, (0.1, -0.2, 0.3), (37.0, -12.0, 5.0)))
    assert moved[0] == pytest.approx([0.1, -0.2, 0.3])
    g = np.asarray(PRESETS["uma8"].geometry)
    assert np.linalg.norm(moved[1:] - moved[0], axis=1) == pytest.approx(np.linalg.norm(g[1:], axis=1))
    r = rotation_matrix(37.0, -12.0, 5.0)
    assert r @ r.T == pytest.approx(np.eye(3), abs=1e-12) and np.linalg.det(r) == pytest.approx(1.0)


def test_config_places_a_preset_in_the_camera_frame() -> None:
    cfg = parse_config(
        {
            "mic_arrays": {
                "table": {
                    "type": "sounddevice",
                    "device": "ReSpeaker",
                    "preset": "respeaker-usb-4mic",
                    "array_position": [0.0, -0.2, 0.1],
                    "rotation_deg": [45.0, 0.0, 0.0],
                }
            }
        }
    )
    mic = cfg.mic_array
    assert isinstance(mic, PortAudioMicSection)
    expected = place(PRESETS["respeaker-usb-4mic"].geometry, (0.0, -0.2, 0.1), (45.0, 0.0, 0.0))
    assert np.asarray(mic.positions) == pytest.approx(np.asarray(expected))
    # the first mic (board -x) turned 45 degrees right: left-forward of the centre
    assert mic.positions[0] == pytest.approx((-0.032 / math.sqrt(2), -0.2, 0.1 + 0.032 / math.sqrt(2)))
    assert (mic.channels, mic.channel_map, mic.playback_channel) == (6, [1, 2, 3, 4], 5)
    # a custom board: geometry, its own channel map; channels default to what the map uses
    custom = parse_config(
        {
            "mic_arrays": {
                "m": {
                    "type": "pyaudio",
                    "device": 3,
                    "geometry": [[-0.03, 0, 0], [0.03, 0, 0], [0, 0, 0.03]],
                    "channel_map": [2, 0, 1],
                }
            }
        }
    ).mic_array
    assert isinstance(custom, PortAudioMicSection)
    assert (custom.channels, custom.playback_channel, custom.positions[2]) == (3, None, (0.0, -0.1, 0.03))


@pytest.mark.parametrize(
    "section, message",
    [
        ({"preset": "respeaker-9000"}, "Input should be 'respeaker-usb-4mic'"),
        ({"preset": "uma8", "geometry": [[0, 0, 0], [0.1, 0, 0]]}, "preset and geometry together"),
        ({"preset": "uma8", "positions": [[0, 0, 0], [0.1, 0, 0]]}, "positions (camera frame) and preset"),
        ({"rotation_deg": [10, 0, 0]}, "array_position and rotation_deg place a preset or geometry"),
        ({"preset": "respeaker-usb-4mic", "channel_map": [1, 2, 3]}, "channel_map has 3 channels for 4 microphones"),
        ({"preset": "respeaker-usb-4mic", "channel_map": [1, 2, 3, 6]}, "outside the device's 6 channels"),
        ({"preset": "respeaker-usb-4mic", "playback_channel": 2}, "playback_channel 2 is also a microphone"),
        ({"geometry": [[0, 0, 0], [0, 0, 0.0001]]}, "microphones 0 and 1 are at the same place"),
        ({"preset": "uma8", "array_position": [0, 3.0, 0]}, "more than 2 m from the camera"),
        ({"device_rate": 4000}, "[mic_arrays.m.device_rate]"),  # the file's key: no driver name in it
        # loaded, then failed at every start (a sweep of the live box)
        ({"device": ""}, "an empty device name: give a part of its name or its index, or leave device out"),
        ({"device": -5}, "a device index is 0 or more (roombox mics lists them), not -5"),
        ({"preset": "respeaker-usb-4mic", "channel_map": [-1, 1, 2, 3]}, "channel_map.0] Input should be greater"),
        ({"device": True}, "[mic_arrays.m.device] a number or a text, not true"),
        # inside lists too: pydantic alone reads true as 1 and "2" as 2
        ({"preset": "respeaker-usb-4mic", "channel_map": [1, "2", 3, 4]}, "[mic_arrays.m.channel_map.1] a number, not"),
        ({"geometry": [[0, 0, 0], [0.1, True, 0]]}, "[mic_arrays.m.geometry.1.1] a number, not true"),
    ],
)
def test_config_errors_name_the_problem(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"mic_arrays": {"m": {"type": "sounddevice", **section}}})
    assert message in str(e.value)


def test_a_placed_config_round_trips_through_toml() -> None:
    import tomllib

    from appliance.config import config_to_toml

    cfg = parse_config(
        {"mic_arrays": {"t": {"type": "sounddevice", "preset": "respeaker-6mic", "rotation_deg": [30.0, 0.0, 0.0]}}}
    )
    again = parse_config(tomllib.loads(config_to_toml(cfg)))
    assert again == cfg


def test_stream_resampler_equals_resample_poly_on_the_whole_signal() -> None:
    from scipy.signal import resample_poly

    rng = np.random.default_rng(3)
    for rate_in, up, down in ((48000, 1, 3), (44100, 160, 441)):
        x = rng.standard_normal((rate_in, 2)).astype(np.float32)
        whole = resample_poly(x.astype(np.float64), up, down, axis=0)
        rs = StreamResampler(rate_in, RATE, 2, engine="scipy")
        parts, i = [], 0
        while i < len(x):
            n = int(rng.integers(1, 3000))
            parts.append(rs.process(x[i : i + n]))
            i += n
        y = np.concatenate(parts)
        assert len(whole) - 20 <= len(y) <= len(whole)  # all but the filter's last half length
        assert np.max(np.abs(y - whole[: len(y)])) < 1e-5
        assert rs.input_time(len(y)) == pytest.approx(len(y) * rate_in / RATE)


def test_stream_resampler_with_soxr_is_time_aligned_whatever_the_blocks() -> None:
    from scipy.signal import butter, resample_poly, sosfilt

    rng = np.random.default_rng(4)
    for rate_in, up, down in ((48000, 1, 3), (44100, 160, 441)):
        # band-limited noise: both engines pass it unchanged, so they must agree sample by sample
        x = sosfilt(butter(6, 3000.0, fs=rate_in, output="sos"), rng.standard_normal((2 * rate_in, 2)), axis=0)
        x = x.astype(np.float32)
        whole = resample_poly(x.astype(np.float64), up, down, axis=0)
        outs = []
        for sizes in ((rate_in // 50,), (1, 7, 3000, 441)):
            rs = StreamResampler(rate_in, RATE, 2)
            assert rs.engine == "soxr"
            parts, i, k = [], 0, 0
            while i < len(x):
                n = sizes[k % len(sizes)]
                parts.append(rs.process(x[i : i + n]))
                i, k = i + n, k + 1
            outs.append(np.concatenate(parts))
        n = min(len(o) for o in outs)
        assert n > 0.95 * len(whole)
        assert np.max(np.abs(outs[0][:n] - outs[1][:n])) < 1e-5  # the block sizes do not matter
        mid = slice(RATE // 10, n - RATE // 10)
        assert np.max(np.abs(outs[0][mid] - whole[mid])) < 0.01 * np.max(np.abs(whole))  # no lag, same gain


def test_find_device_by_index_name_or_default() -> None:
    devs = [
        InputDevice(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 48000.0, "ALSA", False),
        InputDevice(1, "ReSpeaker 4 Mic Array (UAC1.0): USB Audio (hw:2,0)", 6, 16000.0, "ALSA", False),
        InputDevice(2, "HDMI 0", 0, 48000.0, "ALSA", False),
        InputDevice(3, "default", 32, 44100.0, "ALSA", True),
    ]
    assert find_device(devs, "respeaker", None).index == 1
    assert find_device(devs, 1, None).index == 1
    assert find_device(devs, None, None).index == 3
    assert find_device(devs, "DEFAULT", None).index == 3  # an exact name wins over parts of others
    with pytest.raises(SourceLost, match=r"no input device matching 'UMA-8' \(inputs: 0: HDA"):
        find_device(devs, "UMA-8", None)
    with pytest.raises(MicDeviceError, match="matches 2 input devices"):
        find_device(devs, "(hw:", None)
    with pytest.raises(MicDeviceError, match="device 2 \\(HDMI 0\\) has no input channels"):
        find_device(devs, 2, None)
    with pytest.raises(SourceLost, match="no input device 7"):
        find_device(devs, 7, None)


# -- a real PulseAudio server -------------------------------------------------------------------------


@dataclass
class PulseServer:
    runtime: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    players: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.runtime / "native"

    def start(self, timeout_s: float = 30.0) -> None:
        log = (self.runtime / "pulseaudio.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-module-loading=no",
                "--log-target=stderr",
                "--log-level=error",
                "-L",
                f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
                "-L",
                f"module-null-sink sink_name={SINK} channels=6 rate={RATE} channel_map={CHANNEL_MAP}",
            ],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:  # ready when a client sees the sink's monitor
            if self.proc.poll() is not None:
                pytest.fail(f"pulseaudio exited ({self.proc.returncode}): {self.log()}")
            r = subprocess.run(
                ["pactl", "list", "short", "sources"], env=self.env, capture_output=True, timeout=timeout_s
            )
            if f"{SINK}.monitor" in r.stdout.decode(errors="replace"):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"pulseaudio not ready after {timeout_s} s: {self.log()}")
            time.sleep(0.1)

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            ["paplay", f"--device={SINK}", f"--channel-map={CHANNEL_MAP}", str(wav)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.players.append(p)
        return p

    def kill(self) -> None:
        for p in [*self.players, *([self.proc] if self.proc is not None else [])]:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            if p.stderr is not None:
                p.stderr.close()
        self.players.clear()
        self.proc = None

    def log(self) -> str:
        path = self.runtime / "pulseaudio.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


@pytest.fixture
def pulse(monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    """A PulseAudio server of this test's own, reachable only through its Unix socket; PortAudio's ALSA
    ``pulse`` device records the 6-channel null sink's monitor."""
    for tool in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/setup (pulseaudio, pulseaudio-utils)")
    runtime = Path(tempfile.mkdtemp(prefix="rb-pa-"))  # short: a Unix socket path has at most 107 bytes
    runtime.chmod(0o700)
    (runtime / "client.conf").write_text("autospawn = no\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(runtime),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(runtime / "config"),
        "PULSE_RUNTIME_PATH": str(runtime / "runtime"),
        "PULSE_STATE_PATH": str(runtime / "state"),
        "PULSE_CLIENTCONFIG": str(runtime / "client.conf"),
        "PULSE_SERVER": f"unix:{runtime / 'native'}",
    }
    server = PulseServer(runtime, env)
    for key in ("PULSE_SERVER", "PULSE_CLIENTCONFIG"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("PULSE_SOURCE", f"{SINK}.monitor")
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, dict[str, object]]:
    """A talker at TALKER_AZ rendered at a ReSpeaker USB 4-Mic under the camera, turned 30 degrees, as its
    6-channel firmware delivers it: 0 a processed mix, 1-4 the microphones, 5 the playback (a noise that
    no microphone has, so that it shows where the recording lies in the capture)."""
    from scipy.signal import butter, sosfilt

    from appliance.bench.doa import render_room, speech_signal

    section = {
        "type": "sounddevice",
        "device": "pulse",
        "preset": "respeaker-usb-4mic",
        "array_position": [0.0, -0.15, 0.05],
        "rotation_deg": [30.0, 0.0, 0.0],
        "stall_s": 20.0,
    }
    mic = parse_config({"mic_arrays": {"table": section}}).mic_array
    speech = speech_signal(RATE, seed=1)[: int(1.8 * RATE)]
    mics = render_room(mic.positions, TALKER_AZ, 2.0, speech, RATE, rt60_s=0.3, snr_db=25.0, lead_s=0.3, seed=1)
    rng = np.random.default_rng(7)
    lowpass = butter(4, 2000.0, fs=RATE, output="sos")  # survives resampling on the way (48 kHz test)
    playback = sosfilt(lowpass, rng.uniform(-1.0, 1.0, len(mics)))
    playback *= 0.3 / np.max(np.abs(playback))
    x = np.column_stack([0.5 * mics.mean(axis=1), mics, playback])
    x = np.concatenate([x, np.zeros((RATE // 4, 6))])  # a tail of silence: the sink's buffer drains
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    wav = tmp_path_factory.mktemp("mics") / "array6.wav"
    scipy.io.wavfile.write(wav, RATE, pcm)
    return wav, pcm.astype(np.float32) / 32768.0, section


async def _capture_while_playing(
    source: PortAudioMicArray, pulse: PulseServer, wav: Path, tail_s: float = 0.6
) -> list[ArrayBlock]:
    """Start the source, play ``wav`` into the sink, and collect blocks until the player has finished and
    ``tail_s`` more seconds have been captured (60 s at most)."""
    await source.start()
    blocks: list[ArrayBlock] = []
    try:
        blocks.append(await asyncio.wait_for(source.recv(), 30.0))  # the capture runs: now play
        player = pulse.play(wav)
        deadline = time.monotonic() + 60.0
        done_at: float | None = None
        while time.monotonic() < deadline:
            b = await asyncio.wait_for(source.recv(), 30.0)
            blocks.append(b)
            if done_at is None and player.poll() is not None:
                done_at = b.t
            if done_at is not None and b.t > done_at + tail_s:
                break
        assert player.wait(timeout=30) == 0, player.stderr.read().decode() if player.stderr else ""
    finally:
        await source.stop()
    return blocks


def _align(captured: np.ndarray, sent: np.ndarray) -> int:
    """Where ``sent`` starts in ``captured`` (both 1-D), by cross-correlation."""
    n = len(captured) + len(sent)
    spec = np.fft.rfft(captured, n) * np.conj(np.fft.rfft(sent, n))
    corr = np.fft.irfft(spec, n)[: len(captured)]
    return int(np.argmax(corr))


@pytest.mark.parametrize("driver, device_rate", [("sounddevice", None), ("pyaudio", 48000)])
def test_captures_the_array_in_channel_order_and_hears_the_talker(
    pulse: PulseServer, recording: tuple[Path, np.ndarray, dict[str, object]], driver: str, device_rate: int | None
) -> None:
    wav, sent, section = recording
    section = {**section, "type": driver, **({"device_rate": device_rate} if device_rate else {})}
    cfg = parse_config({"mic_arrays": {"table": section}})
    mic = cfg.mic_array
    assert isinstance(mic, PortAudioMicSection)
    source = open_device("mic_array", "table", mic, DriverContext())
    assert isinstance(source, PortAudioMicArray)
    began = time.monotonic()
    blocks = asyncio.run(_capture_while_playing(source, pulse, wav))
    ended = time.monotonic()
    assert source.device_info is not None and source.device_info.name == "pulse"
    assert source.device_rate == (device_rate or RATE)

    # stamps: on the capture clock (time.monotonic), in order, back to back but for rare gaps
    t = np.array([b.t for b in blocks])
    n = np.array([len(b.samples) for b in blocks])
    assert began - 1.0 < t[0] and t[-1] < ended
    step = t[1:] - (t[:-1] + n[:-1] / RATE)
    # the timeline settles by half a device block per device block at most; one output block may stand for two
    # device blocks (the resampler hands out its output in bursts)
    block_s = mic.block_ms / 1000.0
    bad = np.nonzero(step < -block_s - 1e-6)[0]
    assert not len(bad), (step[bad], source.counters)
    assert np.sum(step > 0.005) <= 2 + source.counters["gaps"], step[step > 0.005]  # jumps only where it re-anchors
    assert all(b.sample_rate == RATE and b.samples.shape[1] == 4 and b.reference is not None for b in blocks)

    mics = np.concatenate([b.samples for b in blocks])
    ref = np.concatenate([b.reference for b in blocks if b.reference is not None])
    lag = _align(ref, sent[:, 5])
    got, got_ref = mics[lag : lag + len(sent)], ref[lag : lag + len(sent)]
    assert len(got) == len(sent), "the capture misses the end of the recording"
    # PulseAudio may swallow the first milliseconds of a playback: compare from 0.1 s on
    got, got_ref, sent = got[RATE // 10 :], got_ref[RATE // 10 :], sent[RATE // 10 :]
    if device_rate is None:  # the same rate end to end: the samples arrive as they were sent
        assert np.max(np.abs(got - sent[:, 1:5])) < 1e-4
        assert np.max(np.abs(got_ref - sent[:, 5])) < 1e-4
    # twice resampled (16 -> 48 kHz in PulseAudio, back in the driver) they are a little delayed and filtered
    least = 0.999 if device_rate is None else 0.95
    assert np.corrcoef(got_ref, sent[:, 5])[0, 1] > least  # the playback reference is device channel 5
    corr = np.array([[np.corrcoef(got[:, k], sent[:, 1 + j])[0, 1] for j in range(4)] for k in range(4)])
    # microphone k is device channel k + 1 (not the processed channel 0, not a neighbour)
    assert np.all(np.diag(corr) > least), corr
    assert np.all(np.argmax(corr, axis=1) == np.arange(4)), corr
    assert np.max(np.abs(got - sent[:, 0:1])) > 0.05  # channel 0 (the mix) is not taken for a microphone

    hearing = Hearing(mic, DoaConfig())
    doas = [d for b in blocks for d in hearing.feed(b.samples, b.t)]
    heard = [d.azimuth_deg for d in doas if d.azimuth_deg is not None]
    assert len(heard) >= 10, f"only {len(heard)} blocks with an azimuth"
    assert float(np.median(heard)) == pytest.approx(TALKER_AZ, abs=5.0)


def _noise_wav(path: Path, seconds: float) -> Path:
    rng = np.random.default_rng(5)
    pcm = (rng.uniform(-0.1, 0.1, (int(seconds * RATE), 6)) * 32767).astype(np.int16)
    scipy.io.wavfile.write(path, RATE, pcm)
    return path


def test_a_vanished_server_is_source_lost_and_a_restart_captures_again(pulse: PulseServer) -> None:
    mic = parse_config(
        {
            "mic_arrays": {
                "m": {
                    "type": "sounddevice",
                    "device": "pulse",
                    "preset": "respeaker-usb-4mic",
                    "queue_blocks": 3,
                    "stall_s": 3.0,
                }
            }
        }
    ).mic_array
    source = open_device("mic_array", "m", mic, DriverContext())
    assert isinstance(source, PortAudioMicArray)
    noise = _noise_wav(pulse.runtime / "noise.wav", 20.0)

    async def scenario() -> tuple[str, float, dict[str, int]]:
        await source.start()
        try:
            pulse.play(noise)
            for _ in range(5):
                await asyncio.wait_for(source.recv(), 30.0)
            await asyncio.sleep(0.5)  # nobody reads: the bounded queue drops the oldest blocks
            after_drop = await asyncio.wait_for(source.recv(), 30.0)
            assert source.dropped_blocks > 0 and after_drop.samples.shape == (320, 4)
            pulse.kill()
            killed = time.monotonic()
            with pytest.raises(SourceLost) as lost:
                for _ in range(10000):
                    await asyncio.wait_for(source.recv(), 15.0)
            took = time.monotonic() - killed
        finally:
            await asyncio.wait_for(source.stop(), 15.0)
        # started again while the server is away: lost, not a config the device refuses (before: "refuses 6
        # channels at every rate tried", as if the config were wrong)
        with pytest.raises(SourceLost) as away:
            await asyncio.wait_for(source.start(), 30.0)
        assert "refuses" not in str(away.value), away.value
        # what the supervisor does next: start again once the device is back
        pulse.start()
        await asyncio.wait_for(source.start(), 30.0)
        try:
            pulse.play(noise)
            block = await asyncio.wait_for(source.recv(), 30.0)
            assert block.samples.shape[1] == 4
        finally:
            await asyncio.wait_for(source.stop(), 15.0)
        return str(lost.value), took, source.counters

    message, took, counters = asyncio.run(scenario())
    assert message.startswith("m: device ") and "(pulse)" in message
    assert took < 10.0
    assert counters["dropped_blocks"] > 0 and counters["gaps"] >= 2


def test_device_errors_name_the_device(pulse: PulseServer) -> None:
    def section(**kw: object) -> PortAudioMicSection:
        mic = parse_config(
            {"mic_arrays": {"m": {"type": "sounddevice", "preset": "respeaker-usb-4mic", **kw}}}
        ).mic_array
        assert isinstance(mic, PortAudioMicSection)
        return mic

    async def start(mic: PortAudioMicSection) -> None:
        source = open_device("mic_array", "m", mic, DriverContext())
        try:
            await source.start()
        finally:
            await source.stop()

    with pytest.raises(SourceLost, match=r"m: no input device matching 'UMA-8' \(inputs: .*pulse"):
        asyncio.run(start(section(device="UMA-8")))
    with pytest.raises(
        MicDeviceError,
        match=r"m: device \d+ \(pulse\) refuses 6 channels at device_rate "
        r"768000 Hz: Invalid sample rate",
    ):
        asyncio.run(start(section(device="pulse", device_rate=768000)))
    with pytest.raises(
        MicDeviceError,
        match=r"m: device \d+ \(pulse\) has 32 input channels; the channel map "
        r"needs 40",
    ):
        asyncio.run(start(section(device="pulse", channels=40)))


def test_roombox_mics_lists_input_devices(pulse: PulseServer, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.cli import main

    assert main(["mics"]) == 0
    devices = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    pulse_dev = [d for d in devices if d["name"] == "pulse"]
    assert pulse_dev and pulse_dev[0]["channels"] >= 6 and pulse_dev[0]["default_rate"] > 0
    assert set(pulse_dev[0]) == {"index", "name", "channels", "default_rate", "host_api", "default"}
    assert main(["mics", "--backend", "pyaudio"]) == 0
    assert "pulse" in [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]


def test_a_missing_pyaudio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # what Python does when the package is not installed
    mic = parse_config({"mic_arrays": {"m": {"type": "pyaudio", "preset": "uma8"}}}).mic_array
    with pytest.raises(
        MicDeviceError,
        match=r"the pyaudio driver needs the Python package PyAudio \(pip install "
        r"pyaudio",
    ):
        open_device("mic_array", "m", mic, DriverContext())


def test_a_hung_sound_server_is_said_not_waited_for_in_silence(pulse: PulseServer) -> None:
    """A sweep: with the sound server hung (stopped), ``roombox run`` never served its panel and logged nothing,
    and ``roombox mics`` hung: PortAudio's set-up (sounddevice's import, which mediapipe and pyroomacoustics
    make too) waits on the server. Now ``mics`` says so and exits 2, and the box says why it waits, then
    goes on once the server answers."""
    assert pulse.proc is not None
    env = {**os.environ, **pulse.env, "PULSE_SOURCE": f"{SINK}.monitor"}
    pulse.proc.send_signal(signal.SIGSTOP)
    try:
        mics = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "mics"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert mics.returncode == 2 and "the sound system does not answer" in mics.stderr, mics.stderr
        waiter = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from drivers.audio.devices import wait_for_sound_system as w; w(lambda m: print(m, flush=True), 1.0);"
                " print('set up', flush=True)",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert waiter.stdout is not None
        first = waiter.stdout.readline()
        assert first.startswith("waiting for the sound system: setting PortAudio up has waited"), first
    finally:
        pulse.proc.send_signal(signal.SIGCONT)
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and out.rstrip().endswith("set up"), out


def test_a_block_is_stamped_at_least_a_block_before_it_was_handed_over() -> None:
    """A sweep: through ALSA's pulse device PortAudio reports an input latency of 0.4 ms for 20-ms blocks, and
    the box trusted it: every block's end was stamped after the block had arrived (by 11-19 ms). A block's first
    sample is at least a block old when the block is handed over."""
    from common.clock import VirtualClock

    clock = VirtualClock(100.0)
    array = PortAudioMicArray(None, "m", None, channels=1, channel_map=[0], sample_rate=16000, clock=clock)  # type: ignore[arg-type]
    block = np.zeros((320, 1), np.float32)  # 20 ms
    array._on_block(block, 0.0004, False)
    assert array._anchor == pytest.approx(100.0 - 0.020)
    later = PortAudioMicArray(None, "m", None, channels=1, channel_map=[0], sample_rate=16000, clock=clock)  # type: ignore[arg-type]
    later._on_block(block, 0.050, False)  # a latency longer than a block: taken as reported
    assert later._anchor == pytest.approx(100.0 - 0.050)
