"""Liveliness for still portraits: when to blink, how the head drifts and nods, when the brows rise.

Pure planning, no pixels: ``LivelinessPlanner.step`` is called once per output frame with that
frame's speech level and whether speech is on, and returns a ``Pose`` (eyelid closure, brow
raise, head roll and shift). ``eyes.py`` and ``head.py`` turn poses into pixels, ``face_motion.py`` per frame.

Everything random comes from one ``numpy`` generator seeded by the caller (the render key, see
``seed_from_key``), and the planner reads nothing but its inputs, so the same speech, level and
seed give the same poses frame for frame: a re-render is identical.

- Blinks: intervals drawn from a log-normal around 4 s (most between 3 and 5 s, never periodic),
  each blink 150-250 ms (closing faster than opening), and often a blink just after speech pauses,
  where people blink most.
- Head: slow wander from a few incommensurate sines per axis (seeded frequencies and phases, so
  it never repeats), louder while speaking, plus a small nod at each phrase start; roll stays
  within ``head_roll_deg`` and the shift within ``head_shift`` of the face height.
- Brows: a short raise on emphasis (speech clearly louder than the speaker's running level).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

LivelinessLevel = Literal["off", "subtle", "lively"]
LIVELINESS_LEVELS: tuple[str, ...] = get_args(LivelinessLevel)
LIVELINESS_CHOICES: tuple[str, ...] = ("auto", *LIVELINESS_LEVELS)
"""What ``--liveliness`` accepts: ``auto`` is subtle for portraits and off for template videos."""

LIVELINESS_VERSION = "live-1.0.0"
"""Bump when the planning or the eye/brow/head warps change: renders with liveliness on go stale."""


def resolve_liveliness(requested: str, *, is_still: bool) -> LivelinessLevel:
    """The level a render uses: ``auto`` is ``subtle`` for a still and ``off`` for a template video.

    Template videos already move, so they get nothing added unless a level is asked for by name.
    Raises ``ValueError`` for anything not in ``LIVELINESS_CHOICES``.
    """
    if requested == "auto":
        return "subtle" if is_still else "off"
    if requested == "off":
        return "off"
    if requested == "subtle":
        return "subtle"
    if requested == "lively":
        return "lively"
    raise ValueError(f"liveliness must be one of {', '.join(LIVELINESS_CHOICES)}, got {requested!r}")


def seed_from_key(key: str) -> int:
    """A 63-bit seed from a render key (or any text): stable across processes and Python versions."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class LivelinessConfig:
    """How much a portrait moves. Angles in degrees, distances in fractions of the face height."""

    blink_median_s: float = 4.0
    """Median time between blinks."""
    blink_spread: float = 0.22
    """Log-normal sigma of the interval: with 4 s, half fall within 3.5-4.6 s and 90 % within 2.8-5.7 s."""
    blink_interval_bounds_s: tuple[float, float] = (1.5, 9.0)
    blink_duration_s: tuple[float, float] = (0.15, 0.25)
    pause_blink_chance: float = 0.5
    """Chance of a blink 100-350 ms into a speech pause (one that ends at least ``pause_min_s`` of speech)."""
    blink_min_gap_s: float = 1.2
    """No two blinks closer than this, whatever brings them."""
    head_roll_deg: float = 1.5
    """Largest head roll either way."""
    head_shift: float = 0.015
    """Largest head shift either way, per axis."""
    head_idle: float = 0.5
    """Share of the head's wander left while nobody speaks."""
    nod: float = 0.35
    """Share of ``head_shift`` (downwards) a phrase-start nod takes."""
    nod_s: float = 0.55
    brow_raise: float = 0.018
    """Brow lift at the top of a raise."""
    brow_chance: float = 0.6
    """Chance an emphasis gets a raise (not every loud syllable does)."""
    brow_min_gap_s: float = 5.0
    emphasis_db: float = 5.0
    """Speech this far above the speaker's running level is emphasis."""
    pause_min_s: float = 0.35
    """Silence this long ends a phrase; speech after it starts a new one."""


LEVEL_CONFIGS: dict[str, LivelinessConfig] = {
    "subtle": LivelinessConfig(),
    "lively": LivelinessConfig(
        blink_median_s=3.4,
        pause_blink_chance=0.7,
        head_roll_deg=2.0,
        head_shift=0.025,
        head_idle=0.6,
        nod=0.45,
        brow_raise=0.028,
        brow_chance=0.85,
        brow_min_gap_s=3.0,
        emphasis_db=4.0,
    ),
}


def config_for(level: LivelinessLevel) -> LivelinessConfig | None:
    """The tuning for a level; ``None`` for ``off``."""
    return LEVEL_CONFIGS.get(level)


@dataclass(frozen=True)
class Pose:
    """What one frame adds to the portrait."""

    blink: float = 0.0
    """Eyelid closure, 0 open (the picture's own eyes) .. 1 shut."""
    brow: float = 0.0
    """Brow lift, fraction of the face height (0: as in the picture)."""
    roll_deg: float = 0.0
    """Head rotation about the neck, degrees, positive clockwise on screen."""
    shift_x: float = 0.0
    """Head shift, fractions of the face height (image right, image down)."""
    shift_y: float = 0.0

    @property
    def moves_eyes(self) -> bool:
        return self.blink > 0.01 or self.brow > 1e-4

    @property
    def moves_head(self) -> bool:
        return abs(self.roll_deg) > 1e-3 or abs(self.shift_x) > 1e-5 or abs(self.shift_y) > 1e-5


REST = Pose()


def blink_closure(u: float) -> float:
    """Lid closure at fraction ``u`` (0..1) of a blink: shut at 40 %, closing faster than opening."""
    if u <= 0.0 or u >= 1.0:
        return 0.0
    x = u / 0.4 if u < 0.4 else (1.0 - u) / 0.6
    return x * x * (3.0 - 2.0 * x)


def raise_profile(t_s: float) -> float:
    """Brow raise 0..1 at ``t_s`` into a raise: up in 0.15 s, held 0.3 s, down over 0.4 s."""
    rise, hold, fall = 0.15, 0.3, 0.4
    if t_s <= 0.0 or t_s >= rise + hold + fall:
        return 0.0
    x = t_s / rise if t_s < rise else 1.0 if t_s < rise + hold else (rise + hold + fall - t_s) / fall
    return x * x * (3.0 - 2.0 * x)


class Wander:
    """Smooth, never-repeating motion in [-1, 1]: a few sines with seeded, incommensurate frequencies."""

    def __init__(self, rng: np.random.Generator, *, low_hz: float = 0.06, high_hz: float = 0.4, n: int = 3):
        self.freqs = np.sort(rng.uniform(low_hz, high_hz, n))
        self.phases = rng.uniform(0.0, 2.0 * math.pi, n)
        # Slower components move further, like a head settling rather than trembling.
        weights = 1.0 / np.sqrt(self.freqs)
        self.weights = weights / weights.sum()

    def at(self, t_s: float) -> float:
        return float(np.dot(self.weights, np.sin(2.0 * math.pi * self.freqs * t_s + self.phases)))


class LivelinessPlanner:
    """Streaming poses, one ``step`` per output frame, in order (see the module docstring)."""

    def __init__(self, fps: float, config: LivelinessConfig, seed: int) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.config = config
        self._rng = np.random.default_rng(seed)
        self._roll = Wander(self._rng)
        self._x = Wander(self._rng)
        self._y = Wander(self._rng)
        self._frame = 0
        self._energy = 0.0
        self._speech_level: float | None = None
        self._speaking = False
        self._speech_since = 0.0
        self._silence_since = -math.inf
        self._last_blink = -math.inf
        self._blink_start = math.inf
        self._blink_len = 0.2
        self._next_blink = self._interval()
        self._nod_start = -math.inf
        self._nod_gain = 0.0
        self._nod_roll = 0.0
        self._brow_start = -math.inf
        self._last_emphasis = -math.inf

    def _interval(self) -> float:
        cfg = self.config
        lo, hi = cfg.blink_interval_bounds_s
        return float(
            np.clip(cfg.blink_median_s * math.exp(cfg.blink_spread * self._rng.standard_normal()), lo, hi)
        )

    def _start_blink(self, t: float) -> None:
        self._blink_start = t
        self._blink_len = float(self._rng.uniform(*self.config.blink_duration_s))
        self._last_blink = t
        self._next_blink = t + self._interval()

    def step(self, level_dbfs: float, speaking: bool) -> Pose:
        """The pose of the next frame, given its speech level and whether speech is on."""
        cfg = self.config
        dt = 1.0 / self.fps
        t = self._frame * dt
        self._frame += 1

        # Phrases: a pause is silence of at least pause_min_s; speech after one starts a phrase.
        if speaking and not self._speaking:
            if t - self._silence_since >= cfg.pause_min_s:
                self._nod_start = t
                self._nod_gain = float(self._rng.uniform(0.6, 1.0))
                self._nod_roll = float(self._rng.uniform(-0.35, 0.35))
            self._speech_since = t
        elif not speaking and self._speaking:
            self._silence_since = t
            # A blink soon after the speaker stops, when the last phrase was a real one.
            if t - self._speech_since >= cfg.pause_min_s and self._rng.random() < cfg.pause_blink_chance:
                soon = t + float(self._rng.uniform(0.1, 0.35))
                if soon < self._next_blink and soon - self._last_blink >= cfg.blink_min_gap_s:
                    self._next_blink = soon
        self._speaking = speaking

        # Speech energy: follows speech on within ~150 ms, lets go over ~0.8 s.
        target = 1.0 if speaking else 0.0
        k = 1.0 - math.exp(-dt / (0.15 if target > self._energy else 0.8))
        self._energy += (target - self._energy) * k

        # Emphasis: clearly above the running level of this speaker's speech.
        if speaking and level_dbfs > -100.0:
            if self._speech_level is None:
                self._speech_level = level_dbfs
            elif (
                level_dbfs > self._speech_level + cfg.emphasis_db
                and t - self._last_emphasis >= cfg.brow_min_gap_s
                and t - self._speech_since >= 0.1
            ):
                self._last_emphasis = t
                if self._rng.random() < cfg.brow_chance:
                    self._brow_start = t
            self._speech_level += (level_dbfs - self._speech_level) * (1.0 - math.exp(-dt / 2.0))

        if t >= self._next_blink and t - self._last_blink >= cfg.blink_min_gap_s:
            self._start_blink(t)
        elif t >= self._next_blink:
            self._next_blink = self._last_blink + cfg.blink_min_gap_s
        blink = blink_closure((t - self._blink_start) / self._blink_len) if t >= self._blink_start else 0.0

        gain = cfg.head_idle + (1.0 - cfg.head_idle) * self._energy
        nod_u = (t - self._nod_start) / cfg.nod_s
        nod = self._nod_gain * math.sin(math.pi * nod_u) if 0.0 <= nod_u <= 1.0 else 0.0
        # Wander and nod share the range: together they never pass the configured bounds.
        wander_share = 1.0 - cfg.nod
        roll = cfg.head_roll_deg * (wander_share * gain * self._roll.at(t) + cfg.nod * nod * self._nod_roll)
        shift_x = cfg.head_shift * wander_share * gain * self._x.at(t)
        shift_y = cfg.head_shift * (wander_share * gain * self._y.at(t) + cfg.nod * nod)
        brow = cfg.brow_raise * raise_profile(t - self._brow_start)
        return Pose(blink=blink, brow=brow, roll_deg=roll, shift_x=shift_x, shift_y=shift_y)


def plan(
    levels_dbfs: NDArray[np.floating[Any]],
    speaking: NDArray[np.bool_],
    fps: float,
    config: LivelinessConfig,
    seed: int,
) -> list[Pose]:
    """``LivelinessPlanner.step`` over whole arrays (tests, inspection)."""
    planner = LivelinessPlanner(fps, config, seed)
    return [planner.step(float(lv), bool(sp)) for lv, sp in zip(levels_dbfs, speaking, strict=True)]
