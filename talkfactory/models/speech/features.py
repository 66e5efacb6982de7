"""Per-video-frame speech features: level, voicing and spectral balance, by plain DSP.

Frame ``i`` looks at a short window centred on ``t = i / fps`` and reads only that window
from the ``AudioSource``, so features stream through recordings of any length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from talkfactory.models.audio import AudioSource, frame_count

SILENCE_DBFS = -120.0
"""Level reported for digital silence (and the floor of every level)."""

LOW_BAND_HZ = (80.0, 1000.0)
"""First-formant region: rounded vowels (oo, w) and nasals keep nearly all their energy here."""
MID_BAND_HZ = (1000.0, 2000.0)
"""Second formant of open and back vowels (ah, aw)."""
HIGH_BAND_HZ = (2000.0, 4500.0)
"""Second/third formants of front vowels (ee, eh)."""
HISS_BAND_HZ = (4500.0, 8000.0)
"""Fricative noise (s, sh, f)."""
TOTAL_BAND_HZ = (80.0, 8000.0)
F1_BAND_HZ = (150.0, 1000.0)
"""Where the first formant lives; its centroid rises as the jaw opens (ee/oo ~300 Hz, ah ~700 Hz)."""
PITCH_HZ = (70.0, 400.0)
"""Voice fundamental search range for the voicing measure."""
PRE_EMPHASIS_HZ = 130.0
"""Corner of the first-difference filter applied before the spectral shares: it flattens the voice's
-6 dB/octave tilt so formants above the first one count at all (0.95 at 16 kHz)."""


class FrameFeatures(NamedTuple):
    """Speech features of one video frame's audio window."""

    rms_dbfs: float
    """RMS level in dBFS (full-scale sine = -3 dBFS); ``SILENCE_DBFS`` at worst."""
    voicing: float
    """0..1: peak of the normalised autocorrelation in the pitch range (1 = perfectly periodic)."""
    centroid_hz: float
    """Spectral centroid inside ``TOTAL_BAND_HZ`` (0 for silence)."""
    f1_hz: float
    """Centroid inside ``F1_BAND_HZ``: a first-formant proxy, higher for open vowels (0 for silence)."""
    low_ratio: float
    """Share of the total band's (pre-emphasised) energy in ``LOW_BAND_HZ``."""
    mid_ratio: float
    """Share in ``MID_BAND_HZ``."""
    high_ratio: float
    """Share in ``HIGH_BAND_HZ``."""
    hiss_ratio: float
    """Share in ``HISS_BAND_HZ`` (0 when the sample rate cannot reach it)."""


SILENT = FrameFeatures(SILENCE_DBFS, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def level_dbfs(samples: NDArray[np.float32]) -> float:
    """RMS level of ``samples`` in dBFS, floored at ``SILENCE_DBFS``."""
    if samples.size == 0:
        return SILENCE_DBFS
    ms = float(np.dot(samples, samples)) / samples.size
    return max(10.0 * math.log10(ms) if ms > 0 else SILENCE_DBFS, SILENCE_DBFS)


class FeatureExtractor:
    """Computes ``FrameFeatures`` for any frame of one ``AudioSource`` at one frame rate.

    Window, FFT bins and band masks are built once; each frame costs one read of
    ``window_s`` of audio, one real FFT and one inverse FFT.
    """

    def __init__(
        self, audio: AudioSource, fps: float, *, window_s: float = 0.04, lead_s: float = 0.0
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.audio = audio
        self.fps = float(fps)
        self.lead_s = lead_s
        rate = audio.sample_rate
        self.window_len = max(32, int(round(window_s * rate)))
        # Zero-padded to twice the window: the autocorrelation from the power spectrum is then linear.
        self.nfft = 1 << (2 * self.window_len - 1).bit_length()
        self._window = np.hanning(self.window_len).astype(np.float32)
        win_ac = np.fft.irfft(np.abs(np.fft.rfft(self._window, self.nfft)) ** 2, self.nfft)[: self.window_len]
        # Dividing by the window's own autocorrelation undoes the taper's bias towards short lags.
        self._win_ac = np.maximum(win_ac, win_ac[0] * 1e-3).astype(np.float64)
        freqs = np.fft.rfftfreq(self.nfft, 1.0 / rate)
        nyquist = rate / 2.0

        def band(lo_hi: tuple[float, float]) -> NDArray[np.bool_]:
            lo, hi = lo_hi
            return (freqs >= lo) & (freqs < min(hi, nyquist))

        self._total = band(TOTAL_BAND_HZ)
        self._total_freqs = freqs[self._total]
        self._low = band(LOW_BAND_HZ)[self._total]
        self._mid = band(MID_BAND_HZ)[self._total]
        self._f1 = band(F1_BAND_HZ)
        self._f1_freqs = freqs[self._f1]
        self._high = band(HIGH_BAND_HZ)[self._total]
        self._hiss = band(HISS_BAND_HZ)[self._total]
        self._pre_emphasis = np.float32(math.exp(-2.0 * math.pi * PRE_EMPHASIS_HZ / rate))
        self._min_lag = max(1, int(rate / PITCH_HZ[1]))
        self._max_lag = min(self.window_len - 1, int(math.ceil(rate / PITCH_HZ[0])))

    def window_start(self, index: int) -> int:
        """First sample of frame ``index``'s window (it is centred on the frame's time)."""
        t = index / self.fps + self.lead_s
        return int(round(t * self.audio.sample_rate)) - self.window_len // 2

    def frame(self, index: int) -> FrameFeatures:
        """Features of video frame ``index``."""
        start = self.window_start(index)
        return self.features_of(self.audio.read(start, start + self.window_len))

    def features_of(self, samples: NDArray[np.float32]) -> FrameFeatures:
        """Features of one window of samples (length ``window_len``)."""
        x = samples.astype(np.float32, copy=False)
        x = x - np.float32(x.mean()) if x.size else x
        rms_dbfs = level_dbfs(x)
        if rms_dbfs <= SILENCE_DBFS:
            return SILENT
        windowed = x * self._window
        spec = np.fft.rfft(windowed, self.nfft)
        power = spec.real**2 + spec.imag**2
        voicing = self._voicing(power)
        emphasised = windowed.copy()
        emphasised[1:] -= self._pre_emphasis * windowed[:-1]
        spec = np.fft.rfft(emphasised, self.nfft)
        power = spec.real**2 + spec.imag**2
        band_power = power[self._total]
        total = float(band_power.sum())
        if total <= 0.0:
            return FrameFeatures(rms_dbfs, voicing, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        centroid = float(np.dot(band_power, self._total_freqs)) / total
        f1_power = power[self._f1]
        f1_total = float(f1_power.sum())
        f1 = float(np.dot(f1_power, self._f1_freqs)) / f1_total if f1_total > 0 else 0.0

        def share(mask: NDArray[np.bool_]) -> float:
            return float(band_power[mask].sum()) / total

        return FrameFeatures(
            rms_dbfs,
            voicing,
            centroid,
            f1,
            share(self._low),
            share(self._mid),
            share(self._high),
            share(self._hiss),
        )

    def _voicing(self, power: NDArray[np.floating[Any]]) -> float:
        ac = np.fft.irfft(power, self.nfft)[: self.window_len] / self._win_ac
        if ac[0] <= 0:
            return 0.0
        peak = float(ac[self._min_lag : self._max_lag + 1].max()) / float(ac[0])
        return min(max(peak, 0.0), 1.0)

    def __iter__(self) -> Iterator[FrameFeatures]:
        """Features of every frame the audio spans at this frame rate."""
        for i in range(frame_count(self.audio, self.fps)):
            yield self.frame(i)


def speech_features(
    audio: AudioSource, fps: float, num_frames: int | None = None, **options: float
) -> list[FrameFeatures]:
    """Features of frames ``0 .. num_frames-1`` (default: as many as the audio spans)."""
    extractor = FeatureExtractor(audio, fps, **options)
    count = frame_count(audio, fps) if num_frames is None else num_frames
    return [extractor.frame(i) for i in range(count)]
