"""The far-end share: how much of the array's sound the playback reference explains, alone and over a stream."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from appliance.perception.farend import SILENT_DB, FarendMeter, farend_share

FS = 16000
MAX_DELAY = 960  # 60 ms
WINDOW = 4096  # 256 ms


def _room(seconds: float, delay: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference (speech-like: noise shaped into the speech band, in bursts), the mics hearing it through
    a room path (``delay`` samples and a decaying tail) plus a local talker of their own, and the local
    talker alone."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    b, a = scipy.signal.butter(4, [300.0, 3400.0], btype="bandpass", fs=FS)
    bursts = np.repeat(rng.random(n // 1600 + 1) < 0.7, 1600)[:n]
    ref = scipy.signal.lfilter(b, a, rng.standard_normal(n)) * bursts
    tail = rng.standard_normal(800) * np.exp(-np.arange(800) / 120.0) * 0.3
    tail[0] = 1.0
    path = np.concatenate([np.zeros(delay), tail])
    echo = np.convolve(ref, path)[:n]
    local = scipy.signal.lfilter(b, a, rng.standard_normal(n)) * 0.5
    gains = np.array([1.0, 0.9, 0.8, 1.1])
    mics = echo[:, None] * gains + rng.standard_normal((n, 4)) * 0.01
    return ref.astype(np.float32), mics.astype(np.float32), (local[:, None] * gains).astype(np.float32)


def test_the_reference_heard_through_the_room_is_explained_and_its_delay_found() -> None:
    ref, mics, local = _room(2.0, delay=300, seed=1)
    end = FS  # a window ending at 1 s, with the reference's history before it
    window = mics[end - WINDOW : end]
    history = ref[end - WINDOW - MAX_DELAY : end]
    far = farend_share(window, history, FS, MAX_DELAY)
    assert far.delay == 300
    assert far.share > 0.8
    near = farend_share(local[end - WINDOW : end], history, FS, MAX_DELAY)  # the mics hear only a local talker
    assert near.share < 0.1
    silent = farend_share(window, np.zeros(WINDOW + MAX_DELAY, np.float32), FS, MAX_DELAY)
    assert silent.share == 0.0 and silent.reference_db < SILENT_DB


def test_a_window_or_reference_of_the_wrong_size_is_refused() -> None:
    ref, mics, _ = _room(1.0, delay=100, seed=2)
    with pytest.raises(ValueError, match="reference has 4096 samples, need 5056"):
        farend_share(mics[:WINDOW], ref[:WINDOW], FS, MAX_DELAY)
    with pytest.raises(ValueError, match="too short"):
        farend_share(mics[:512], ref[: 512 + MAX_DELAY], FS, MAX_DELAY)
    with pytest.raises(ValueError, match="max_delay"):
        FarendMeter(FS, -1)


def test_the_meter_over_a_stream_gives_the_figures_of_each_window_alone() -> None:
    """The meter keeps the spectra of the frames it has seen. Whether the delay is searched, given, or
    changes (the reference's frames are aligned anew), and after a reset on other audio, each window's
    estimate is the one :func:`farend_share` gives for that window alone."""
    meter = FarendMeter(FS, MAX_DELAY)
    for seed, delay in ((3, 200), (4, 450)):  # the second stream starts its sample indices again
        meter.reset()
        ref, mics, local = _room(3.0, delay=delay, seed=seed)
        mics[FS : 2 * FS] += local[FS : 2 * FS]  # double talk in the middle
        given: int | None = None
        compared = 0
        for k, end in enumerate(range(WINDOW // 2 + 512, mics.shape[0] + 1, 512)):
            n = min(WINDOW, end)
            start = end - n
            window = mics[start:end]
            history = ref[max(0, end - n - MAX_DELAY) : end]
            history = np.concatenate([np.zeros(n + MAX_DELAY - history.size, np.float32), history])
            # searched every third window, given (sometimes one sample off) otherwise
            ask = None if given is None or k % 3 == 0 else given + (k % 2)
            got = meter.share(window, history, start, ask)
            alone = farend_share(window, history, FS, MAX_DELAY, ask)
            assert got == alone, (seed, end, ask)
            given = got.delay
            compared += 1
        assert compared > 80
