"""The hearing grid: a rendered talker is where it was asked to be, and the scoring counts what it should."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from appliance.bench.hearing import (
    ARRAYS,
    CAMERA_FIELD_DEG,
    LOSS_CAUSES,
    SPEECH_DBFS,
    STAGES,
    CalibratedListener,
    Cell,
    CellMetrics,
    Counts,
    Recording,
    _load,
    _save,
    at_gain,
    calibration_takes,
    cost_split,
    estimator,
    evaluate_many,
    hearing_factory,
    listener_factory,
    losses,
    pra_factory,
    recordings,
    render_group,
    run,
    score,
    summary,
)
from appliance.config import DoaConfig
from appliance.messages import Doa
from appliance.perception.doa import SrpPhat

TALKERS = ((-40.0, 2.0), (25.0, 1.5))  # (azimuth deg, distance m), both in SRP-PHAT's front half


def err(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def dry() -> Recording:
    """A dry, quiet cell of the grid (RT60 0.2 s, 30 dB SNR) with the talkers placed by hand."""
    return render_group(0.2, "circle6", seed=1, snrs=[30.0], talkers_at=TALKERS)[30.0]


def test_talkers_are_at_the_requested_azimuths(dry: Recording) -> None:
    assert dry.samples.shape[1] == len(ARRAYS["circle6"])
    assert [round(az, 1) for az, _ in dry.turns] == [a for a, _ in TALKERS]
    cfg = DoaConfig()
    srp = SrpPhat(np.asarray(dry.positions), 16000, cfg)
    hop = round(cfg.hop_ms * 16)
    for az, spans in dry.turns:
        errors = []
        for a, b in spans:
            for start in range(round(a * 16000), round(b * 16000) - srp.block_len, hop):
                found, _ = srp.estimate(dry.samples[start : start + srp.block_len])
                errors.append(err(found, az))
        assert len(errors) > 30
        assert np.median(errors) < 3.0, f"talker at {az} deg: median error {np.median(errors):.1f} deg"


def test_scoring_counts_truth_and_mistakes(dry: Recording) -> None:
    """An oracle that reports each talker's azimuth during speech, and a door slam as speech."""
    t = np.arange(0.064, dry.duration_s, 0.032)
    doas = []
    for ti in t:
        mid = ti - 0.032
        az = next((a for a, spans in dry.turns if any(x <= mid < y for x, y in spans)), None)
        door = dry.impulses[0][1] <= mid < dry.impulses[0][2]
        doas.append(Doa(float(ti), az, bool(az is not None or door)))
    c = score(dry, doas)
    assert c.speech_blocks > 100 and c.silence_blocks > 40 and c.noise_blocks > 80
    assert len(c.errors) == c.speech_blocks and max(c.errors) < 1e-9
    assert c.silence_flagged == 0 and c.noise_flagged == 0
    assert (c.impulse_events, c.impulses_flagged) == (4, 1)
    assert c.impulse_kinds == {"door": [1, 1], "chair": [0, 1], "typing": [0, 1], "cough": [0, 1]}
    both = Counts()
    both.add(c)
    both.add(c)
    assert both.impulse_kinds["door"] == [2, 2]
    text = summary({"oracle": [CellMetrics.of(0.4, 10.0, "x", both)]})
    assert "- oracle: chair 0/2, cough 0/2, door 2/2, typing 0/2; -" in text
    # a deaf estimator: nothing found, nothing false
    c = score(dry, [Doa(float(ti), None, False) for ti in t])
    assert c.errors == [] and c.vad_speech == 0 and c.impulses_flagged == 0


def test_todays_hearing_through_the_evaluation_api(dry: Recording, tmp_path: Path) -> None:
    doas, cpu = run(hearing_factory(), dry)
    m = CellMetrics.of(0.2, 30.0, "circle6", score(dry, doas, cpu))
    assert m.mae_deg < 5.0 and m.within10 > 0.9 and m.recall > 0.3
    assert m.fa_noise == 0.0 and 0.0 < m.cpu_per_s < 1.0
    # the render cache keeps samples and truth
    path = tmp_path / f"{dry.cell.key()}.npz"
    _save(dry, path)
    back = _load(dry.cell, path)
    assert back is not None
    assert back.turns == dry.turns and back.impulses == dry.impulses and back.silences == dry.silences
    assert np.max(np.abs(back.samples - dry.samples)) < 1e-4


def test_an_array_on_the_front_wall_is_heard_in_front_of_the_wall_only(dry: Recording) -> None:
    """Every estimator hears ``circle6-wall`` as its installer sets it up (``[tracker] full_circle = false``):
    nobody talks from inside the wall, what comes from there is the wall's reflection. The same array on
    the table is heard all around."""
    wall = replace(dry, cell=Cell(0.2, 30.0, "circle6-wall", 1))
    assert estimator(listener_factory(), wall).listener.srp.full_circle is False  # type: ignore[attr-defined]
    assert estimator(listener_factory(), dry).listener.srp.full_circle is True  # type: ignore[attr-defined]
    front = estimator(pra_factory("SRP"), wall)._algo.grid.azimuth  # type: ignore[attr-defined]
    around = estimator(pra_factory("SRP"), dry)._algo.grid.azimuth  # type: ignore[attr-defined]
    assert np.ptp(np.degrees(front)) <= 180.0 < np.ptp(np.degrees(around))
    # under the camera, both search within its field only ([tracker] max_azimuth_deg); on the table, all around
    grid = estimator(listener_factory(), wall).listener.srp.grid_deg  # type: ignore[attr-defined]
    assert grid.min() == -CAMERA_FIELD_DEG and grid.max() == CAMERA_FIELD_DEG
    assert np.abs(90.0 - np.degrees(front)).max() <= CAMERA_FIELD_DEG  # theirs: counter-clockwise from +x


def test_the_arrays_gain(dry: Recording, tmp_path: Path) -> None:
    """`--mic-gain-db`: the recordings as an array with more (or less) gain delivers them, clipped at full
    scale like a converter; the renders in the cache are left as they are."""
    x = dry.samples
    assert at_gain(x, 0.0) is x
    small = np.abs(x) < 0.09
    assert np.allclose(at_gain(x, 20.0)[small], 10.0 * x[small], rtol=1e-5, atol=1e-7)
    assert np.allclose(at_gain(x, -6.0), x * 10 ** (-6.0 / 20.0), rtol=1e-5, atol=1e-9)
    loud = at_gain(x, 60.0)
    assert loud.dtype == np.float32 and np.max(np.abs(loud)) == 1.0
    (quiet,) = recordings([dry.cell], tmp_path, -10.0)
    (again,) = recordings([dry.cell], tmp_path)
    assert np.allclose(quiet.samples, again.samples * 10 ** (-0.5), atol=4e-5)  # the cache keeps 16 bits


def test_the_listeners_cost_split(dry: Recording) -> None:
    """`python -m appliance.bench.hearing --cost`: every stage of the default listener is timed, and the
    stages add up to no more than the total."""
    split = cost_split([dry])
    assert set(split) == {label for label, _ in STAGES} | {"other", "total"}
    for label in ("voice gate (Silero)", "evidence (transform)", "evidence (SRP)", "tracker"):
        assert split[label] > 0.0, label
    staged = sum(v for k, v in split.items() if k not in ("other", "total"))
    assert staged <= split["total"] * 1.05 + 1e-4
    assert 0.0 < split["total"] < 1.0


def test_the_listeners_losses_add_up_to_the_scored_speech(dry: Recording) -> None:
    """`python -m appliance.bench.hearing --losses`: every speech block the score counts is reported or has one
    cause. In the dry room the few lost are the talkers' first words, held by the voice gate (or their sources
    not yet confirmed); with a ceiling-loudspeaker limit below every seated talker, their speech is lost to
    ``above``."""
    from appliance.bench.hearing import Mounted
    from appliance.config import TrackerConfig
    from appliance.perception.listening import ListeningDoas

    got = losses(dry)
    counts = score(dry, run(listener_factory(), dry)[0])
    assert got["speech"] == counts.speech_blocks > 60 and got["reported"] == len(counts.errors)
    assert got["reported"] + sum(got[k] for k in LOSS_CAUSES) == got["speech"]
    assert got["reported"] >= 0.9 * got["speech"]
    assert got["voice gate"] + got["no source near"] == got["speech"] - got["reported"]

    low = Mounted(
        lambda mic, full_circle, field_deg: ListeningDoas(
            mic,
            TrackerConfig(full_circle=full_circle, max_azimuth_deg=field_deg, max_talker_elevation_deg=5.0),
            DoaConfig(),
        )
    )
    ceiling = losses(dry, low)
    # (a new source's first estimates may read level: reported until its elevation settles)
    assert ceiling["speech"] == got["speech"] and ceiling["reported"] <= 0.1 * ceiling["speech"]
    assert ceiling["above"] >= 0.8 * ceiling["speech"], ceiling


def test_the_guided_calibration_undoes_a_linear_arrays_pull_towards_broadside(tmp_path: Path) -> None:
    """`listener+calibration`: the linear array under the camera, in a reverberant room, hears talkers off
    the axis nearer its broadside than they are; the guided calibration's three captures in the same room
    (cached with the renders) fit a map that brings them back."""
    cell = Cell(0.6, 20.0, "linear4", 1)
    takes = calibration_takes(cell, tmp_path)
    assert [t.name for t in takes] == ["left", "centre", "right"]
    assert takes[0].camera_deg < -40.0 and abs(takes[1].camera_deg) < 12.0 and takes[2].camera_deg > 40.0
    again = calibration_takes(cell, tmp_path)  # from the cache
    assert np.max(np.abs(again[2].samples - takes[2].samples)) == 0.0
    assert len(list(tmp_path.glob("*.npz"))) == 3  # every SNR of the grid from the one render

    calibrated = CalibratedListener(listener_factory(), tmp_path)
    res = evaluate_many({"listener": listener_factory(), "calibrated": calibrated}, [cell], tmp_path)
    raw, cal = res["listener"][0], res["calibrated"][0]
    assert raw.mae_deg > 8.0, raw  # the pull this test is about
    assert cal.mae_deg < 0.5 * raw.mae_deg and cal.within10 > 0.9, (raw, cal)
    assert cal.recall == raw.recall  # the map moves azimuths, it adds or drops none
    assert calibrated.refusals == []
    fit = calibrated.fits[cell]
    assert "over 3 points" in fit and float(fit.split("scale ")[1].split()[0]) > 1.1, fit
    # an array on the table is not calibrated (the picture is not its frame): no row for it
    table = Cell(0.2, 20.0, "respeaker4", 1)
    assert "calibrated" not in evaluate_many({"calibrated": calibrated}, [table], tmp_path)
    assert abs(calibrated.gains[cell]) == 0.0  # at the renders' level the gain stays

    # the same array 12 dB too quiet, calibrated so: the calibration's gain brings it back
    quiet = CalibratedListener(listener_factory(), tmp_path, gain_db=-12.0, map_azimuths=False, arrays=ARRAYS)
    res = evaluate_many({"gained": quiet, "listener": listener_factory()}, [cell], tmp_path, gain_db=-12.0)
    assert 10.0 <= quiet.gains[cell] <= 14.0, quiet.gains
    gained = res["gained"][0]
    assert abs(gained.recall - raw.recall) <= 0.03 and abs(gained.mae_deg - raw.mae_deg) <= 1.0, (raw, gained)
    rec = next(iter(recordings([cell], tmp_path)))
    factory = quiet.for_recording(replace(rec, samples=at_gain(rec.samples, -12.0)))
    assert factory is not None
    heard = run(factory, replace(rec, samples=at_gain(rec.samples, -12.0)))[0]
    as_rendered = run(listener_factory(), rec)[0]
    levels = [float(np.median([d.level_db for d in doas if d.speech])) for doas in (heard, as_rendered)]
    assert abs(levels[0] - levels[1]) <= 2.0, levels  # heard at the level of the renders, not 12 dB under


def test_the_hold_out_rooms_are_other_rooms_whose_talkers_are_where_the_truth_says() -> None:
    """``--simulator habets``: another simulator's room (its own key and layout) at the grid's speech level,
    whose talkers the listener finds at the azimuths the recording's truth gives."""
    held = render_group(0.2, "respeaker4", seed=1, snrs=[20.0], sim="habets")[20.0]
    grid_cell = Cell(0.2, 20.0, "respeaker4", 1)
    assert held.cell == replace(grid_cell, sim="habets") and held.cell.key() != grid_cell.key()
    assert held.cell.name.endswith("(habets)")
    spans = [(a, b) for _, s in held.turns for a, b in s]
    talk = np.concatenate([held.samples[round(a * 16000) : round(b * 16000)] for a, b in spans])
    assert abs(10 * np.log10(np.mean(talk.astype(np.float64) ** 2)) - SPEECH_DBFS) < 2.0
    doas, _ = run(listener_factory(), held)
    counts = score(held, doas)
    assert counts.speech_blocks > 100 and len(counts.errors) > 0.7 * counts.speech_blocks
    assert float(np.mean(counts.errors)) < 5.0, float(np.mean(counts.errors))
    with pytest.raises(ValueError, match="unknown simulator 'odas'"):
        render_group(0.2, "respeaker4", seed=1, snrs=[20.0], sim="odas")
