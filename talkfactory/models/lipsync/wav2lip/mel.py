"""Wav2Lip's audio features, computed here with numpy and read from audio by sample range.

The constants are the published model's preprocessing (its ``hparams.py`` / ``audio.py``):
16 kHz mono, pre-emphasis 0.97, STFT with n_fft 800, hop 200 and an 800-sample periodic Hann
window, centred frames; magnitude; an 80-band Slaney mel filterbank over 55-7600 Hz (librosa's
default ``htk=False, norm="slaney"``); ``20 * log10(max(1e-5, x)) - 20`` dB; and the symmetric
normalisation ``clip(8 * (dB + 100) / 100 - 4, -4, 4)``. One mel frame every 200 samples is
80 mel frames per second; a video frame sees 16 of them (200 ms).

Streaming: mel frame ``m`` is centred on sample ``m * 200`` and reads samples ``[m*200 - 400,
m*200 + 400)`` of the pre-emphasised signal, zero outside the audio, so any range of frames is
computed from just the samples it needs and chunked output equals whole-file output. The
original (librosa 0.7) padded the two ends by reflection instead of zeros; only the first and
last two mel frames (25 ms) of a file differ.

Video frame ``i`` at ``fps`` starts its window at mel frame ``floor(80 * i / fps)``, computed in
exact rational arithmetic, so nothing drifts at 29.97 fps however long the recording is.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from talkfactory.errors import ConfigurationError
from talkfactory.models.audio import AudioSource

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 80
WINDOW_FRAMES = 16
"""Mel frames per video frame window."""

_AMP_FLOOR = 10.0 ** (MIN_LEVEL_DB / 20.0)  # 1e-5


def hz_to_mel(hz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / f_sp
    above = hz >= min_log_hz
    mel[above] = min_log_mel + np.log(hz[above] / min_log_hz) / logstep
    return np.asarray(mel, dtype=np.float64)


def mel_to_hz(mel: NDArray[np.float64]) -> NDArray[np.float64]:
    """Inverse of ``hz_to_mel``."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * f_sp
    above = mel >= min_log_mel
    hz[above] = min_log_hz * np.exp(logstep * (mel[above] - min_log_mel))
    return np.asarray(hz, dtype=np.float64)


@lru_cache(maxsize=4)
def mel_filterbank(
    sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> NDArray[np.float64]:
    """(n_mels, 1 + n_fft // 2) triangular filters, area-normalised (Slaney), as librosa builds them."""
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights: NDArray[np.float64] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _hann() -> NDArray[np.float64]:
    # Periodic Hann (scipy ``get_window("hann", 800, fftbins=True)``), what librosa.stft uses.
    n = np.arange(WIN)
    w: NDArray[np.float64] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WIN)
    w.setflags(write=False)
    return w


def num_mel_frames(num_samples: int) -> int:
    """Mel frames of a whole signal with centred frames: ``1 + num_samples // 200``."""
    return 1 + max(0, num_samples) // HOP


def mel_frames(audio: AudioSource, start: int, stop: int) -> NDArray[np.float32]:
    """Normalised mel frames ``[start, stop)`` of a 16 kHz source, shape (80, stop - start).

    Reads only samples ``[start*200 - 401, (stop-1)*200 + 400)``; frames past either end see zeros.
    """
    if audio.sample_rate != SAMPLE_RATE:
        raise ConfigurationError(
            f"mel features need {SAMPLE_RATE} Hz audio, got {audio.sample_rate} Hz (use resample.at_rate)"
        )
    count = stop - start
    if count <= 0:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    first = start * HOP - N_FFT // 2  # first sample of the first frame (centred frames)
    last = (stop - 1) * HOP + N_FFT // 2  # one past the last sample of the last frame
    # One sample more on the left: pre-emphasis of sample n needs sample n - 1.
    raw = audio.read(first - 1, last).astype(np.float64)
    emphasised = raw[1:] - PREEMPHASIS * raw[:-1]
    # The filter runs over the audio only; past its end the padded signal is zero, not -0.97 * x[N-1].
    beyond = audio.num_samples - first
    if beyond < emphasised.shape[0]:
        emphasised[max(0, beyond) :] = 0.0
    frames = sliding_window_view(emphasised, N_FFT)[::HOP]
    magnitude = np.abs(np.fft.rfft(frames * _hann(), axis=1))  # (count, 401)
    mel = mel_filterbank() @ magnitude.T  # (80, count)
    db = 20.0 * np.log10(np.maximum(_AMP_FLOOR, mel)) - REF_LEVEL_DB
    normalised = (2.0 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.asarray(np.clip(normalised, -MAX_ABS_VALUE, MAX_ABS_VALUE), dtype=np.float32)


def exact_fps(fps: float) -> Fraction:
    """The frame rate as an exact ratio: 29.97 -> 2997/100, 30000/1001 as a float -> 30000/1001."""
    if not fps > 0:
        raise ConfigurationError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(100_000)


def window_start(frame_index: int, fps: float | Fraction, num_samples: int | None = None) -> int:
    """First mel frame of video frame ``frame_index``'s 16-frame window: ``floor(80 * i / fps)``.

    With ``num_samples`` the window is kept inside the audio as the published inference does
    (a window that would run past the last mel frame becomes the last 16 frames).
    """
    rate = fps if isinstance(fps, Fraction) else exact_fps(fps)
    start = (MEL_FRAMES_PER_SECOND * frame_index * rate.denominator) // rate.numerator
    if num_samples is not None:
        total = num_mel_frames(num_samples)
        if start + WINDOW_FRAMES > total:
            start = max(0, total - WINDOW_FRAMES)
    return int(start)


def mel_windows(
    audio: AudioSource, frame_indices: NDArray[np.int64] | list[int], fps: float
) -> NDArray[np.float32]:
    """The model's audio input for the given video frames: (n, 1, 80, 16) float32.

    Computes the mel frames spanning all the windows once, so a batch of neighbouring frames
    (whose windows overlap) costs little more than its own span.
    """
    indices = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    out = np.empty((indices.shape[0], 1, N_MELS, WINDOW_FRAMES), dtype=np.float32)
    if indices.shape[0] == 0:
        return out
    rate = exact_fps(fps)
    starts = np.array([window_start(int(i), rate, audio.num_samples) for i in indices], dtype=np.int64)
    lo, hi = int(starts.min()), int(starts.max()) + WINDOW_FRAMES
    span = mel_frames(audio, lo, hi)
    for k, s in enumerate(starts):
        out[k, 0] = span[:, s - lo : s - lo + WINDOW_FRAMES]
    return out
