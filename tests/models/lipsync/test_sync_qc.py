"""Sync QC maths on signals whose true offset is known: offset search, verdicts, window planning."""

from __future__ import annotations

import numpy as np
import pytest

from talkfactory.models.lipsync.sync_qc import (
    SyncEstimate,
    correlation_bar,
    estimate_offset,
    judge,
    level_db_at,
    mouth_opening,
    plan_windows,
)
from tests.fixtures.mouth import astronaut_landmarks

RATE, FPS = 16_000, 25.0


def syllable_envelope(seconds: float, seed: int) -> np.ndarray:
    """0..1 per audio sample: irregular raised-cosine syllables (120-300 ms) with 50-400 ms gaps."""
    rng = np.random.default_rng(seed)
    env = np.zeros(int(seconds * RATE))
    i = int(0.3 * RATE)
    while i < env.size:
        n = int(rng.uniform(0.12, 0.3) * RATE)
        seg = np.sin(np.pi * np.arange(n) / n) * rng.uniform(0.5, 1.0)
        env[i : i + n] = seg[: env.size - i]
        i += n + int(rng.uniform(0.05, 0.4) * RATE)
    return env


def talking(seconds: float, delay_s: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame times, mouth opening per frame, audio) where the audio plays ``delay_s`` late."""
    env = syllable_envelope(seconds, seed)
    rng = np.random.default_rng(seed + 100)
    t = np.arange(int(seconds * FPS)) / FPS
    mouth = 0.02 + 0.08 * np.interp(t, np.arange(env.size) / RATE, env) + rng.normal(0, 0.002, t.size)
    carrier = np.sin(2 * np.pi * 150 * np.arange(env.size) / RATE) + 0.3 * rng.standard_normal(env.size)
    audio = (0.3 * env * carrier + 1e-4 * rng.standard_normal(env.size)).astype(np.float32)
    shift = int(round(delay_s * RATE))
    if shift > 0:
        audio = np.concatenate((np.zeros(shift, np.float32), audio[:-shift]))
    elif shift < 0:
        audio = np.concatenate((audio[-shift:], np.zeros(-shift, np.float32)))
    return t, mouth, audio


@pytest.mark.parametrize("delay", [0.0, 0.2, -0.12, 0.013])
def test_finds_the_offset_to_a_few_ms(delay: float) -> None:
    t, mouth, audio = talking(8.0, delay)
    est = estimate_offset(t, mouth, np.zeros(t.size, np.int64), audio, RATE)
    assert est.offset_s == pytest.approx(delay, abs=0.006)
    assert est.correlation > 0.8
    assert est.frames == t.size
    if abs(delay) > 0.1:
        assert est.correlation_at_zero < est.correlation - 0.2


def test_windows_from_different_places_combine() -> None:
    t, mouth, audio = talking(30.0, 0.2, seed=3)
    pick = np.r_[0:100, 400:500, 650:750]
    groups = np.repeat(np.arange(3), 100)
    # A window's own level offset (a louder passage, a mouth resting wider) must not matter.
    mouth = mouth.copy()
    mouth[400:500] += 0.05
    est = estimate_offset(t[pick], mouth[pick], groups, audio, RATE)
    assert est.offset_s == pytest.approx(0.2, abs=0.006)


def test_frames_without_a_face_are_left_out_and_too_few_raise() -> None:
    t, mouth, audio = talking(6.0, 0.0)
    mouth = mouth.copy()
    mouth[::3] = np.nan
    est = estimate_offset(t, mouth, np.zeros(t.size, np.int64), audio, RATE)
    assert est.frames == int(np.isfinite(mouth).sum())
    with pytest.raises(ValueError, match="frame"):
        estimate_offset(t, np.full(t.size, np.nan), np.zeros(t.size, np.int64), audio, RATE)


def test_unrelated_speech_does_not_clear_the_bar() -> None:
    t, mouth, _ = talking(8.0, 0.0, seed=1)
    _, _, other = talking(8.0, 0.0, seed=2)
    est = estimate_offset(t, mouth, np.zeros(t.size, np.int64), other, RATE)
    assert est.correlation < correlation_bar(est.frames)
    assert not judge(est, FPS).ok


def test_judge_names_what_is_wrong() -> None:
    lags = np.zeros(1)

    def est(offset: float, corr: float, frames: int = 200) -> SyncEstimate:
        return SyncEstimate(offset, corr, corr, frames, lags, lags)

    assert judge(est(0.01, 0.9), FPS).ok
    late = judge(est(0.2, 0.9), FPS)
    assert not late.ok and "200 ms late" in (late.reason or "")
    assert "early" in (judge(est(-0.05, 0.9), FPS).reason or "")
    assert judge(est(0.039, 0.9), FPS).ok and not judge(est(0.041, 0.9), FPS).ok
    assert judge(est(0.02, 0.9), 50.0).ok is True and judge(est(0.03, 0.9), 50.0).ok is False
    weak = judge(est(0.0, 0.35, frames=100), FPS)
    assert not weak.ok and "weakly" in (weak.reason or "") and weak.min_correlation == pytest.approx(0.6)
    assert judge(est(0.0, 0.35, frames=1000), FPS).ok  # many frames: the bar is the floor, 0.3
    assert "50" in (judge(est(0.0, 0.9, frames=20), FPS).reason or "")
    assert judge(None, FPS, why_none="no face").reason == "no face"


def test_level_matches_a_direct_rms() -> None:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    got = level_db_at(x, RATE, np.array([0.5, 0.25]))
    seg = x[int(0.48 * RATE) : int(0.52 * RATE)].astype(np.float64)
    assert got[0] == pytest.approx(10 * np.log10(np.mean(seg**2)), abs=0.01)
    assert level_db_at(x, RATE, np.array([5.0]))[0] < -100  # past the end: silence


def test_mouth_opening_of_the_portrait() -> None:
    opening = mouth_opening(astronaut_landmarks())
    assert 0.0 < opening < 0.1  # lips slightly parted in a smile


def test_window_plan() -> None:
    assert plan_windows(250, FPS, None, window_s=4.0, max_sampled_s=24.0) == [(0, 250)]
    keys = list(range(0, 1500, 250))
    windows = plan_windows(1500, FPS, keys, window_s=4.0, max_sampled_s=24.0)
    assert all(start in keys for start, _ in windows)
    assert all(count == 100 for _, count in windows)
    assert len(windows) == len({s for s, _ in windows}) >= 3
    assert windows[0][0] in (500, 750)  # middle first
    assert {windows[1][0], windows[2][0]} == {min(s for s, _ in windows), max(s for s, _ in windows)}
    free = plan_windows(1500, FPS, None, window_s=4.0, max_sampled_s=12.0)
    assert len(free) == 3 and all(0 <= s and s + c <= 1500 for s, c in free)
    assert plan_windows(0, FPS, None, window_s=4.0, max_sampled_s=24.0) == []
