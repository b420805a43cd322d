"""``roombox bench farend``: the far end on the room's loudspeaker, rendered by the simulated room.

The meeting is the built-in scenario ``farend`` (four people; far-end-only turns and double talk from a
loudspeaker at the azimuth of a seated person), rendered by :func:`drivers.simroom.audio.render_audio` in
several rooms: RT60 0.3 / 0.6 s x SNR 20 / 10 dB (diffuse noise against the local talkers' power at the
mics) x arrays (the scenario's 6-mic circle, a 4-mic square) x loudspeaker placements (on the ceiling at
dave's azimuth, as the scenario has it; on the table at alice's azimuth, below the array). The box's
:class:`appliance.perception.listening.Listener` (defaults) hears each rendering twice: with the playback
reference (``reference`` of the rendering, what ``roombox render`` writes as ``reference.wav``) and, as
the peer, without it.

Per block (scored at its middle against the rendering's intervals): far-end-only blocks (the far end speaks,
no local talker does nor did in the last 0.3 s) reported as a local talker; local-only blocks (the far end
neither speaks nor did in the last 0.3 s) with a talker's direction reported (recall) and within 10 degrees
of a talker who speaks; double-talk blocks with a talker reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from appliance.config import DoaConfig, MicArraySection, TrackerConfig
from appliance.perception.listening import Listener

Row = tuple[str, float, str]
SQUARE4 = [[0.0325, -0.1, 0.0325], [-0.0325, -0.1, 0.0325], [-0.0325, -0.1, -0.0325], [0.0325, -0.1, -0.0325]]
ROOMS = ((0.3, 20.0), (0.3, 10.0), (0.6, 20.0), (0.6, 10.0))
QUICK_ROOMS = ((0.3, 20.0), (0.6, 10.0))
# where the loudspeaker is: (name, room position (m)); the ceiling one is the scenario's own
PLACEMENTS: tuple[tuple[str, tuple[float, float, float] | None], ...] = (
    ("ceiling", None),
    ("table", (3.5 + 1.3 * math.sin(math.radians(-30.0)), 0.05 + 1.3 * math.cos(math.radians(-30.0)), 0.8)),
)
TAIL_S = 0.3  # after a source stops, its reverberation: not counted against either side
CHUNK = 1024


@dataclass
class Tally:
    """Block counts of one listener over one or more renderings."""

    hop_s: float
    farend_only: int = 0
    farend_reported: int = 0
    farend_marked: int = 0
    local_only: int = 0
    local_reported: int = 0
    local_within_10: int = 0
    local_marked_farend: int = 0
    double: int = 0
    double_reported: int = 0
    cpu_s: float = 0.0
    audio_s: float = 0.0

    def add(self, o: Tally) -> None:
        """Add ``o``'s counts and times (the hop stays)."""
        for f in fields(self):
            if f.name != "hop_s":
                setattr(self, f.name, getattr(self, f.name) + getattr(o, f.name))

    def farend_fraction(self) -> float:
        return self.farend_reported / max(self.farend_only, 1)

    def recall(self) -> float:
        return self.local_reported / max(self.local_only, 1)


def _err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _on(spans: list[tuple[float, float]], a: float, b: float) -> bool:
    return any(s < b and a < e for s, e in spans)


def render_cell(rt60_s: float, snr_db: float, array: str, placement: str, duration_s: float | None) -> Any:
    """The ``farend`` scenario in this room, with this array and loudspeaker: (scenario, rendering), the
    rendering's samples carrying diffuse noise ``snr_db`` below the local talkers' power."""
    from drivers.simroom.audio import diffuse_noise, render_audio
    from drivers.simroom.scenario import builtin_scenario, load_scenario, parse_scenario

    base = load_scenario(builtin_scenario("farend"))
    data = base.model_dump(mode="json")
    data["room"].update(rt60_s=rt60_s, noise_db=-120.0)
    if array == "square4":
        data["mic_array"]["positions"] = SQUARE4
    where = dict(PLACEMENTS)[placement]
    if where is not None:
        data["loudspeaker"]["position_m"] = list(where)
    if duration_s is not None:
        data["duration_s"] = min(duration_s, base.duration_s)
        data["loudspeaker"]["turns"] = [u for u in data["loudspeaker"]["turns"] if u["start_s"] < data["duration_s"]]
        for person in data["people"]:
            person["utterances"] = [u for u in person["utterances"] if u["start_s"] < data["duration_s"]]
    scn = parse_scenario(data, f"farend ({array}, {placement})")
    audio = render_audio(scn)
    rate, x = audio.sample_rate, audio.samples.astype(np.float64)
    t = np.arange(x.shape[0]) / rate
    talking = np.zeros(x.shape[0], bool)
    for spans in audio.activity.values():
        for a, b in spans:
            talking |= (t >= a) & (t < b)
    for a, b in audio.farend:
        talking &= ~((t >= a - TAIL_S) & (t < b + TAIL_S))
    power = float(np.mean(x[talking] ** 2))
    rng = np.random.default_rng([int(rt60_s * 1000), int(snr_db), len(scn.mic_array.positions)])
    noise = diffuse_noise(np.array(scn.mic_positions_room()), x.shape[0], rate, rng).astype(np.float64)
    x = x + noise * math.sqrt(power / 10 ** (snr_db / 10.0))
    samples = (x * (0.5 / float(np.abs(x).max()))).astype(np.float32)
    return scn, audio, samples


def listen(scn: Any, audio: Any, samples: np.ndarray, with_reference: bool) -> Tally:
    """Run the Listener (defaults) over the rendering in chunks, as the box would, and count its blocks."""
    cfg, doa = TrackerConfig(), DoaConfig()
    mic = MicArraySection(sample_rate=audio.sample_rate, positions=scn.mic_array.positions)
    listener = Listener(mic, cfg, doa)
    ref = audio.reference if with_reference else None
    heard = []
    c0 = time.process_time()
    for s in range(0, samples.shape[0], CHUNK):
        heard += listener.feed(
            samples[s : s + CHUNK], s / audio.sample_rate, None if ref is None else ref[s : s + CHUNK]
        )
    tally = Tally(hop_s=cfg.hop_ms / 1000.0, cpu_s=time.process_time() - c0)
    tally.audio_s = samples.shape[0] / audio.sample_rate
    azimuths = {p.id: scn.mouth_azimuth_deg(p) for p in scn.people}
    block_s = doa.block_ms / 1000.0
    for h in heard:
        a, b = h.t - block_s, h.t
        mid = (a + b) / 2.0
        local = [pid for pid, spans in audio.activity.items() if _on(spans, mid - 1e-3, mid + 1e-3)]
        local_recent = any(_on(spans, a - TAIL_S, b) for spans in audio.activity.values())
        far = _on(audio.farend, mid - 1e-3, mid + 1e-3)
        far_recent = _on(audio.farend, a - TAIL_S, b)
        reported = h.azimuth_deg is not None
        if far and not local_recent:
            tally.farend_only += 1
            tally.farend_reported += reported
            tally.farend_marked += h.farend
        elif local and not far_recent:
            tally.local_only += 1
            tally.local_reported += reported
            tally.local_marked_farend += h.farend
            if h.azimuth_deg is not None and min(_err(h.azimuth_deg, azimuths[p]) for p in local) <= 10.0:
                tally.local_within_10 += 1
        elif local and far:
            tally.double += 1
            tally.double_reported += reported
    return tally


def rows_of(label: str, ref: Tally, plain: Tally) -> list[Row]:
    hop = ref.hop_s
    return [
        (f"{label} far-end-only blocks", float(ref.farend_only), "blocks"),
        (f"{label} far-end-only blocks reported as a local talker", ref.farend_fraction(), "fraction"),
        (f"{label} far-end-only time reported as a local talker", ref.farend_reported * hop, "s"),
        (f"{label} same without reference (peer)", plain.farend_fraction(), "fraction"),
        (f"{label} same without reference (peer), time", plain.farend_reported * hop, "s"),
        (f"{label} far-end-only blocks marked far end", ref.farend_marked / max(ref.farend_only, 1), "fraction"),
        (f"{label} local-only blocks marked far end", ref.local_marked_farend / max(ref.local_only, 1), "fraction"),
        (f"{label} local speech recall during the far-end scene", ref.recall(), "fraction"),
        (f"{label} local speech recall without reference (peer)", plain.recall(), "fraction"),
        (f"{label} local blocks within 10 deg", ref.local_within_10 / max(ref.local_only, 1), "fraction"),
        (
            f"{label} local within 10 deg without reference",
            plain.local_within_10 / max(plain.local_only, 1),
            "fraction",
        ),
        (f"{label} double-talk blocks with a talker reported", ref.double_reported / max(ref.double, 1), "fraction"),
        (
            f"{label} double talk, talker reported without reference",
            plain.double_reported / max(plain.double, 1),
            "fraction",
        ),
        (f"{label} CPU per audio second", ref.cpu_s / max(ref.audio_s, 1e-9), "s/s"),
        (f"{label} CPU per audio second without reference", plain.cpu_s / max(plain.audio_s, 1e-9), "s/s"),
    ]


def bench_farend(quick: bool = False) -> list[Row]:
    """Per cell (RT60, SNR, array, loudspeaker placement) and over all cells: the far end reported as a
    local talker and local speech recall, with the playback reference and without it (the peer). ``quick``:
    two rooms (0.3 s / 20 dB, 0.6 s / 10 dB), the first 27 s of the scenario."""
    rows: list[Row] = []
    hop = TrackerConfig().hop_ms / 1000.0
    total_ref, total_plain = Tally(hop), Tally(hop)
    worst: tuple[float, str] = (-1.0, "")
    rooms = QUICK_ROOMS if quick else ROOMS
    for placement, _ in PLACEMENTS:
        for array in ("circle6", "square4"):
            for rt60, snr in rooms:
                scn, audio, samples = render_cell(rt60, snr, array, placement, 27.0 if quick else None)
                ref, plain = listen(scn, audio, samples, True), listen(scn, audio, samples, False)
                label = f"{placement} {array} RT60 {rt60:.1f} s SNR {snr:.0f} dB"
                rows += rows_of(label, ref, plain)
                total_ref.add(ref)
                total_plain.add(plain)
                worst = max(worst, (ref.farend_fraction(), label))
    n = len(PLACEMENTS) * 2 * len(rooms)
    rows += rows_of(f"all {n} cells", total_ref, total_plain)
    rows.append((f"worst cell far-end-only reported as a talker ({worst[1]})", worst[0], "fraction"))
    return rows


if __name__ == "__main__":
    for row_name, value, unit in bench_farend(quick=True):
        print(f"{row_name:<90} {value:10.3f} {unit}")
