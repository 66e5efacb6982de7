"""The liveliness planner: blink timing, head motion bounds and coupling, brow raises, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from talkfactory.models.lipsync.liveliness import (
    LEVEL_CONFIGS,
    LivelinessConfig,
    Pose,
    blink_closure,
    config_for,
    plan,
    raise_profile,
    resolve_liveliness,
    seed_from_key,
)

FPS = 100.0  # fine steps, so blink durations are measured to 10 ms


def speech_pattern(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Phrases of 1.5-4 s at about -20 dBFS (syllable wobble), separated by pauses of 0.4-1.5 s."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    speaking = np.zeros(n, dtype=bool)
    i = int(0.5 * FPS)
    while i < n:
        length = int(rng.uniform(1.5, 4.0) * FPS)
        speaking[i : i + length] = True
        i += length + int(rng.uniform(0.4, 1.5) * FPS)
    t = np.arange(n) / FPS
    levels = np.where(speaking, -20.0 + 2.0 * np.sin(2 * np.pi * 4.0 * t), -90.0)
    return levels, speaking


def blink_runs(poses: list[Pose]) -> list[tuple[int, int]]:
    """[start, stop) frames of each blink (lids moving at all)."""
    closed = np.array([p.blink > 0 for p in poses])
    edges = np.flatnonzero(np.diff(np.concatenate(([0], closed.astype(int), [0]))))
    return list(zip(edges[0::2], edges[1::2], strict=True))


@pytest.fixture(scope="module")
def ten_minutes() -> tuple[np.ndarray, np.ndarray, list[Pose]]:
    levels, speaking = speech_pattern(600.0)
    return levels, speaking, plan(levels, speaking, FPS, LEVEL_CONFIGS["subtle"], seed=11)


def test_auto_is_subtle_for_stills_and_off_for_templates() -> None:
    assert resolve_liveliness("auto", is_still=True) == "subtle"
    assert resolve_liveliness("auto", is_still=False) == "off"
    assert resolve_liveliness("lively", is_still=False) == "lively"
    assert resolve_liveliness("off", is_still=True) == "off"
    assert config_for("off") is None and config_for("subtle") == LEVEL_CONFIGS["subtle"]
    with pytest.raises(ValueError, match="liveliness must be one of"):
        resolve_liveliness("wild", is_still=True)


def test_seed_from_key_is_stable_and_spreads() -> None:
    assert (
        seed_from_key("abc") == seed_from_key("abc") == 0xBA7816BF8F01CFEA >> 1
    )  # sha256("abc") starts ba7816bf8f01cfea
    assert seed_from_key("abc") != seed_from_key("abd")
    assert 0 <= seed_from_key("x" * 100) < 2**63


def test_same_inputs_and_seed_give_the_same_poses() -> None:
    levels, speaking = speech_pattern(30.0)
    cfg = LEVEL_CONFIGS["lively"]
    a = plan(levels, speaking, FPS, cfg, seed=5)
    assert a == plan(levels, speaking, FPS, cfg, seed=5)
    assert a != plan(levels, speaking, FPS, cfg, seed=6)


def test_blinks_come_every_few_seconds_never_periodic(ten_minutes) -> None:
    _, _, poses = ten_minutes
    runs = blink_runs(poses)
    per_minute = len(runs) / 10.0
    assert 10 <= per_minute <= 25, per_minute
    starts = np.array([a for a, _ in runs]) / FPS
    gaps = np.diff(starts)
    cfg = LEVEL_CONFIGS["subtle"]
    assert gaps.min() >= cfg.blink_min_gap_s - 1e-9
    assert gaps.std() > 0.5, "blink intervals must vary, not tick like a clock"
    durations = np.array([b - a for a, b in runs]) / FPS
    assert durations.min() >= 0.14 and durations.max() <= 0.26, (durations.min(), durations.max())
    assert max(p.blink for p in poses) > 0.95  # lids do shut


def test_blinks_cluster_just_after_speech_stops(ten_minutes) -> None:
    _, speaking, poses = ten_minutes
    pause_starts = np.flatnonzero(np.diff(speaking.astype(int)) == -1) + 1
    after_pause = np.zeros(len(speaking), dtype=bool)
    for p in pause_starts:
        after_pause[p : p + int(0.5 * FPS)] = True
    starts = np.array([a for a, _ in blink_runs(poses)])
    share_of_blinks = after_pause[starts].mean()
    share_of_time = after_pause.mean()
    assert share_of_blinks > 2.0 * share_of_time, (share_of_blinks, share_of_time)


def test_head_stays_in_bounds_and_moves_more_while_speaking(ten_minutes) -> None:
    _, speaking, poses = ten_minutes
    cfg = LEVEL_CONFIGS["subtle"]
    roll = np.array([p.roll_deg for p in poses])
    x = np.array([p.shift_x for p in poses])
    y = np.array([p.shift_y for p in poses])
    assert np.abs(roll).max() <= cfg.head_roll_deg + 1e-9
    assert np.abs(x).max() <= cfg.head_shift + 1e-12 and np.abs(y).max() <= cfg.head_shift + 1e-12
    assert np.abs(roll).max() > 0.5 * cfg.head_roll_deg, "the head should use a good part of its range"
    # Smooth: at 100 fps the roll changes by far less than a tenth of a degree per step.
    assert np.abs(np.diff(roll)).max() < 0.05
    speech_motion = np.abs(np.diff(roll))[speaking[1:]].mean()
    quiet_motion = np.abs(np.diff(roll))[~speaking[1:]].mean()
    assert speech_motion > quiet_motion


def test_phrase_starts_bring_a_small_nod() -> None:
    # Speech from 1 s to 4 s and from 6 s to 9 s: two phrase starts.
    n = int(10 * FPS)
    speaking = np.zeros(n, dtype=bool)
    speaking[100:400] = speaking[600:900] = True
    levels = np.where(speaking, -20.0, -90.0)
    cfg = LivelinessConfig(head_idle=0.0)  # no wander while silent: the nod stands out
    poses = plan(levels, speaking, FPS, cfg, seed=3)
    y = np.array([p.shift_y for p in poses])
    for start in (100, 600):
        window = y[start : start + int(cfg.nod_s * FPS)]
        before = y[start - 30 : start]
        assert window.max() - np.abs(before).max() > 0.1 * cfg.head_shift


def test_brows_rise_on_emphasis_only() -> None:
    n = int(20 * FPS)
    speaking = np.zeros(n, dtype=bool)
    speaking[50:1900] = True
    flat = np.where(speaking, -20.0, -90.0)
    cfg = LivelinessConfig(brow_chance=1.0)
    assert max(p.brow for p in plan(flat, speaking, FPS, cfg, seed=1)) == 0.0
    stressed = flat.copy()
    stressed[1000:1030] = -12.0  # 8 dB louder for 300 ms
    poses = plan(stressed, speaking, FPS, cfg, seed=1)
    brow = np.array([p.brow for p in poses])
    assert brow[:1000].max() == 0.0
    assert brow[1000:1100].max() == pytest.approx(cfg.brow_raise, rel=0.05)
    assert brow[1100:].max() < cfg.brow_raise and brow[-1] == 0.0


def test_profiles() -> None:
    assert blink_closure(0.0) == blink_closure(1.0) == 0.0
    assert blink_closure(0.4) == pytest.approx(1.0)
    up = [blink_closure(u) for u in np.linspace(0, 0.4, 9)]
    down = [blink_closure(u) for u in np.linspace(0.4, 1.0, 9)]
    assert up == sorted(up) and down == sorted(down, reverse=True)
    assert raise_profile(0.3) == 1.0 and raise_profile(0.0) == 0.0 and raise_profile(0.85) == 0.0
