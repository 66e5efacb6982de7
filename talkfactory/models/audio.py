"""Audio as backends see it: mono float32 samples at a known rate, read by sample range.

Backends pull just the window they need for each video frame, so a two-hour recording
never has to sit in memory; infra supplies a file-backed implementation of the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


class AudioSource(Protocol):
    """Random access to mono float32 samples in [-1, 1]."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    def read(self, start: int, stop: int) -> NDArray[np.float32]:
        """Samples ``[start, stop)``; ranges outside the audio are zero-filled, never an error."""
        ...


class ArrayAudio:
    """An in-memory ``AudioSource`` (clips, tests)."""

    def __init__(self, samples: NDArray[Any], sample_rate: int) -> None:
        self._samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        self._rate = int(sample_rate)

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def num_samples(self) -> int:
        return int(self._samples.shape[0])

    def read(self, start: int, stop: int) -> NDArray[np.float32]:
        return read_padded(self._samples, start, stop)


def read_padded(samples: NDArray[np.float32], start: int, stop: int) -> NDArray[np.float32]:
    """Slice ``samples[start:stop]``, zero-filling whatever falls outside the array."""
    out = np.zeros(max(0, stop - start), dtype=np.float32)
    lo, hi = max(start, 0), min(stop, samples.shape[0])
    if hi > lo:
        out[lo - start : hi - start] = samples[lo:hi]
    return out


def duration_seconds(audio: AudioSource) -> float:
    return audio.num_samples / audio.sample_rate


def frame_count(audio: AudioSource, fps: float) -> int:
    """Output frames for ``audio`` at ``fps``: the video ends within one frame of the audio."""
    return max(1, int(round(duration_seconds(audio) * fps)))


class SliceAudio:
    """A window ``[start, stop)`` (in samples) of another source, re-based to sample 0 (a clip)."""

    def __init__(self, source: AudioSource, start: int, stop: int) -> None:
        self._source, self._start = source, max(0, int(start))
        self._stop = min(int(stop), source.num_samples)

    @property
    def sample_rate(self) -> int:
        return self._source.sample_rate

    @property
    def num_samples(self) -> int:
        return max(0, self._stop - self._start)

    def read(self, start: int, stop: int) -> NDArray[np.float32]:
        # Reads past the window's ends are silence, not the neighbouring speech.
        lo, hi = max(start, 0), min(stop, self.num_samples)
        out = np.zeros(max(0, stop - start), dtype=np.float32)
        if hi > lo:
            out[lo - start : hi - start] = self._source.read(self._start + lo, self._start + hi)
        return out
