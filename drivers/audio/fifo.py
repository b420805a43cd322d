"""A queue of mono float32 samples kept as the chunks they came in: the speaker's (device side) and the
playback path's (one per far end). Not thread-safe: its owner locks where two threads use it."""

from __future__ import annotations

from collections import deque

import numpy as np


class SampleFifo:
    """``push`` chunks, ``take`` any number of samples (zeros past the end), ``drop_oldest`` beyond a limit."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self.size = 0  # samples queued

    def clear(self) -> None:
        self._chunks.clear()
        self.size = 0

    def push(self, x: np.ndarray) -> None:
        if x.size:
            self._chunks.append(np.asarray(x, dtype=np.float32).reshape(-1))
            self.size += x.size

    def take(self, n: int) -> tuple[np.ndarray, int]:
        """The next ``n`` samples (float32), zero-padded past what is queued, and how many were queued."""
        out = np.zeros(n, dtype=np.float32)
        filled = 0
        while filled < n and self._chunks:
            head = self._chunks[0]
            k = min(n - filled, head.size)
            out[filled : filled + k] = head[:k]
            if k == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[k:]
            filled += k
        self.size -= filled
        return out, filled

    def drop_oldest(self, keep: int) -> int:
        """Drop the oldest samples so that at most ``keep`` stay; returns how many were dropped."""
        extra = self.size - max(0, keep)
        if extra > 0:
            self.take(extra)
            return extra
        return 0
