"""A streaming resampler: blocks in at the device's rate, blocks out at the array's rate.

It gives exactly what ``scipy.signal.resample_poly(x, up, down)`` gives on the whole signal (away from the
signal's two ends), block by block: it keeps the last input samples that the polyphase filter still needs,
and hands out each output sample once all the input it depends on has arrived (a delay of the filter's
half length, about 1 ms for 48 kHz -> 16 kHz). Output sample j (counted from the first input sample) is
at input time ``j * down / up`` samples, so stamps stay exact.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly


class StreamResampler:
    """``in_rate`` -> ``out_rate`` on (frames, channels) float32 blocks, continuous across blocks."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"rates must be positive, got {in_rate} -> {out_rate}")
        g = math.gcd(int(in_rate), int(out_rate))
        self.up, self.down = int(out_rate) // g, int(in_rate) // g
        self.in_rate, self.out_rate, self.channels = int(in_rate), int(out_rate), int(channels)
        # resample_poly's default filter: 2 * 10 * max(up, down) + 1 taps at the upsampled rate
        self._half_in = math.ceil(10 * max(self.up, self.down) / self.up) + 1  # its half length in input samples
        self.reset()

    def reset(self) -> None:
        """Start afresh (after a gap in the input)."""
        self._buf = np.zeros((0, self.channels), dtype=np.float64)
        self._base = 0  # global input index of _buf[0]; always a multiple of ``down``
        self._n_in = 0  # input samples seen since reset
        self._n_out = 0  # output samples handed out since reset

    @property
    def samples_out(self) -> int:
        """Output samples handed out since the last reset."""
        return self._n_out

    def input_time(self, j: int) -> float:
        """Where output sample ``j`` (since reset) lies, in input samples since reset."""
        return j * self.down / self.up

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed a block (frames, channels); returns the output samples that are now complete."""
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected (frames, {self.channels}) samples, got {x.shape}")
        if self.up == self.down:
            self._n_in += x.shape[0]
            self._n_out += x.shape[0]
            return x.astype(np.float32, copy=False)
        self._buf = np.concatenate([self._buf, x.astype(np.float64)])
        self._n_in += x.shape[0]
        # output j is complete when input j*down/up + half_in has arrived
        last_ready = math.floor((self._n_in - 1 - self._half_in) * self.up / self.down)
        if last_ready < self._n_out:
            return np.zeros((0, self.channels), dtype=np.float32)
        y = resample_poly(self._buf, self.up, self.down, axis=0)
        first_local = self._n_out - self._base * self.up // self.down
        out = y[first_local:last_ready + 1 - self._base * self.up // self.down]
        self._n_out = last_ready + 1
        # keep what the next outputs still need, from a multiple of ``down`` so the phase is unchanged
        keep_from = (self._n_out * self.down // self.up) - self._half_in - 1
        keep_from = max(self._base, (keep_from // self.down) * self.down)
        self._buf = self._buf[keep_from - self._base:]
        self._base = keep_from
        return np.asarray(out, dtype=np.float32)
