"""The director on the hard cases of a real meeting (scripted faces and DOA blocks, 15 frames/s, a detection
every 0.2 s): face tracks, a print on the wall, A-B-A-B exchanges, two talking over each other, a talker
outside the picture, far-end speech, microphones muted from the panel. Each case is also run with its rule
switched off in the config, to show that the rule is what makes the figure."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from appliance.box import RoomBox
from appliance.config import Config, DirectorConfig
from appliance.director import Director, Rule
from appliance.messages import Box, Decisions, Doa, Face, Faces, Shot
from appliance.perception.detectors import make_detector
from appliance.perception.listening import Heard
from appliance.perception.tracking import FaceTracker
from appliance.streaming.hub import AudioHub, EventBus, LatestFrame
from common.geometry import PinholeCamera
from drivers.base import AudioBlock
from drivers.files import FileCamera, WavMicArray

CAM = PinholeCamera(1920, 1080, 90.0)
FPS = 15.0
HOP = 0.032
DETECT_EVERY = 3  # frames: a detection every 0.2 s
RULES = set(Rule.__args__)  # type: ignore[attr-defined]


@dataclass
class Room:
    """People at azimuths (their heads sway, as people's do) and pictures (perfectly still)."""

    people: dict[str, float]
    pictures: dict[str, float] = field(default_factory=dict)
    hidden: Callable[[str, float], bool] = lambda who, t: False  # a face the detector misses at t

    def box(self, who: str, t: float) -> Box:
        size = 60.0
        if who in self.pictures:
            u = CAM.column_of_azimuth(self.pictures[who])
        else:
            az = self.people[who]
            u = CAM.column_of_azimuth(az) + 0.3 * size * math.sin(2 * math.pi * 0.25 * t + az)
        return (u - size / 2, 480.0 - size / 2, size, size)

    def faces(self, t: float) -> Faces:
        names = [n for n in [*self.people, *self.pictures] if not self.hidden(n, t)]
        return Faces(t, tuple(Face(self.box(n, t), 0.9) for n in names), CAM.width, CAM.height)


Script = list[tuple[float, float, str | tuple[str, ...]]]


def talk(script: Script, room: Room) -> Callable[[int, float], Doa]:
    """DOA blocks from (start, end, who) spans: who is a name, or several talking over each other (the
    blocks alternate between them, as the dominant direction does); a little jitter on every azimuth."""
    where = {**room.people, **room.pictures, "ceiling": 60.0, "empty": 25.0}

    def doa(k: int, t: float) -> Doa:
        who = next((w for s, e, w in script if s <= t < e), None)
        if who is None:
            return Doa(t, None, False, -60.0)
        name = who if isinstance(who, str) else who[k % len(who)]
        return Doa(t, where[name] + 1.5 * math.sin(7 * t), True, -30.0, 0.8)

    return doa


def run(
    room: Room,
    doa: Callable[[int, float], Doa],
    end: float,
    cfg: DirectorConfig | None = None,
    director: Director | None = None,
    start: float = 0.0,
    events: dict[float, Callable[[Director, float], None]] | None = None,
) -> list[Shot]:
    """One shot per video frame from ``start`` to ``end``; ``events`` call into the director at a time."""
    d = director or Director(CAM, cfg or DirectorConfig())
    pending = dict(sorted((events or {}).items()))
    shots: list[Shot] = []
    n, k = 0, int(start / HOP)
    while (now := start + n / FPS) <= end:
        for when in [w for w in pending if w <= now]:
            pending.pop(when)(d, now)
        blocks = []
        while (k + 1) * HOP <= now:
            k += 1
            blocks.append(doa(k, k * HOP))
        shots.append(d.step(room.faces(now) if n % DETECT_EVERY == 0 else None, blocks, now))
        n += 1
    return shots


def inside(box: Box, crop: Sequence[float]) -> bool:
    x, y, w, h = crop
    fx, fy, fw, fh = box
    return x <= fx and fx + fw <= x + w and y <= fy and fy + fh <= y + h


def shows(room: Room, shot: Shot, *who: str) -> bool:
    return all(inside(room.box(w, shot.t), shot.crop) for w in who)


def framed(room: Room, shot: Shot, who: str) -> bool:
    """A speaker shot of ``who``: their face inside, nearest the centre."""
    cx = shot.crop[0] + shot.crop[2] / 2

    def off(name: str) -> float:
        x, _, w, _ = room.box(name, shot.t)
        return abs(x + w / 2 - cx)

    others = [n for n in [*room.people, *room.pictures] if n != who]
    return shot.mode == "speaker" and shows(room, shot, who) and all(off(who) < off(o) for o in others)


def cuts(shots: Sequence[Shot], t0: float = -1.0, t1: float = math.inf) -> list[Shot]:
    found = [s for s in shots if s.cut and t0 <= s.t < t1]
    for s in found:  # every change of shot says which rule fired and what it saw
        assert s.rule in RULES and s.reason and "people" in s.evidence, s
    return found


def between(shots: Sequence[Shot], t0: float, t1: float) -> list[Shot]:
    return [s for s in shots if t0 <= s.t < t1]


def test_the_director_follows_face_tracks_through_missed_detections() -> None:
    # a's face is missed by the detector for 1.2 s while a talks: the track holds, the shot stays
    room = Room({"a": -30.0, "b": 0.0, "c": 25.0}, hidden=lambda who, t: who == "a" and 4.0 <= t < 5.2)
    doa = talk([(0.5, 10.0, "a")], room)
    shots = run(room, doa, 10.0)
    assert all(framed(room, s, "a") for s in between(shots, 1.5, 10.0))
    assert cuts(shots, 1.5) == []
    first = cuts(shots)[-1]
    assert first.rule == "talker" and first.evidence["talker"] in {p["track"] for p in first.evidence["people"]}

    # tracks made elsewhere (the FaceWatcher's) give the same shots as the director's own tracking
    d, tracker, k, again = Director(CAM, DirectorConfig()), FaceTracker(CAM), 0, []
    for n in range(len(shots)):
        now = n / FPS
        blocks = []
        while (k + 1) * HOP <= now:
            k += 1
            blocks.append(doa(k, k * HOP))
        again.append(d.step_tracks(tracker.update(room.faces(now)) if n % DETECT_EVERY == 0 else None, blocks, now))
    assert again == shots


def test_a_face_that_never_moves_and_never_talks_is_never_framed_close() -> None:
    # a framed print hangs at 0 deg between two people; after 25 s a voice comes from its direction (a
    # loudspeaker below it, a reflection): it is no reason to move, and the print is never a close shot
    room = Room({"a": -30.0, "c": 28.0}, pictures={"print": 0.0})
    script: Script = [(1.0, 6.0, "a"), (7.0, 12.0, "c"), (25.0, 35.0, "print"), (37.0, 41.0, "a")]
    shots = run(room, talk(script, room), 42.0)
    assert not any(framed(room, s, "print") for s in shots)
    assert not any(s.mode == "speaker" and abs((s.target_azimuth_deg or 99.0) - 0.0) < 5.0 for s in shots)
    rules = [s.rule for s in cuts(shots)]
    assert "print" in rules  # the group shot dropped it once it was known for a picture (20 s still)
    found = next(s for s in cuts(shots) if s.rule == "print")
    assert 20.0 <= found.t < 21.0 and found.evidence["prints"][0]["azimuth_deg"] == pytest.approx(0.0, abs=1.0)
    assert cuts(shots, 24.0, 36.5) == []  # speech from the picture moves nothing
    assert any(framed(room, s, "a") for s in between(shots, 37.0, 40.0))
    # without the rule (a picture must be still for an hour) the same meeting frames the print close
    loose = run(room, talk(script, room), 42.0, DirectorConfig(print_still_s=3600.0))
    assert sum(framed(room, s, "print") for s in loose) / FPS > 5.0


def exchange(seed: int, t0: float, t1: float) -> Script:
    """A-B-A-B turns of 1.2-2.5 s (a short pause between them) from t0 to t1."""
    rng, t, who = np.random.default_rng(seed), t0, "a"
    out: Script = []
    while t < t1:
        dur = float(rng.uniform(1.2, 2.5))
        out.append((t, min(t + dur, t1), who))
        t, who = t + dur + 0.15, "b" if who == "a" else "a"
    return out


def exchange_figures(room: Room, shots: list[Shot], t0: float, t1: float) -> tuple[float, float]:
    """Cuts per minute and the fraction of the time with both talkers in the picture, over [t0, t1)."""
    during = between(shots, t0, t1)
    per_min = len(cuts(shots, t0, t1)) * 60.0 / (t1 - t0)
    return per_min, sum(shows(room, s, "a", "b") for s in during) / len(during)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_b_a_b_exchanges_frame_both_with_few_cuts(seed: int) -> None:
    # two neighbours trade 1.2-2.5 s turns for a minute; then a third person speaks up
    room = Room({"a": -10.0, "b": 10.0, "c": 35.0})
    script: Script = [*exchange(seed, 2.0, 62.0), (64.0, 70.0, "c")]
    shots = run(room, talk(script, room), 70.0)
    per_min, both = exchange_figures(room, shots, 2.0, 62.0)
    assert per_min <= 12.0 and both >= 0.8, (per_min, both)
    pp = next(s for s in cuts(shots) if s.rule == "ping-pong")
    # a quick answer to a short remark (ping_pong_quick_s) already makes it an exchange
    assert pp.mode == "group" and pp.evidence["swaps"] >= 1 and len(pp.evidence["pair"]) == 2
    assert not shows(room, pp, "c")  # the two of them, not the whole group
    assert any(framed(room, s, "c") for s in between(shots, 64.0, 66.0))  # the exchange is over
    # without the rules: a cut at almost every turn, the picture on one of them only
    off = DirectorConfig(ping_pong_swaps=0, frame_overlap=False, answer_two_shot_s=0.0)
    plain = run(room, talk(script, room), 70.0, off)
    per_min_plain, both_plain = exchange_figures(room, plain, 2.0, 62.0)
    assert per_min_plain >= 20.0 and both_plain < 0.5, (per_min_plain, both_plain)
    # the answers' two-shots alone keep both in the picture, but cut at every turn
    answers = run(room, talk(script, room), 70.0, off.model_copy(update={"answer_two_shot_s": 2.0}))
    per_min_answers, both_answers = exchange_figures(room, answers, 2.0, 62.0)
    assert per_min_answers >= 20.0 and both_answers >= 0.8, (per_min_answers, both_answers)


def test_two_people_talking_over_each_other_are_framed_together() -> None:
    room = Room({"a": -30.0, "b": 0.0, "c": 25.0})
    script: Script = [(1.0, 5.0, "a"), (5.0, 12.0, ("a", "b")), (12.0, 17.0, "b")]
    shots = run(room, talk(script, room), 17.0)
    over = next(s for s in cuts(shots) if s.rule == "overlap")
    where = {p["track"]: p["azimuth_deg"] for p in over.evidence["people"]}
    assert 5.0 < over.t < 7.0 and sorted(where[i] for i in over.evidence["pair"]) == pytest.approx([-30.0, 0.0], abs=6)
    both = between(shots, 7.0, 12.0)
    assert sum(shows(room, s, "a", "b") for s in both) / len(both) >= 0.9
    assert not shows(room, over, "c")
    assert all(framed(room, s, "b") for s in between(shots, 14.5, 17.0))  # b alone again: b's shot
    plain = run(room, talk(script, room), 17.0, DirectorConfig(frame_overlap=False))
    assert sum(shows(room, s, "a", "b") for s in between(plain, 7.0, 12.0)) / len(both) < 0.2


def test_a_talker_outside_the_picture_never_gets_an_empty_shot() -> None:
    # a talks, then a voice from the ceiling at +60 deg (outside the 90 deg view), a again, then a voice
    # from +25 deg where nobody is seen
    room = Room({"a": -30.0, "b": 0.0})
    script: Script = [(1.0, 5.0, "a"), (6.0, 12.0, "ceiling"), (13.0, 17.0, "a"), (18.0, 24.0, "empty")]
    shots = run(room, talk(script, room), 24.0)
    assert all(s.mode != "wide" and (shows(room, s, "a") or shows(room, s, "b")) for s in shots)
    unseen = [s for s in cuts(shots) if s.rule == "outside-picture"]
    assert [math.floor(s.t) for s in unseen] == [6, 18]  # within a second of the voice, the group
    assert unseen[0].evidence["unseen_speech"]["azimuth_deg"] == pytest.approx(60.0, abs=3.0)
    for t0, t1 in ((7.5, 12.0), (19.5, 24.0)):
        assert all(s.mode == "group" and shows(room, s, "a", "b") for s in between(shots, t0, t1))


def test_far_end_speech_never_moves_the_camera() -> None:
    # the far end's voice from a loudspeaker at c's azimuth, marked far-end by the listener
    room = Room({"a": -30.0, "b": 0.0, "c": 25.0})

    def heard(farend: bool) -> Callable[[int, float], Doa]:
        def doa(k: int, t: float) -> Doa:
            speaking = 2.0 <= t < 14.0
            return Heard(t, 25.0 if speaking else None, speaking, farend and speaking, -30.0, 0.8).to_doa()

        return doa

    assert not heard(True)(100, 3.2).speech  # a far-end block is not speech to the director
    shots = run(room, heard(True), 14.0)
    assert [s.rule for s in cuts(shots)] == ["people-seen"] and {s.mode for s in shots} == {"group"}
    # the same voice from the room itself is a talker: c is framed at once
    local = run(room, heard(False), 14.0)
    assert any(framed(room, s, "c") for s in between(local, 2.0, 3.0))


def test_muted_microphones_give_the_group_shot_and_say_so() -> None:
    room = Room({"a": -30.0, "b": 0.0, "c": 25.0})
    d = Director(CAM, DirectorConfig())
    events = {5.0: lambda d, t: d.set_muted(True, t), 10.0: lambda d, t: d.set_muted(False, t)}
    shots = run(room, talk([(0.5, 15.0, "a")], room), 15.0, director=d, events=events)
    assert framed(room, between(shots, 4.5, 5.0)[0], "a") and not shots[0].muted
    muted = between(shots, 5.0, 10.0)
    assert muted[0].cut and muted[0].rule == "muted" and muted[0].evidence["muted"]
    assert all(s.mode == "group" and s.muted and s.to_json()["muted"] for s in muted)
    assert all(shows(room, s, "a", "b", "c") for s in muted)
    back = between(shots, 10.0, 15.0)
    assert not any(s.muted for s in back) and any(framed(room, s, "a") for s in between(shots, 10.0, 11.0))
    # the log of decisions carries the rules and their evidence over the wire
    log = Decisions(tuple(reversed(cuts(shots))))
    assert Decisions.from_json(log.to_json()).to_json() == log.to_json() and log.cuts[1].rule == "muted"


def test_the_box_mutes_from_the_panel_and_the_state_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    wav = tmp_path / "a.wav"
    scipy.io.wavfile.write(wav, 16000, (rng.normal(0, 0.01, (1600, 6)) * 32767).astype(np.int16))
    cfg, hub = Config(), AudioHub()
    box = RoomBox(
        cfg,
        FileCamera(tmp_path / "none.mp4"),
        WavMicArray(wav),
        make_detector(cfg.detector),
        LatestFrame(),
        hub,
        EventBus(),
    )
    try:
        faces = Faces(0.0, (Face((900.0, 450.0, 60.0, 60.0), 0.9), Face((300.0, 450.0, 60.0, 60.0), 0.9)), 1920, 1080)
        assert not box.step.step(0.0, 1920, 1080, faces).muted
        assert box.command({"cmd": "set_mute", "muted": True}) == {"mode": "speaker", "muted": True}
        shot = box.step.step(0.1, 1920, 1080, None)
        assert shot.muted and shot.rule == "muted" and shot.mode == "group"
        block = AudioBlock(0.1, rng.normal(0, 0.1, (320, 6)).astype(np.float32), 16000)
        box._on_audio(block)
        _, chunks = hub.read(0)
        assert not chunks[-1].samples.any()  # the far end hears silence
        box.step.restart()  # the mute outlives a camera restart
        assert box.step.step(0.2, 1920, 1080, faces).muted
        with pytest.raises(ValueError, match="set_mute wants muted"):
            box.command({"cmd": "set_mute", "muted": "yes"})
        assert box.command({"cmd": "set_mute", "muted": False})["muted"] is False
        box._on_audio(block)
        assert hub.read(0)[1][-1].samples.any()
        assert not box.step.step(0.3, 1920, 1080, None).muted
    finally:
        box.detector.close()


def test_an_exchange_that_falls_silent_ends_on_the_group() -> None:
    room = Room({"a": -10.0, "b": 10.0, "c": 35.0})
    shots = run(room, talk(exchange(3, 2.0, 20.0), room), 30.0)
    rules = [(s.rule, s.t) for s in cuts(shots)]
    assert [r for r, _ in rules][-2:] == ["ping-pong", "exchange-ended"], rules
    ended = cuts(shots)[-1]
    assert 24.0 <= ended.t < 26.0 and ended.mode == "group" and shows(room, ended, "a", "b", "c")


def test_a_quick_answer_to_a_short_remark_frames_both_at_once() -> None:
    room = Room({"a": -10.0, "b": 10.0, "c": 35.0})
    # c speaks at length, then a makes a short remark, b answers at once, and they go on
    script: Script = [(0.0, 6.0, "c"), (7.0, 8.8, "a"), (9.0, 10.8, "b"), (11.0, 12.6, "a"), (12.8, 14.5, "b")]
    quick = run(room, talk(script, room), 16.0)
    pp = [s for s in cuts(quick) if s.rule == "ping-pong"]
    assert pp and pp[0].t < 11.0 and shows(room, pp[0], "a", "b")  # at b's first answer, not after 3 swaps
    slow = run(room, talk(script, room), 16.0, DirectorConfig(ping_pong_quick_s=0.0))  # off: three swaps first
    assert all(s.t > 11.0 for s in cuts(slow) if s.rule == "ping-pong")
    # across the table (b sits between a and c) a quick answer is no two-shot: the talker is framed
    across: Script = [(0.0, 6.0, "b"), (7.0, 8.8, "a"), (9.0, 10.8, "c"), (11.0, 12.6, "a")]
    shots = run(room, talk(across, room), 13.0)
    assert not any(s.rule == "ping-pong" for s in cuts(shots))
    assert any(framed(room, s, "c") for s in between(shots, 10.0, 11.0))
    # a long turn answered is no exchange
    long_turns: Script = [(0.0, 6.0, "c"), (7.0, 12.0, "a"), (12.2, 16.0, "b")]
    shots = run(room, talk(long_turns, room), 16.0)
    assert not any(s.rule == "ping-pong" for s in cuts(shots))


def test_speech_heard_behind_the_camera_is_the_front_walls_image() -> None:
    # a small array on the front wall hears a talker at +20 deg as if from +160 deg (the wall's image, front and
    # back confused): nobody can sit behind the camera, so the direction is mirrored into the room
    room = Room({"a": -30.0, "b": 20.0})

    def doa(k: int, t: float) -> Doa:
        speaking = 2.0 <= t < 8.0
        return Doa(t, 160.0 + 1.5 * math.sin(7 * t) if speaking else None, speaking, -30.0, 0.8)

    shots = run(room, doa, 8.0)
    assert all(framed(room, s, "b") for s in between(shots, 3.5, 8.0))
    # taken as heard, the voice is out of view at the picture's edge: the group, nobody framed close
    clamped = run(room, doa, 8.0, DirectorConfig(behind="clamp"))
    assert not any(framed(room, s, "b") for s in between(clamped, 3.5, 8.0))
    assert all(s.mode == "group" for s in between(clamped, 3.5, 8.0))


def test_the_picture_holds_still_while_the_far_end_talks() -> None:
    # a talks and is framed; then the far end talks for 12 s (a sways in the picture meanwhile); then quiet
    room = Room({"a": -20.0, "b": 15.0})

    def doa(k: int, t: float) -> Doa:
        if 1.0 <= t < 6.0:
            return Doa(t, -20.0 + 1.5 * math.sin(7 * t), True, -30.0, 0.8)
        if 7.0 <= t < 19.0:
            return Doa(t, 40.0, False, -30.0, 0.8, farend=True)
        return Doa(t, None, False, -60.0)

    shots = run(room, doa, 26.0)
    far = between(shots, 7.0, 19.0)
    assert framed(room, far[0], "a") and all(s.crop == far[0].crop and not s.cut for s in far)
    # once the far end has been quiet a moment, the silence rule gives the group
    after = [s for s in cuts(shots, 19.0) if s.rule == "silence"]
    assert after and after[0].t < 19.0 + DirectorConfig().farend_quiet_s + 1.0
    # without the rule the shot follows a's sway and goes to the group in the far end's speech
    plain = between(run(room, doa, 26.0, DirectorConfig(farend_still=False)), 7.0, 19.0)
    assert any(s.cut for s in plain) and len({s.crop for s in plain}) > 3


def test_a_neighbours_answer_keeps_the_one_answered_in_the_shot_for_a_while() -> None:
    room = Room({"a": -10.0, "b": 10.0, "c": 35.0})
    # a speaks at length; b, beside a, answers at length too
    script: Script = [(0.0, 6.0, "a"), (6.2, 13.0, "b")]
    shots = run(room, talk(script, room), 13.0)
    to_b = [s for s in cuts(shots, 6.0) if s.rule == "talker"]
    assert len(to_b) == 1 and "answering" in to_b[0].reason, to_b
    cut_t = to_b[0].t
    assert cut_t < 7.5
    # from the cut on b is framed (nearest the centre of a speaker shot), a at its edge ...
    early = between(shots, cut_t, cut_t + 1.5)
    assert early and all(framed(room, s, "b") and shows(room, s, "a") for s in early)
    # ... then the shot glides in to b alone, with no further cut
    late = between(shots, cut_t + 4.0, 13.0)
    assert late and all(framed(room, s, "b") and not shows(room, s, "a") for s in late)
    assert not cuts(shots, cut_t + 0.01)
    # off: the cut goes to b alone
    off = run(room, talk(script, room), 9.0, DirectorConfig(answer_two_shot_s=0.0))
    at = [s for s in cuts(off, 6.0) if s.rule == "talker"]
    assert at and "answering" not in at[0].reason and not shows(room, at[0], "a")
    # across the table (b sits between a and c) c's answer is framed alone
    across: Script = [(0.0, 6.0, "a"), (6.2, 10.0, "c")]
    shots = run(room, talk(across, room), 10.0)
    to_c = [s for s in cuts(shots, 6.0) if s.rule == "talker"]
    assert to_c and "answering" not in to_c[0].reason and not shows(room, to_c[0], "a")
    # b falls silent before the answer's time is up: the shot stays on both until someone talks (or the
    # silence gives the group), it does not tighten on nobody talking
    short: Script = [(0.0, 6.0, "a"), (6.2, 7.6, "b")]
    quiet = run(room, talk(short, room), 12.4)
    held = between(quiet, 8.0, 12.4)
    assert held and all(framed(room, s, "b") and shows(room, s, "a") for s in held)


def test_an_answers_two_shot_never_puts_a_picture_nearest_the_centre() -> None:
    # a print hangs on the wall between two neighbours: the answer's shot would have it nearer the centre
    # than the talker, so the talker gets their own speaker shot
    room = Room({"a": -10.0, "b": 10.0, "c": 35.0}, pictures={"p": 3.0})
    script: Script = [(0.0, 24.0, "a"), (24.2, 28.0, "b")]  # the print known by then (print_still_s)
    shots = run(room, talk(script, room), 28.0)
    to_b = [s for s in cuts(shots, 24.0) if s.rule == "talker"]
    assert to_b, cuts(shots)
    after = between(shots, to_b[0].t, 28.0)
    assert after and all(framed(room, s, "b") for s in after)
    # without the picture the same answer keeps a in the shot
    plain = Room({"a": -10.0, "b": 10.0, "c": 35.0})
    shots = run(plain, talk(script, plain), 26.0)
    to_b = [s for s in cuts(shots, 24.0) if s.rule == "talker"]
    assert to_b and shows(plain, to_b[0], "a", "b") and framed(plain, to_b[0], "b")
