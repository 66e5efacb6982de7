"""Loudness (ITU-R BS.1770-4 / EBU R 128), true peak, normalisation to a target, and an SNR estimate.

Integrated loudness follows ITU-R BS.1770-4 §2 and Annex 1: K-weighting (a high-shelf "stage 1"
pre-filter and the "RLB" high-pass), mean square over 400 ms blocks with 75 % overlap, an absolute
gate at -70 LKFS and a relative gate 10 LU below the loudness of the blocks above the absolute gate,
``L = -0.691 + 10 log10(mean z)``. The filters are derived for any sample rate from the analogue
prototypes the way libebur128 does (same coefficients as the standard's table at 48 kHz), so clips
at 16 kHz and 48 kHz measure alike. True peak follows BS.1770-4 Annex 2: oversample to at least
192 kHz (x4 at 48 kHz) and take the largest absolute value, in dBTP. EBU R 128 sets the -23 LUFS
broadcast target; podcasts and streams commonly use -16 LUFS with a -1 to -2 dBTP ceiling.

Mono only: a mono channel has weight 1, which is what ffmpeg's ``ebur128`` filter reports too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import signal

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_SECONDS = 0.4
STEP_SECONDS = 0.1  # 75 % overlap
SILENCE_LUFS = -math.inf


def k_weighting_sos(sample_rate: int) -> NDArray[np.float64]:
    """The BS.1770 K-weighting at ``sample_rate`` as two second-order sections for ``sosfilt``."""
    fs = float(sample_rate)
    # stage 1: high shelf, +4 dB above ~1.7 kHz (models the head)
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / fs)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    ]
    # stage 2: RLB high-pass at ~38 Hz
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / fs)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def _blocks(weighted_square: NDArray[np.float64], sample_rate: int) -> NDArray[np.float64]:
    block, step = round(BLOCK_SECONDS * sample_rate), round(STEP_SECONDS * sample_rate)
    if weighted_square.shape[0] < block:
        return np.zeros(0, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(weighted_square)])
    starts = np.arange(0, weighted_square.shape[0] - block + 1, step)
    return np.asarray((csum[starts + block] - csum[starts]) / block, dtype=np.float64)


def block_powers(samples: NDArray[np.floating[Any]], sample_rate: int) -> NDArray[np.float64]:
    """Mean square of the K-weighted signal over each 400 ms gating block (100 ms steps)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.shape[0] < round(BLOCK_SECONDS * sample_rate):
        return np.zeros(0, dtype=np.float64)
    z = signal.sosfilt(k_weighting_sos(sample_rate), x)
    return _blocks(z * z, sample_rate)


def _lufs(power: float) -> float:
    return -0.691 + 10.0 * math.log10(power) if power > 0 else SILENCE_LUFS


def integrated_loudness(samples: NDArray[np.floating[Any]], sample_rate: int) -> float:
    """Gated integrated loudness in LUFS; ``-inf`` for silence or audio shorter than one block."""
    return gated_loudness(block_powers(samples, sample_rate))


def gated_loudness(z: NDArray[np.float64]) -> float:
    """Integrated loudness from the block powers: absolute gate, then relative gate."""
    if z.size == 0:
        return SILENCE_LUFS
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(z)
    above_abs = z[block_lufs > ABSOLUTE_GATE_LUFS]
    if above_abs.size == 0:
        return SILENCE_LUFS
    relative_gate = _lufs(float(above_abs.mean())) + RELATIVE_GATE_LU
    gated = z[(block_lufs > ABSOLUTE_GATE_LUFS) & (block_lufs > relative_gate)]
    return _lufs(float(gated.mean())) if gated.size else SILENCE_LUFS


def _oversampling(sample_rate: int) -> int:
    return max(1, math.ceil(192000 / sample_rate))


def peak_envelope(samples: NDArray[np.floating[Any]], sample_rate: int) -> NDArray[np.float64]:
    """Per input sample, the largest absolute value of the oversampled signal just after it.

    Oversampled in blocks of about ten seconds (with margins for the interpolation filter), so a
    long clip never holds its whole x4 copy in memory.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    factor = _oversampling(sample_rate)
    if factor == 1 or x.size == 0:
        return np.asarray(np.abs(x), dtype=np.float64)
    block, margin = 1 << 19, 256  # resample_poly's filter reaches 10 * factor input samples
    out = np.empty(x.shape[0], dtype=np.float64)
    for a in range(0, x.shape[0], block):
        b = min(x.shape[0], a + block)
        lo, hi = max(0, a - margin), min(x.shape[0], b + margin)
        up = signal.resample_poly(x[lo:hi], factor, 1)
        part = np.abs(up[(a - lo) * factor : (b - lo) * factor])
        out[a:b] = part.reshape(-1, factor).max(axis=1)
    return out


def true_peak(samples: NDArray[np.floating[Any]], sample_rate: int) -> float:
    """True peak in dBTP (BS.1770-4 Annex 2), ``-inf`` for silence."""
    env = peak_envelope(samples, sample_rate)
    peak = float(max(env.max(initial=0.0), np.abs(np.asarray(samples)).max(initial=0.0)))
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def limiter_gain(
    envelope: NDArray[np.float64], ceiling: float, sample_rate: int, window_seconds: float = 0.01
) -> NDArray[np.float64]:
    """Look-ahead limiter gain keeping ``gain * envelope`` at or below ``ceiling``, smooth over a window.

    The gain is the running minimum of the required gain over a window, then averaged over the
    same window: every averaged value is a mean of minima that each cover the sample, so the smooth
    gain never exceeds what that sample needs, and it ramps in and out over ``window_seconds``.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    need = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    if need.size == 0 or need.min() >= 1.0:
        return np.ones_like(need)
    width = 2 * max(1, round(window_seconds * sample_rate / 2)) + 1
    return np.asarray(uniform_filter1d(minimum_filter1d(need, width, mode="nearest"), width, mode="nearest"))


@dataclass(frozen=True)
class Normalised:
    """A normalised signal and what was measured on the way."""

    samples: NDArray[np.float32]
    input_lufs: float
    output_lufs: float
    gain_db: float
    true_peak_dbtp: float


def normalise(
    samples: NDArray[np.floating[Any]],
    sample_rate: int,
    *,
    target_lufs: float = -16.0,
    ceiling_dbtp: float = -1.5,
    max_gain_db: float = 40.0,
    limiter_window: float = 0.01,
) -> Normalised:
    """Gain ``samples`` to ``target_lufs`` integrated loudness with true peaks at or below ``ceiling_dbtp``.

    Peaks the gain would push over the ceiling are held down by a 10 ms look-ahead limiter; the
    loudness the limiter takes away is won back by a secant search on the gain, so the result lands
    within about 0.1 LU of the target. Gain is capped at ``max_gain_db`` (a whisper over noise is not
    raised without bound). Silence is returned unchanged.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    measured = integrated_loudness(x, sample_rate)
    if not math.isfinite(measured):
        return Normalised(x.astype(np.float32), measured, measured, 0.0, true_peak(x, sample_rate))
    ceiling = 10.0 ** (ceiling_dbtp / 20.0)
    envelope = peak_envelope(x, sample_rate)
    weighted = signal.sosfilt(k_weighting_sos(sample_rate), x)

    # the limiter gain moves slowly against the K-weighting filters, so weighting the input once
    # and scaling it by the gain measures the limited signal closely; the final figure is exact
    def measure(gain_db: float) -> tuple[float, NDArray[np.float64]]:
        g = 10.0 ** (gain_db / 20.0)
        lim = limiter_gain(envelope * g, ceiling * 0.995, sample_rate, limiter_window) * g
        return gated_loudness(_blocks((weighted * lim) ** 2, sample_rate)), lim

    gain_db = min(target_lufs - measured, max_gain_db)
    loud, lim = measure(gain_db)
    prev: tuple[float, float] | None = None
    for _ in range(8):
        if abs(loud - target_lufs) < 0.02 or (gain_db >= max_gain_db and loud < target_lufs):
            break
        slope = 1.0 if prev is None or gain_db == prev[0] else (loud - prev[1]) / (gain_db - prev[0])
        prev = (gain_db, loud)
        gain_db = min(gain_db + (target_lufs - loud) / min(1.0, max(0.1, slope)), max_gain_db)
        loud, lim = measure(gain_db)
    # a hard clip at the ceiling only ever touches the limiter's rounding residue
    y = np.clip(x * lim, -ceiling, ceiling)
    return Normalised(
        y.astype(np.float32),
        measured,
        integrated_loudness(y, sample_rate),
        gain_db,
        true_peak(y, sample_rate),
    )


def frame_powers(samples: NDArray[np.floating[Any]], frame: int) -> NDArray[np.float32]:
    """Mean square of each full ``frame``-sample frame (a partial last frame is dropped)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = x.shape[0] // frame
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    f = x[: n * frame].reshape(n, frame)
    return np.asarray(np.einsum("ij,ij->i", f, f) / frame, dtype=np.float32)


def snr_db(speech_powers: NDArray[np.floating[Any]], noise_powers: NDArray[np.floating[Any]]) -> float | None:
    """SNR estimate from frame powers inside speech and outside it (same frame size).

    Speech frames hold speech plus noise, so the noise power (median of the non-speech frames,
    robust to a door slam) is taken off the mean speech power first. ``None`` when either side has
    no frames; capped at 100 dB for digital silence between words.
    """
    s = np.asarray(speech_powers, dtype=np.float64)
    n = np.asarray(noise_powers, dtype=np.float64)
    if s.size == 0 or n.size == 0:
        return None
    noise = float(np.median(n))
    speech = float(s.mean()) - noise
    if speech <= 0:
        return -100.0 if noise > 0 else None
    return 100.0 if noise <= speech * 1e-10 else min(100.0, 10.0 * math.log10(speech / noise))


__all__ = [
    "Normalised",
    "block_powers",
    "frame_powers",
    "gated_loudness",
    "integrated_loudness",
    "k_weighting_sos",
    "limiter_gain",
    "normalise",
    "peak_envelope",
    "snr_db",
    "true_peak",
]
