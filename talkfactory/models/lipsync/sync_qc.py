"""Audio-video sync, measured: mouth opening from the face mesh against the speech envelope.

Pure maths, no files (``pipeline/qc.py`` reads videos). For sampled frames at known times the
mouth opening (inner-lip gap over face height) is correlated with the speech level (log RMS over
40 ms, floored 40 dB under the peak) read at the same times shifted by a lag; the lag with the
highest correlation, refined to sub-frame precision by a parabola through its neighbours, is the
offset. Audio is read at any time, so lags step in 5 ms whatever the frame rate.

Sign: ``offset_s > 0`` means the audio comes *late* (a sound plays after the mouth movement that
made it); ``ffmpeg -itsoffset 0.2`` on the audio gives +0.2 s.

Each window of consecutive frames is centred on its own mean (mouth and speech), so a template's
own slow mouth drift, or a louder passage, does not count as sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

SYNC_QC_VERSION = "sync-qc-1"
INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))
"""Upper/lower inner-lip points of mediapipe's mesh: left of centre, centre, right of centre."""
FOREHEAD_TOP, CHIN = 10, 152

MIN_CORRELATION = 0.3
"""The lowest bar for the correlation, reached with many sampled frames (see ``correlation_bar``)."""
NULL_SCALE = 6.0
"""Chance correlation: the best of the lag search between a mouth and *unrelated* speech reached
6 / sqrt(frames) in 1 % of trials (75 frames: 0.69, 150: 0.49, 250: 0.38; docs/qc.md)."""
MAX_LAG_S = 0.5
LAG_STEP_S = 0.005
ENVELOPE_WINDOW_S = 0.04
ENVELOPE_RANGE_DB = 40.0
MIN_FRAMES = 50
"""Fewer sampled frames with a face than this (2 s at 25 fps) give no verdict."""


def mouth_opening(points: NDArray[np.floating[Any]]) -> float:
    """Mean inner-lip gap of three lip pairs over the face height (forehead top to chin)."""
    face_h = float(np.hypot(*(points[CHIN] - points[FOREHEAD_TOP])))
    gaps = [float(np.hypot(*(points[b] - points[a]))) for a, b in INNER_LIP_PAIRS]
    return float(np.mean(gaps)) / max(face_h, 1e-6)


def level_db_at(
    samples: NDArray[np.float32], rate: int, times_s: NDArray[np.float64], window_s: float = ENVELOPE_WINDOW_S
) -> NDArray[np.float64]:
    """RMS level (dB) of ``window_s`` windows centred on ``times_s``; outside the audio is silence."""
    x = samples.astype(np.float64)
    energy = np.concatenate(([0.0], np.cumsum(x * x)))
    half = window_s * rate / 2.0
    centre = np.asarray(times_s, dtype=np.float64) * rate
    lo = np.clip(np.round(centre - half).astype(np.int64), 0, x.size)
    hi = np.clip(np.round(centre + half).astype(np.int64), 0, x.size)
    width = max(1.0, 2.0 * half)
    mean_square = (energy[hi] - energy[lo]) / width
    return np.asarray(10.0 * np.log10(mean_square + 1e-12), dtype=np.float64)


def _centred(values: NDArray[np.float64], groups: NDArray[np.int64]) -> NDArray[np.float64]:
    """``values`` (..., n) minus the mean of their group along the last axis."""
    out = values.copy()
    for g in np.unique(groups):
        sel = groups == g
        out[..., sel] -= values[..., sel].mean(axis=-1, keepdims=True)
    return out


@dataclass(frozen=True)
class SyncEstimate:
    """The best lag and what the search saw."""

    offset_s: float
    """Audio lateness at the best lag, sub-frame (positive: audio late)."""
    correlation: float
    """Pearson correlation of mouth opening and speech level at the best lag."""
    correlation_at_zero: float
    frames: int
    lags_s: NDArray[np.float64] = field(repr=False)
    curve: NDArray[np.float64] = field(repr=False)
    """Correlation at each of ``lags_s``."""


def estimate_offset(
    times_s: NDArray[np.float64],
    opening: NDArray[np.float64],
    groups: NDArray[np.int64],
    samples: NDArray[np.float32],
    rate: int,
    *,
    max_lag_s: float = MAX_LAG_S,
    step_s: float = LAG_STEP_S,
) -> SyncEstimate:
    """Search lags in ``[-max_lag_s, max_lag_s]`` for the best mouth/speech correlation.

    ``times_s``: frame times on the audio's timeline; ``opening``: the mouth opening of each frame
    (NaN where no face was found, left out); ``groups``: which window each frame came from.
    Raises ``ValueError`` when fewer than 3 frames have a face.
    """
    keep = np.isfinite(opening)
    t, m, g = times_s[keep], opening[keep], groups[keep]
    if t.size < 3:
        raise ValueError(f"only {t.size} frame(s) with a face: nothing to correlate")
    lags = np.arange(-round(max_lag_s / step_s), round(max_lag_s / step_s) + 1) * step_s
    levels = level_db_at(samples, rate, (t[None, :] + lags[:, None]).ravel()).reshape(lags.size, t.size)
    levels = np.maximum(levels, levels.max() - ENVELOPE_RANGE_DB)
    env = _centred(levels, g)
    mouth = _centred(m[None, :], g)[0]
    num = env @ mouth
    den = np.sqrt((env * env).sum(axis=1) * float(mouth @ mouth))
    curve = np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0)
    best = int(np.argmax(curve))
    offset = float(lags[best])
    if 0 < best < lags.size - 1:
        a, b, c = curve[best - 1], curve[best], curve[best + 1]
        bend = a - 2.0 * b + c
        if bend < 0:
            offset += step_s * float(np.clip(0.5 * (a - c) / bend, -0.5, 0.5))
    zero = int(np.argmin(np.abs(lags)))
    return SyncEstimate(offset, float(curve[best]), float(curve[zero]), int(t.size), lags, curve)


@dataclass(frozen=True)
class SyncVerdict:
    ok: bool
    reason: str | None
    """Why not ok (None when ok)."""
    max_offset_s: float
    min_correlation: float


def correlation_bar(frames: int, floor: float = MIN_CORRELATION) -> float:
    """The correlation a measurement over ``frames`` frames must reach: above chance (99 %), and ``floor``."""
    return max(floor, NULL_SCALE / math.sqrt(max(frames, 1)))


def judge(
    estimate: SyncEstimate | None,
    fps: float,
    *,
    min_correlation: float = MIN_CORRELATION,
    min_frames: int = MIN_FRAMES,
    why_none: str = "no estimate",
) -> SyncVerdict:
    """Ok when the offset is within one frame and the correlation clears ``correlation_bar``.

    ``min_correlation`` is the bar's floor; the verdict reports the bar it applied.
    """
    max_offset = 1.0 / fps if fps > 0 else 0.04
    if estimate is None:
        return SyncVerdict(False, why_none, max_offset, min_correlation)
    bar = correlation_bar(estimate.frames, min_correlation)
    if estimate.frames < min_frames:
        reason = f"only {estimate.frames} sampled frames had a face (need {min_frames})"
    elif abs(estimate.offset_s) > max_offset + 1e-9:
        late = "late" if estimate.offset_s > 0 else "early"
        ms = abs(estimate.offset_s) * 1000
        reason = f"audio {ms:.0f} ms {late}, more than one frame ({max_offset * 1000:.0f} ms)"
    elif not math.isfinite(estimate.correlation) or estimate.correlation < bar:
        reason = f"mouth follows the speech weakly (correlation {estimate.correlation:.2f} < {bar:.2f})"
    else:
        reason = None
    return SyncVerdict(reason is None, reason, max_offset, bar)


def plan_windows(
    num_frames: int, fps: float, keyframes: list[int] | None, *, window_s: float, max_sampled_s: float
) -> list[tuple[int, int]]:
    """``(start_frame, count)`` of the windows to decode, most informative order first.

    The whole video when it is no longer than ``max_sampled_s``; else windows of ``window_s``
    spread evenly over it, each starting on a keyframe (when known) so that decoding one costs no
    frames before it. Ordered middle, ends, then in between, so a caller that stops early on a time
    budget still has windows from across the video.
    """
    if num_frames <= 0:
        return []
    length = max(1, int(round(window_s * fps)))
    if num_frames <= max(length, int(max_sampled_s * fps)):
        return [(0, num_frames)]
    count = max(1, min(int(max_sampled_s // window_s), num_frames // length))
    slots = (
        np.linspace(0, num_frames - length, count + 2)[1:-1] if count > 1 else [num_frames / 2 - length / 2]
    )
    starts: list[int] = []
    for s in slots:
        start = int(s)
        if keyframes:
            before = [k for k in keyframes if k <= start]
            start = before[-1] if before else keyframes[0]
        if start not in starts:
            starts.append(start)
    order = _spread_order(len(starts))
    return [(starts[i], min(length, num_frames - starts[i])) for i in order]


def _spread_order(n: int) -> list[int]:
    """Indices 0..n-1 in an order that covers the range early: middle, ends, then halves between."""
    if n <= 0:
        return []
    order = [n // 2]
    for i in (0, n - 1):
        if i not in order:
            order.append(i)
    step = n
    while len(order) < n:
        step = max(1, step // 2)
        for i in range(0, n, step):
            if i not in order:
                order.append(i)
    return order
