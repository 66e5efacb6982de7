"""An ``AudioSource`` at another sample rate, resampled on the fly by sample range.

Recordings arrive at 44.1 or 48 kHz; Wav2Lip's features need 16 kHz. Each read resamples just
the samples it needs plus a margin wider than the polyphase filter, starting on a sample where
input and output grids coincide, so chunked reads equal resampling the whole signal at once.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly

from talkfactory.models.audio import AudioSource


class ResampledAudio:
    """``source`` seen at ``rate`` Hz (scipy's polyphase Kaiser-windowed filter)."""

    def __init__(self, source: AudioSource, rate: int) -> None:
        self.source = source
        self._rate = int(rate)
        g = math.gcd(self._rate, source.sample_rate)
        self._up = self._rate // g
        self._down = source.sample_rate // g
        # resample_poly's filter reaches 10 * max(up, down) upsampled samples each side.
        reach = math.ceil(10 * max(self._up, self._down) / self._up) + 2
        self._margin_blocks = math.ceil(reach / self._down)

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def num_samples(self) -> int:
        return math.ceil(self.source.num_samples * self._up / self._down)

    def read(self, start: int, stop: int) -> NDArray[np.float32]:
        """Samples ``[start, stop)`` at the new rate; zero outside the audio."""
        out = np.zeros(max(0, stop - start), dtype=np.float32)
        lo, hi = max(start, 0), min(stop, self.num_samples)
        if hi <= lo:
            return out
        up, down, margin = self._up, self._down, self._margin_blocks
        # Blocks of `up` output samples line up with blocks of `down` input samples.
        first_block = lo // up - margin
        end_block = -(-hi // up) + margin
        chunk = self.source.read(first_block * down, end_block * down).astype(np.float64)
        resampled = resample_poly(chunk, up, down)
        offset = lo - first_block * up
        out[lo - start : hi - start] = resampled[offset : offset + (hi - lo)]
        return out


def at_rate(source: AudioSource, rate: int) -> AudioSource:
    """``source`` itself when it is already at ``rate``, else a ``ResampledAudio`` view of it."""
    return source if source.sample_rate == rate else ResampledAudio(source, rate)
